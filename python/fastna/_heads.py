"""Per-head-group window parameters: fastna.neighborhood_attention(..., head_groups=[...]).

head_groups splits the query heads into consecutive groups (head counts, summing to H); each of
kernel_size, stride, dilation and is_causal is then either shared by every group or a *list*
with one entry per group.  Each group means exactly what an ordinary call means on its heads
alone (fastna._args.normalize_head_groups validates it; docs/GUIDE.md has the conventions).

Execution: consecutive groups with equal parameters are merged first, so a call whose groups
all agree is one ordinary call.  Otherwise run_groups() runs every group in one launch through
the grouped kernels (fastna.backends.fused_grouped) for backend="fused" where they are built,
and else makes one ordinary call (fastna._dispatch.attention: backend choice, plan cache,
custom op under torch.compile, autograd) per group and concatenates the outputs (and
logsumexps) along the heads.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from . import _args, _dispatch, _policy
from .backends import fused_grouped
from ._args import HeadGroup

__all__ = ["attention", "explain", "groups_of", "merge", "run_groups"]

_MAX_PLANS = 1024
_plans: dict = {}


class _Uncacheable(Exception):
    pass


def _frozen(x):
    """A hashable stand-in of an argument that keeps what validation tells apart: list vs
    tuple (per group vs per axis), bool vs int, int vs float."""
    t = type(x)
    if x is None or t is int or t is bool or t is float:
        return (t.__name__, x)
    if t is list or t is tuple:
        return (t.__name__,) + tuple(_frozen(e) for e in x)
    raise _Uncacheable


def _tensor(t):
    return None if t is None else (t.shape, t.dtype, t.device)


def merge(groups: Tuple[HeadGroup, ...], group_size: int) -> Tuple[HeadGroup, ...]:
    """Consecutive groups with equal parameters as one group, where their heads together still
    map to whole key/value heads (group_size: query heads per key/value head)."""
    merged: List[HeadGroup] = []
    for g in groups:
        last = merged[-1] if merged else None
        if last is not None and last.params == g.params:
            kv = _args.kv_head_range(last.heads[0], g.heads[1], group_size)
            if kv is not None:
                merged[-1] = HeadGroup((last.groups[0], g.groups[1]),
                                       (last.heads[0], g.heads[1]), kv, g.params)
                continue
        merged.append(g)
    return tuple(merged)


def groups_of(rank, query, key, value, head_groups, kernel_size, stride, dilation, is_causal,
              scale, ek, ev) -> Tuple[HeadGroup, ...]:
    """The validated, merged groups of a call; cached per call signature in eager mode (the
    validation depends only on shapes, dtypes, devices and the arguments)."""
    cache_key = None
    if not torch.compiler.is_compiling():
        try:
            cache_key = (rank, _tensor(query), _tensor(key), _tensor(value), _tensor(ek),
                         _tensor(ev), _frozen(head_groups), _frozen(kernel_size),
                         _frozen(stride), _frozen(dilation), _frozen(is_causal), _frozen(scale))
            hit = _plans.get(cache_key)
        except (_Uncacheable, AttributeError, TypeError):
            cache_key = hit = None
        if hit is not None:
            return hit
    groups = _args.normalize_head_groups(query, key, value, head_groups, kernel_size, stride,
                                         dilation, is_causal, scale, ek, ev, rank=rank)
    groups = merge(groups, query.shape[-2] // key.shape[-2])
    if cache_key is not None:
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()
        _plans[cache_key] = groups
    return groups


def _views(g: HeadGroup, query, key, value, ek, ev):
    heads, kv = slice(*g.heads), slice(*g.kv_heads)
    return (query[..., heads, :], key[..., kv, :], value[..., kv, :],
            None if ek is None else ek[:, :, kv], None if ev is None else ev[:, :, kv])


def _grouped_kernels_take(groups, query, key, value, ek, backend) -> bool:
    """Whether the one-launch grouped kernels run this call: asked for by name (backend="fused"),
    no extra tokens, eager (under torch.compile the per-group custom ops trace), and built for
    its rank, dtype and head dim."""
    if backend != "fused" or ek is not None or torch.compiler.is_compiling():
        return False
    grads = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    return fused_grouped.unavailable(query, key, value, groups[0].params.rank, grads) is None


def run_groups(rank, groups: Tuple[HeadGroup, ...], query, key, value, ek, ev,
               return_lse: bool, backend: Optional[str]):
    """backend="fused" where the grouped kernels take the call: one launch for every group
    (fastna.backends.fused_grouped).  Otherwise one ordinary call per group on the heads'
    views, the outputs concatenated along the heads; each call picks its backend and tile as an
    ordinary call would (backend=None may run groups on different kernels)."""
    if _grouped_kernels_take(groups, query, key, value, ek, backend):
        out, lse = fused_grouped.attention(query, key, value,
                                           fused_grouped.HeadGroupLayout(groups, query))
        return (out, lse) if return_lse else out
    outs, lses = [], []
    for g in groups:
        p = g.params
        q, k, v, gek, gev = _views(g, query, key, value, ek, ev)
        args = (rank, q, k, v, p.kernel, p.stride, p.dilation, p.causal, p.scale, gek, gev,
                return_lse, backend)
        if torch.compiler.is_compiling():
            res = _dispatch.attention(*args)
        else:
            try:
                res = _dispatch.attention(*args)
            except (ValueError, TypeError, NotImplementedError) as e:
                raise type(e)(f"{g.label()}: {e}") from None
        out, lse = res if return_lse else (res, None)
        outs.append(out)
        lses.append(lse)
    out = torch.cat(outs, dim=-2)
    return (out, torch.cat(lses, dim=-1)) if return_lse else out


def _autocast(query, key, value, ek, ev):
    """The tensors as the backends will get them under autocast (fastna._dispatch casts the
    same way), so that validation sees one dtype."""
    dtype = _dispatch._autocast_dtype(query)
    if dtype is None:
        return query, key, value, ek, ev
    return tuple(_dispatch._cast(t, dtype) for t in (query, key, value, ek, ev))


def attention(rank, query, key, value, head_groups, kernel_size, stride, dilation, is_causal,
              scale, ek, ev, return_lse, backend):
    """A call of the public API with head_groups (rank None: from query's dims)."""
    _args.check_return_lse(return_lse)
    _args.check_backend_arg(backend)
    query, key, value, ek, ev = _autocast(query, key, value, ek, ev)
    groups = groups_of(rank, query, key, value, head_groups, kernel_size, stride, dilation,
                       is_causal, scale, ek, ev)
    if len(groups) == 1:
        p = groups[0].params
        return _dispatch.attention(rank, query, key, value, p.kernel, p.stride, p.dilation,
                                   p.causal, p.scale, ek, ev, return_lse, backend)
    return run_groups(rank, groups, query, key, value, ek, ev, return_lse, backend)


def explain(query, key, value, head_groups, kernel_size, stride, dilation, is_causal, scale,
            ek, ev, return_lse, backend) -> str:
    """fastna.explain for a call with head_groups: what runs each (merged) group."""
    _args.check_return_lse(return_lse)
    _args.check_backend_arg(backend)
    groups = groups_of(None, query, key, value, head_groups, kernel_size, stride, dilation,
                       is_causal, scale, ek, ev)
    if len(groups) > 1 and _grouped_kernels_take(groups, query, key, value, ek, backend):
        return fused_grouped.explain(query, key, value, fused_grouped.HeadGroupLayout(groups, query))
    lines = [f"{len(groups)} call(s), one per group of heads with equal parameters (the "
             f"per-head-group path: fastna._heads.run_groups)"]
    for g in groups:
        q, k, v, gek, gev = _views(g, query, key, value, ek, ev)
        text = _policy.explain(q, k, v, g.params, gek, gev, backend)
        lines.append(f"{g.label()}: kernel_size={g.params.kernel}, stride={g.params.stride}, "
                     f"dilation={g.params.dilation}, is_causal={g.params.causal}")
        lines += ["  " + line for line in text.splitlines()]
    return "\n".join(lines)
