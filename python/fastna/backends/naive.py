"""Backend "naive": the naive CUDA kernels (ops naive_fwd / naive_bwd of the kernel table).

The kernels take element strides, so slices of a fused qkv projection run without a copy.

The logsumexp returned by this backend is not differentiable: the naive backward has no
input for a gradient w.r.t. lse. Backpropagating through it raises a RuntimeError instead of
silently dropping that gradient; use backend="reference" if you need it.  (Through the custom
ops of fastna._ops an all-zero lse gradient, which torch.compile passes for a returned lse
nobody differentiates, counts as none.)
"""
from __future__ import annotations

import math

import torch

from .. import _ext
from .. import _table
from ._base import Reason, alloc, empty_result
from .._protocol import Choice
from ._layout import launch_params, on_device, strided_arg as _arg, stream

name = "naive"
via_custom_op = True
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FWD, BWD = _table.NAIVE_FWD, _table.NAIVE_BWD
LSE_GRAD_ERROR = ("the logsumexp returned by backend='naive' is not differentiable; "
                  "use backend='reference' to backpropagate through lse")


def available() -> bool:
    """A naive_fwd instance that runs on the current CUDA device."""
    return _table.runnable_here(FWD)


def _params(params, q, k, v, num_extra, op=FWD):
    # The naive instances run any head dim: their tile is the one the table names.
    found = _table.rows(op, params.rank, q.dtype, q.device)
    return launch_params(params, q, k, v, found[0]["tile"] if found else "default", num_extra)


def check(query, key, value, params, additional_keys=None, additional_values=None):
    why = _table.unavailable(name, FWD)
    if why is not None:
        return Reason(why)
    if query.dtype not in DTYPES:
        return Reason(f"it supports float32, float16 and bfloat16, got {query.dtype} "
                      f"(backend='reference' takes float64)", TypeError)
    if query.device.type != "cuda":
        return Reason(f"it needs CUDA tensors, got query on {query.device}", ValueError)
    tensors = (query, key, value, additional_keys, additional_values)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                 for t in tensors)
    E = 0 if additional_keys is None else additional_keys.shape[1]
    for op in (FWD, BWD) if needs_grad else (FWD,):
        if not _table.rows(op, params.rank, query.dtype, query.device):
            return Reason(f"no {op} kernel was compiled for rank {params.rank}, {query.dtype} "
                          f"on compute capability {divmod(_ext.device_cc(query.device), 10)}")
        if query.shape[0] == 0:   # an empty batch launches nothing
            continue
        why = _ext.can_implement(op, _params(params, query, key, value, E, op))
        if why:
            return Reason(why)
    return None


def choose(query, key, value, params, notes=None):
    return Choice(name)


def forward_kernels(q, k, v, ek, ev, pd):
    """The naive forward kernel (no autograd): (out, lse, attn), freshly allocated; attn is
    the fp32 [B, N, H, prod(kernel) + num_extra] probability buffer the backward takes."""
    C = _ext.load()
    B, H, Dv = q.shape[0], q.shape[-2], v.shape[-1]
    spatial = tuple(q.shape[1:-2])
    W = math.prod(pd["kernel"]) + pd["num_extra"]
    attn = alloc((B, math.prod(spatial), H, W), torch.float32, q.device)
    out = alloc((B, *spatial, H, Dv), q.dtype, q.device)
    lse = alloc((B, *spatial, H), torch.float32, q.device)
    with on_device(q.device):
        C.naive_forward(pd, _arg(q), _arg(k), _arg(v), _arg(ek), _arg(ev), _arg(attn),
                        _arg(out), _arg(lse), stream(q.device))
    return out, lse, attn


def backward_kernels(q, k, v, ek, ev, attn, dout, pd):
    """The naive backward kernel (no autograd): (dq, dk, dv, dek, dev); attn=None makes it
    recompute the logits from q and k into its workspace."""
    C = _ext.load()
    dq, dk, dv = (alloc(t.shape, t.dtype, t.device) for t in (q, k, v))
    dek = None if ek is None else alloc(ek.shape, ek.dtype, ek.device)
    dev = None if ev is None else alloc(ev.shape, ev.dtype, ev.device)
    dattn = None if attn is None else alloc(attn.shape, torch.float32, q.device)
    with on_device(q.device):
        C.naive_backward(pd, _arg(q), _arg(k), _arg(v), _arg(ek), _arg(ev), _arg(attn),
                         _arg(dout), _arg(dq), _arg(dk), _arg(dv), _arg(dek), _arg(dev),
                         _arg(dattn), stream(q.device))
    return dq, dk, dv, dek, dev


def backward_recompute(q, k, v, params, dout):
    """(dq, dk, dv) of a call without extras from the naive backward, recomputing the
    logits (the fused family's fallback backward)."""
    return backward_kernels(q, k, v, None, None, None, dout,
                            _params(params, q, k, v, 0, BWD))[:3]


class _NaiveNA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, ek, ev, pd):
        out, lse, attn = forward_kernels(q, k, v, ek, ev, pd)
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
            return (None,) * 6
        return (*backward_kernels(q, k, v, ek, ev, attn, dout, ctx.pd), None)


def _extras(ek, ev):
    return (None, None) if ek is None or ek.shape[1] == 0 else (ek, ev)


def forward(query, key, value, params, additional_keys=None, additional_values=None,
            return_lse=False, choice=None):
    ek, ev = _extras(additional_keys, additional_values)
    if query.shape[0] == 0:
        return empty_result(query, value, return_lse)
    pd = _params(params, query, key, value, 0 if ek is None else ek.shape[1])
    out, lse = _NaiveNA.apply(query, key, value, ek, ev, pd)
    return (out, lse) if return_lse else out


def op_forward(q, k, v, ek, ev, params):
    if q.shape[0] == 0:
        return (q.new_empty((*q.shape[:-1], v.shape[-1])),
                q.new_empty(q.shape[:-1], dtype=torch.float32),
                q.new_empty(aux_shape(q, ek, params.kernel), dtype=torch.float32))
    return forward_kernels(q, k, v, ek, ev, _params(params, q, k, v,
                                                    0 if ek is None else ek.shape[1]))


def aux_shape(q, extra_k, kernel):
    n = math.prod(q.shape[1:len(kernel) + 1])
    e = 0 if extra_k is None else extra_k.shape[1]
    return (q.shape[0], n, q.shape[-2], math.prod(kernel) + e)


def op_backward(q, k, v, ek, ev, out, lse, aux, params, dout, dlse):
    if dlse is not None:
        raise RuntimeError(LSE_GRAD_ERROR)
    pd = _params(params, q, k, v, 0 if ek is None else ek.shape[1], BWD)
    return backward_kernels(q, k, v, ek, ev, aux, dout, pd)
