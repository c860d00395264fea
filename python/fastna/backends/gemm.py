"""The GEMM-based backend of the full attention: backend="gemm" of fastna.na1d/na2d/na3d.

The paper's unfused pipeline on the GEMM kernels of include/fastna/gemm (through the unfused
ops' backend, backends/gemm_unfused.py):

    logits = PN(q, k)                        [B, *S, H, prod(K)] in the input dtype, -inf in
                                             causal slots past the window end
    attn   = softmax(scale * logits)         fp32 math, stored back in the input dtype
    out    = NN(attn, v)                     [B, *S, H, Dv]
    lse    = logsumexp(scale * logits)       fp32

so the attention weights make a round trip through global memory: this backend exists to
measure the GEMM-based approach against the naive and fused ones through one API, not to be
the default (it ranks behind "fused" in backend=None's order). Additional KV tokens are
attended with torch and merged through the lse (backends/_merge.py), as the fused backend does.

Autograd: backward_kernels() below on the saved out and lse (dq = NN, dk / dv = IN, dP = PN; it
takes a gradient into lse too, so the extras merge differentiates through it), from eager calls
(_GemmNA) and from the custom op fastna::na_forward that torch.compile(fullgraph=True) traces.

Declined (check() says why; backend=None falls through to the next backend): stride > 1 on any
axis (the GEMM kernels implement the legacy stride-1 ops), dtypes / head dims without a gemm_na
instance, CPU tensors, float32 unless torch.backends.cuda.matmul.allow_tf32 (the kernels
compute float32 in TF32).
"""
from __future__ import annotations

import torch

from . import _base, _merge
from .. import _table
from ._base import Reason
from .._protocol import Choice
from . import gemm_unfused as _gu

name = "gemm"
via_custom_op = True


def available() -> bool:
    return _gu.available()


def check(query, key, value, params, additional_keys=None, additional_values=None):
    why = _table.unavailable(name, _table.GEMM)
    if why is not None:
        return Reason(why)
    if any(s != 1 for s in params.stride) and not any(
            r["supports"].get("stride") for r in _gu.gemm_instances()):
        return Reason(f"it supports stride 1 only (the GEMM kernels are the legacy stride-1 "
                      f"ops), got stride={params.stride}")
    if query.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        # The kernels compute float32 on TF32 tensor cores; follow torch's own switch for that.
        return Reason("float32 runs on TF32 tensor cores in the GEMM kernels; set "
                      "torch.backends.cuda.matmul.allow_tf32 = True to allow it", TypeError)
    kernel, dil, causal = params.kernel, params.dilation, params.causal
    why = _gu.check("qk", (query, key, None, None), kernel, dil, causal)
    if why is None:
        # The attention weights enter av in the value's dtype.
        # query stands in for the weights: av's check reads their device and head count.
        why = _gu.check("av", (query, value, None), kernel, dil, causal)
    if why is not None:
        exc = TypeError if "dtype" in why else (ValueError if "CUDA" in why else
                                                NotImplementedError)
        return Reason(why, exc)
    return None


def _softmax(logits, scale):
    """(probabilities fp32, lse fp32) of scale * logits over the window slots.

    lse = max(s) - log(max(p)) is logsumexp(s) exactly (p_max = exp(max(s) - lse)), and costs
    two reductions over the weights where torch.logsumexp makes several passes; it is
    differentiable (its derivative is p, like logsumexp's).
    """
    s = logits.float().mul_(scale)
    p = torch.softmax(s, dim=-1)
    lse = s.amax(dim=-1) - torch.log(p.amax(dim=-1))
    return p, lse


def _kernels_forward(query, key, value, params, need_lse=True):
    """(out, lse) on the kernels, no autograd nodes; lse is None unless need_lse.

    With the softmax kernel (gemm_softmax) the weights are normalized in place in one pass
    (read the logits, write P in the input dtype, lse in fp32 only when asked for): three
    kernels in all, PN -> softmax -> NN."""
    kernel, dil, causal = tuple(params.kernel), tuple(params.dilation), tuple(params.causal)
    query = query.contiguous()
    logits = _gu.pn(query, key.contiguous(), None, kernel, dil, causal)
    if _gu.has_softmax_kernels():
        lse = _gu.softmax_(logits, params.scale, query.shape[-1], kernel, dil, causal, need_lse)
        p = logits
    else:
        p, lse = _softmax(logits, params.scale)
        p = p.to(value.dtype)
    out = _gu.gather(False, p, value.contiguous(), query.shape[-2], kernel, dil, causal)
    return out, lse


