"""The naive CUDA backend: fastna._C.naive_forward / naive_backward (docs/INTERNALS.md).

The kernels take element strides, so slices of a fused qkv projection run without a copy.

The logsumexp returned by this backend is not differentiable: the naive backward has no
input for a gradient w.r.t. lse. Backpropagating through it raises a RuntimeError instead of
silently dropping that gradient; use backend="reference" if you need it.  (fastna's API runs
this backend through the custom ops of fastna._ops, where an all-zero lse gradient, which
torch.compile passes for a returned lse nobody differentiates, counts as none.)
"""
from __future__ import annotations

import math

import torch

from .. import _ext
from ._base import Reason, alloc as _alloc

name = "naive"
DTYPES = (torch.float32, torch.float16, torch.bfloat16)



FWD, BWD = "naive_fwd", "naive_bwd"  # kernel names in build_info()["instances"]


def available() -> bool:
    """Compiled with naive kernels and a CUDA device to run them on."""
    return _ext.has_kernel(FWD) and torch.cuda.is_available()


def check(query, key, value, params, additional_keys=None, additional_values=None):
    if query.dtype not in DTYPES:
        return Reason(f"it supports float32, float16 and bfloat16, got {query.dtype} "
                      f"(backend='reference' takes float64)", TypeError)
    if query.device.type != "cuda":
        return Reason(f"it needs CUDA tensors, got query on {query.device}", ValueError)
    if not _ext.has_kernel(FWD):
        why = ("compiled module missing: " + str(_ext.load_error())) if _ext.load() is None \
            else "the compiled module has no naive CUDA kernels (host-only build?)"
        return Reason(f"backend 'naive' is not available in this build ({why})")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad
        for t in (query, key, value, additional_keys, additional_values))
    for kernel in (FWD, BWD) if needs_grad else (FWD,):
        if not _ext.has_instance(kernel, params.rank, query.dtype, query.device):
            return Reason(f"no {kernel} kernel was compiled for rank {params.rank}, "
                          f"{query.dtype} on compute capability "
                          f"{torch.cuda.get_device_capability(query.device)}")
    # The naive kernels loop over head dims, so they have no limit unless a build declares one.
    max_dim = (_ext.build_info() or {}).get("max_head_dim")
    D, Dv = query.shape[-1], value.shape[-1]
    if max_dim is not None and max(D, Dv) > int(max_dim):
        return Reason(f"head dims D={D}, Dv={Dv} exceed the naive kernels' maximum {max_dim}")
    return None


def _targ(t):
    return None if t is None else (t.data_ptr(), list(t.stride()))


def _params_dict(params, q, k, v, num_extra):
    return {
        "dtype": _ext.DTYPE_NAMES[q.dtype], "batch": q.shape[0], "heads": q.shape[-2],
        "heads_kv": k.shape[-2], "dim": q.shape[-1], "dim_v": v.shape[-1],
        "num_extra": num_extra, "scale": float(params.scale),
        "length": list(q.shape[1:params.rank + 1]), "kernel": list(params.kernel),
        "stride": list(params.stride), "dilation": list(params.dilation),
        "causal": [bool(c) for c in params.causal],
    }


def _stream(device):
    return torch.cuda.current_stream(device).cuda_stream


def _forward_impl(q, k, v, ek, ev, pd):
    """Run the naive forward kernel (no autograd): (out, lse, attn), all freshly allocated.

    attn is the fp32 [B, N, H, W] probability buffer the backward takes (W = prod(kernel) +
    num_extra); out is contiguous [B, *spatial, H, Dv] in q's dtype, lse fp32 [B, *spatial, H].
    """
    C = _ext.load()
    B, H, Dv = q.shape[0], q.shape[-2], v.shape[-1]
    spatial = tuple(q.shape[1:-2])
    N = math.prod(spatial)
    W = math.prod(pd["kernel"]) + pd["num_extra"]
    attn = _alloc((B, N, H, W), torch.float32, q.device)
    out = _alloc((B, *spatial, H, Dv), q.dtype, q.device)
    lse = _alloc((B, *spatial, H), torch.float32, q.device)
    with torch.cuda.device(q.device):
        C.naive_forward(pd, _targ(q), _targ(k), _targ(v), _targ(ek), _targ(ev),
                        _targ(attn), _targ(out), _targ(lse), _stream(q.device))
    return out, lse, attn


def _backward_impl(q, k, v, ek, ev, attn, dout, pd):
    """Run the naive backward kernel (no autograd): (dq, dk, dv, dek, dev), contiguous;
    dek/dev are None without extras."""
    C = _ext.load()
    dq = _alloc(q.shape, q.dtype, q.device)
    dk = _alloc(k.shape, k.dtype, k.device)
    dv = _alloc(v.shape, v.dtype, v.device)
    dek = None if ek is None else _alloc(ek.shape, ek.dtype, ek.device)
    dev = None if ev is None else _alloc(ev.shape, ev.dtype, ev.device)
    dattn = _alloc(attn.shape, torch.float32, q.device)
    with torch.cuda.device(q.device):
        C.naive_backward(pd, _targ(q), _targ(k), _targ(v), _targ(ek), _targ(ev), _targ(attn),
                         _targ(dout), _targ(dq), _targ(dk), _targ(dv), _targ(dek), _targ(dev),
                         _targ(dattn), _stream(q.device))
    return dq, dk, dv, dek, dev


LSE_GRAD_ERROR = ("the logsumexp returned by backend='naive' is not differentiable; "
                  "use backend='reference' to backpropagate through lse")


class _NaiveNA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, ek, ev, pd):
        out, lse, attn = _forward_impl(q, k, v, ek, ev, pd)
        ctx.save_for_backward(q, k, v, ek, ev, attn)
        ctx.pd = pd
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        if dlse is not None:
            raise RuntimeError(LSE_GRAD_ERROR)
        q, k, v, ek, ev, attn = ctx.saved_tensors
        if dout is None:
            return None, None, None, None, None, None
        dq, dk, dv, dek, dev = _backward_impl(q, k, v, ek, ev, attn, dout, ctx.pd)
        return dq, dk, dv, dek, dev, None


def forward(query, key, value, params, additional_keys=None, additional_values=None,
            return_lse=False):
    ek, ev = additional_keys, additional_values
    if ek is not None and ek.shape[1] == 0:
        ek = ev = None
    E = 0 if ek is None else ek.shape[1]
    if query.shape[0] == 0:
        out = query.new_empty((*query.shape[:-1], value.shape[-1]))
        lse = query.new_empty(query.shape[:-1], dtype=torch.float32)
        return (out, lse) if return_lse else out
    pd = _params_dict(params, query, key, value, E)
    out, lse = _NaiveNA.apply(query, key, value, ek, ev, pd)
    return (out, lse) if return_lse else out
