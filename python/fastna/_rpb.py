"""Relative positional bias on the public calls: fastna.neighborhood_attention(..., rpb=...).

rpb [H, 2K_1 - 1, ..., 2K_r - 1] (NATTEN's layout): the bias of query i and key j is
rpb[h, j'_1 - i'_1 + K_1 - 1, ...] (group-local coordinates, docs/SEMANTICS.md), added to the
scaled logits before the softmax -- defined for odd kernel sizes, non-causal axes and stride 1.

It runs the unfused path (fastna.ops_unfused: qk with the bias -> softmax -> av; the gemm
kernels on CUDA, the reference elsewhere), with autograd into rpb: the fused kernels have no
bias yet, so backend="gemm" / "reference" (or None) are the ones that take it.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _args, _heads

UNFUSED_BACKENDS = ("gemm", "reference")


def _ops(rank: int):
    from . import ops_unfused
    return getattr(ops_unfused, f"na{rank}d_qk"), getattr(ops_unfused, f"na{rank}d_av")


def _validated(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale, ek, ev,
               backend, rpb, head_groups):
    if head_groups is not None:
        raise NotImplementedError(
            f"rpb with head_groups={head_groups!r} is not supported: give each head group its own "
            f"call with its own bias table")
    if backend is not None and backend not in UNFUSED_BACKENDS:
        raise NotImplementedError(
            f"backend={backend!r} cannot run a call with rpb: the relative positional bias runs "
            f"the unfused path (backend=None, 'gemm' or 'reference'); the fused kernels have no "
            f"bias yet")
    params = _args.normalize(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                             ek, ev, rank=rank)
    if any(s != 1 for s in params.stride):
        raise ValueError(f"rpb (relative positional bias) needs stride 1 on every axis, got "
                         f"stride={params.stride}")
    _args.check_rpb(rpb, query, params.kernel, params.causal)
    return params


def attention(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale, ek, ev,
              return_lse: bool, backend: Optional[str], rpb, head_groups=None):
    """A public call with rpb (rank None: from query's dims)."""
    _args.check_return_lse(return_lse)
    _args.check_backend_arg(backend)
    query, key, value, ek, ev = _heads._autocast(query, key, value, ek, ev)
    p = _validated(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale, ek,
                   ev, backend, rpb, head_groups)
    qk, av = _ops(p.rank)
    logits = qk(query * p.scale, key, p.kernel, p.dilation, is_causal=p.causal, rpb=rpb,
                additional_keys=ek, backend=backend)
    # softmax and logsumexp in fp32 at least (float64 stays float64)
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
    weights = wide.softmax(dim=-1).to(value.dtype)
    out = av(weights, value, p.kernel, p.dilation, is_causal=p.causal, additional_values=ev,
             backend=backend)
    if not return_lse:
        return out
    return out, torch.logsumexp(wide, dim=-1)


def explain(query, key, value, kernel_size, stride, dilation, is_causal, scale, ek, ev, backend,
            rpb, head_groups=None) -> str:
    """fastna.explain for a call with rpb."""
    _args.check_backend_arg(backend)
    _validated(None, query, key, value, kernel_size, stride, dilation, is_causal, scale, ek, ev,
               backend, rpb, head_groups)
    which = "the best available" if backend is None else repr(backend)
    return (f"relative positional bias: the unfused path (fastna.ops_unfused qk with the bias, "
            f"softmax, av) on {which} unfused backend; the fused kernels have no bias yet")