class _GemmNA(torch.autograd.Function):
    """Eager autograd node: the forward above, backward_kernels() on the saved out and lse."""

    @staticmethod
    def forward(ctx, q, k, v, params):
        out, lse = _kernels_forward(q, k, v, params)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.params = params
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        if dout is None and dlse is None:
            return None, None, None, None
        dq, dk, dv = backward_kernels(q, k, v, out, lse, ctx.params, dout, dlse)
        return dq, dk, dv, None


def choose(query, key, value, params, notes=None):
    return Choice(name)


def forward(query, key, value, params, additional_keys=None, additional_values=None,
            return_lse=False, choice=None):
    ek, ev = additional_keys, additional_values
    extras = ek is not None and ek.shape[1] > 0
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (query, key, value, ek, ev))
    if needs_grad:   # backward_kernels takes gradients into out and lse (the extras merge's)
        out, lse = _GemmNA.apply(query, key, value, params)
    else:
        out, lse = _kernels_forward(query, key, value, params, need_lse=return_lse or extras)
    if extras:
        out, lse = _merge.attend_and_merge(query, out, lse, ek, ev, params.scale)
    return (out, lse) if return_lse else out


def op_forward(q, k, v, ek, ev, params):
    return _base.op_forward_via_forward(forward, q, k, v, ek, ev, params)


aux_shape = _base.no_aux


def op_backward(q, k, v, ek, ev, out, lse, aux, params, dout, dlse):
    """The custom op's backward: backward_kernels() without additional KV tokens, else None
    (the op differentiates forward())."""
    if ek is not None:
        return None
    return backward_kernels(q, k, v, out, lse, params, dout, dlse)


def backward_kernels(q, k, v, out, lse, params, dout, dlse):
    """The backward without additional KV tokens, on the saved out and lse:

        P  = exp(scale * PN(q, k) - lse)            (recomputed, fp32)
        dP = PN(dout, v)                            (0 in causal slots)
        dS = scale * P * (dP - rowsum(dout * out) + dlse)
        dq = NN(dS, k), dk = IN(dS, q), dv = IN(P, dout)

    two GEMMs fewer than differentiating forward() again (no forward NN, no softmax replay).
    Returns (dq, dk, dv).
    """
    kernel, dil, causal = tuple(params.kernel), tuple(params.dilation), tuple(params.causal)
    dtype = q.dtype
    q, k, v, out = (t.contiguous() for t in (q, k, v, out))
    H, Hkv = q.shape[-2], k.shape[-2]
    logits = _gu.pn(q, k, None, kernel, dil, causal)
    if dout is not None and _gu.has_softmax_kernels():
        # One in-place pass for P and dS (gemm_softmax_backward) instead of ~10 elementwise ones.
        g = dout.to(dtype).contiguous()
        dp = _gu.pn(g, v, None, kernel, dil, causal)
        delta = (g.float() * out.float()).sum(-1)
        if dlse is not None:
            delta = delta - dlse.float()
        _gu.softmax_backward_(logits, dp, lse.float().contiguous(), delta.contiguous(),
                               params.scale, q.shape[-1], kernel, dil, causal)
        p, ds = logits, dp
        dq = _gu.gather(False, ds, k, H, kernel, dil, causal)
        dk = _gu.gather(True, ds, q, Hkv, kernel, dil, causal)
        dv = _gu.gather(True, p, g, Hkv, kernel, dil, causal)
        return dq, dk, dv
    p = torch.exp(logits.float().mul_(params.scale).sub_(lse[..., None]))
    if dout is not None:
        g = dout.to(dtype).contiguous()
        dp = _gu.pn(g, v, None, kernel, dil, causal).float()
        if any(causal):
            dp = dp.masked_fill_(torch.isneginf(dp), 0)
        delta = (g.float() * out.float()).sum(-1, keepdim=True)
        ds = dp.sub_(delta)
    else:
        ds = torch.zeros_like(p)
    if dlse is not None:
        ds = ds.add_(dlse.float()[..., None])
    ds = ds.mul_(p).mul_(params.scale).to(dtype)
    dq = _gu.gather(False, ds, k, H, kernel, dil, causal)
    dk = _gu.gather(True, ds, q, Hkv, kernel, dil, causal)
    if dout is not None:
        dv = _gu.gather(True, p.to(dtype), g, Hkv, kernel, dil, causal)
    else:
        dv = torch.zeros_like(v)
    return dq, dk, dv
