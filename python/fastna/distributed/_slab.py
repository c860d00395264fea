"""The local compute of context parallelism: a slab of queries at a global offset against a slab
of keys / values at another global offset, every window defined by the *global* problem
(docs/SEMANTICS.md sections 3-5 in global coordinates: dilation groups, window starts, stride runs,
causal ends and border clamping all use the global index and the global length).

The contract a kernel implements (reference below; `register` adds another implementation):

    forward(q, k, v, params, q_offset, kv_offset, partial=False) -> (out, lse)
        q [B, *q_shape, H, D], k [B, *kv_shape, H_kv, D], v [B, *kv_shape, H_kv, Dv];
        params: NAParams whose `length` is the global spatial shape; q_offset / kv_offset: per
        axis, the global coordinate of the slab's first row (q_offset[a] + q_shape[a] <=
        length[a], the same for kv). The query at slab position p is global query q_offset + p
        and attends its global neighborhood. partial=False: all of it must lie inside the kv
        slab (ValueError otherwise: this is not a padded or cropped problem). partial=True: it
        attends the part of it inside the kv slab (lse -inf and out 0 where that is empty), so
        that a neighborhood split over several kv slabs is the `merge` of the parts.
        out [B, *q_shape, H, Dv] in the input dtype; lse [B, *q_shape, H] fp32 (fp64 for fp64
        inputs), natural log.
    backward(dout, q, k, v, out, lse, params, q_offset, kv_offset) -> (dq, dk, dv)
        like q, k, v: the gradients through the neighbors inside the kv slab, computed from the
        given out and lse -- those of the whole neighborhood (merged) when the forward was split
        -- as P = exp(scale q.k - lse), dS = P (dP - rowsum(dO out)); summing the parts' dq
        gives the full dq. Rows of the kv slab no query of the slab sees get 0.

Rows of the kv slab that no query reaches are never read as neighbors, so a caller may leave
them unset (zeros): halo mode does, where dilation leaves gaps between the rows it receives.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from .._args import NAParams
from .. import reference as _reference
from ..index_math import window
from ._plan import key_bounds

__all__ = ["slab_attention", "merge", "register", "implementation", "slab_backends",
           "reference_forward", "reference_backward", "check_slabs", "Implementation",
           "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = _reference.DEFAULT_MAX_BYTES   # the same per-tile budget as the oracle

Forward = Callable[..., Tuple[torch.Tensor, torch.Tensor]]
Backward = Callable[..., Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def check_slabs(q, k, v, params: NAParams, q_offset, kv_offset) -> None:
    rank = params.rank
    if not params.length or len(params.length) != rank:
        raise ValueError(f"params.length must hold the global spatial shape ({rank} axes), got "
                         f"{params.length!r}")
    for name, off in (("q_offset", q_offset), ("kv_offset", kv_offset)):
        if len(off) != rank:
            raise ValueError(f"{name} must give one offset per spatial axis ({rank}), got {off!r}")
    for name, t, off in (("query", q, q_offset), ("key", k, kv_offset), ("value", v, kv_offset)):
        if t.dim() != rank + 3:
            raise ValueError(f"{name} slab must have {rank + 3} dims, got {tuple(t.shape)}")
        for a in range(rank):
            if off[a] < 0 or off[a] + t.shape[1 + a] > params.length[a]:
                raise ValueError(f"{name} slab rows [{off[a]}, {off[a] + t.shape[1 + a]}) on axis "
                                 f"{a} leave the global length {params.length[a]}")
    if k.shape[1:rank + 1] != v.shape[1:rank + 1]:
        raise ValueError(f"key and value slabs differ in shape: {tuple(k.shape)} vs "
                         f"{tuple(v.shape)}")


def _axis_windows(params: NAParams, a: int, q0: int, n: int):
    """Group-local (start, end) and absolute key bounds (lo, hi) of queries [q0, q0 + n)."""
    L, K, s, d, c = (params.length[a], params.kernel[a], params.stride[a], params.dilation[a],
                     params.causal[a])
    wins = [window(L, K, s, d, c, i) for i in range(q0, q0 + n)]
    bounds = [key_bounds(L, K, s, d, c, i) for i in range(q0, q0 + n)]
    return wins, [b[0] for b in bounds], [b[1] for b in bounds]


def _tile_extent(lo, hi, t):
    return max(max(hi[x:x + t]) - min(lo[x:x + t]) for x in range(0, len(lo), t))


def _plan_tiles(nq, lo, hi, params, batch, heads, elem, max_bytes):
    """Query tile per axis so one tile's scores stay under max_bytes: halve the axis whose tile is
    largest relative to its window extent (it wastes the least key box per query removed)."""
    rank = len(nq)
    tile = list(nq)

    def cost(tile):
        keys = math.prod(_tile_extent(lo[a], hi[a], tile[a]) for a in range(rank))
        return 3 * batch * heads * math.prod(tile) * keys * elem

    while cost(tile) > max_bytes and any(t > 1 for t in tile):
        a = max((a for a in range(rank) if tile[a] > 1),
                key=lambda a: tile[a] / (params.kernel[a] * params.dilation[a]))
        tile[a] = (tile[a] + 1) // 2
    return tile


def _mask(masks, rank, nq, nk):
    """The per-axis masks combined: a key is a neighbor iff it is one on every axis."""
    mask = None
    for a, m in enumerate(masks):
        shape = [1] * (2 * rank)
        shape[a], shape[rank + a] = m.shape
        m = m.reshape(shape)
        mask = m if mask is None else mask & m
    return mask.reshape(nq, nk)


def _operands(q, k, v, compute_dtype):
    B, H, D = q.shape[0], q.shape[-2], q.shape[-1]
    Hkv, Dv = k.shape[-2], v.shape[-1]
    return (q.to(compute_dtype).reshape(B, -1, Hkv, H // Hkv, D),
            k.to(compute_dtype).reshape(B, -1, Hkv, D), v.to(compute_dtype).reshape(B, -1, Hkv, Dv))


def _probabilities(qt, kt, params, masks, lse):
    """exp(scale q.k - lse) on the neighbors, 0 elsewhere; lse [B, Hkv, G, Q] (rows without any
    neighbor, lse = -inf, get 0)."""
    scores = torch.einsum("bqhgd,bkhd->bhgqk", qt, kt) * params.scale
    mask = _mask(masks, params.rank, qt.shape[1], kt.shape[1])
    scores = scores.masked_fill(~mask, float("-inf"))
    if lse is None:
        lse = torch.logsumexp(scores, dim=-1)
    finite = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    return torch.exp(scores - finite[..., None]), lse


def _tile_forward(q, k, v, params, masks, compute_dtype):
    """out [B, Q, H, Dv] and lse [B, Q, H] of the query box against the key box."""
    B, H, Dv = q.shape[0], q.shape[-2], v.shape[-1]
    qt, kt, vt = _operands(q, k, v, compute_dtype)
    p, lse = _probabilities(qt, kt, params, masks, None)
    out = torch.einsum("bhgqk,bkhd->bqhgd", p, vt)
    return out.reshape(B, -1, H, Dv), lse.permute(0, 3, 1, 2).reshape(B, -1, H)


def _tile_backward(q, k, v, out, lse, dout, params, masks, compute_dtype):
    """(dq, dk, dv) of the query box's share in the key box: P from the given lse, and
    dS = P (dP - rowsum(dO O)) with the given (full-neighborhood) out."""
    Hkv = k.shape[-2]
    qt, kt, vt = _operands(q, k, v, compute_dtype)
    B, Q, _, G, _ = qt.shape
    ot = out.to(compute_dtype).reshape(B, Q, Hkv, G, -1)
    dot = dout.to(compute_dtype).reshape(B, Q, Hkv, G, -1)
    lse_t = lse.to(compute_dtype).reshape(B, Q, Hkv, G).permute(0, 2, 3, 1)
    p, _ = _probabilities(qt, kt, params, masks, lse_t)
    dp = torch.einsum("bqhgd,bkhd->bhgqk", dot, vt)
    delta = (dot * ot).sum(-1).permute(0, 2, 3, 1)
    ds = p * (dp - delta[..., None]) * params.scale
    dq = torch.einsum("bhgqk,bkhd->bqhgd", ds, kt)
    dk = torch.einsum("bhgqk,bqhgd->bkhd", ds, qt)
    dv = torch.einsum("bhgqk,bqhgd->bkhd", p, dot)
    return dq.reshape(B, Q, Hkv * G, -1), dk, dv


def _boxes(q, k, params: NAParams, q_offset, kv_offset, partial: bool, max_bytes):
    """Query tiles with their key boxes: (query slices, key slices, per-axis masks, tile shape,
    key box shape). The key box is the tile's windows' span cut to the kv slab; with `partial`
    tiles whose windows miss the kv slab are skipped, without it a window leaving the kv slab
    raises."""
    rank = params.rank
    nq = [q.shape[1 + a] for a in range(rank)]
    nk = [k.shape[1 + a] for a in range(rank)]
    wins, los, his = zip(*(_axis_windows(params, a, q_offset[a], nq[a]) for a in range(rank)))
    for a in range(rank):
        lo, hi = min(los[a]), max(his[a])
        if not partial and (lo < kv_offset[a] or hi > kv_offset[a] + nk[a]):
            raise ValueError(
                f"the kv slab holds rows [{kv_offset[a]}, {kv_offset[a] + nk[a]}) of axis {a}, but "
                f"queries [{q_offset[a]}, {q_offset[a] + nq[a]}) need key rows [{lo}, {hi}) "
                f"(global length {params.length[a]})")
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    elem = torch.finfo(compute).bits // 8
    max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    tile = _plan_tiles(nq, los, his, params, q.shape[0], q.shape[-2], elem, max_bytes)
    device = q.device
    starts = [torch.tensor([w[0] for w in wins[a]], device=device) for a in range(rank)]
    ends = [torch.tensor([w[1] for w in wins[a]], device=device) for a in range(rank)]

    def axis_tiles(a):
        out = []
        for x0 in range(0, nq[a], tile[a]):
            x1 = min(x0 + tile[a], nq[a])
            # the tile's key span, in kv-slab coordinates, cut to the slab
            y0 = max(min(los[a][x0:x1]) - kv_offset[a], 0)
            y1 = min(max(his[a][x0:x1]) - kv_offset[a], nk[a])
            if y0 < y1:
                out.append((x0, x1, y0, y1))
        return out

    for box in itertools.product(*(axis_tiles(a) for a in range(rank))):
        masks = []
        for a, (x0, x1, y0, y1) in enumerate(box):
            d = params.dilation[a]
            i = torch.arange(q_offset[a] + x0, q_offset[a] + x1, device=device)[:, None]
            j = torch.arange(kv_offset[a] + y0, kv_offset[a] + y1, device=device)[None, :]
            masks.append((j % d == i % d) & (starts[a][x0:x1, None] <= j // d)
                         & (j // d < ends[a][x0:x1, None]))
        yield ((slice(None),) + tuple(slice(x0, x1) for x0, x1, _, _ in box),
               (slice(None),) + tuple(slice(y0, y1) for _, _, y0, y1 in box), masks,
               [x1 - x0 for x0, x1, _, _ in box], [y1 - y0 for _, _, y0, y1 in box])


def reference_forward(q, k, v, params: NAParams, q_offset: Sequence[int],
                      kv_offset: Sequence[int], partial: bool = False,
                      max_bytes: Optional[int] = None):
    """The contract's forward in plain PyTorch (any device; fp32 math, fp64 for fp64 inputs),
    tiled so that no tile's scores exceed max_bytes."""
    check_slabs(q, k, v, params, q_offset, kv_offset)
    rank = params.rank
    nq = [q.shape[1 + a] for a in range(rank)]
    B, H, Dv = q.shape[0], q.shape[-2], v.shape[-1]
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = q.new_zeros((B, *nq, H, Dv))
    lse = q.new_full((B, *nq, H), float("-inf"), dtype=compute)
    if out.numel() == 0 or k.numel() == 0:
        return out, lse
    with torch.no_grad():
        for qs, ks, masks, shape, _ in _boxes(q, k, params, q_offset, kv_offset, partial,
                                              max_bytes):
            o, l = _tile_forward(q[qs], k[ks], v[ks], params, masks, compute)
            out[qs] = o.reshape(B, *shape, H, Dv).to(out.dtype)
            lse[qs] = l.reshape(B, *shape, H)
    return out, lse


def reference_backward(dout, q, k, v, out, lse, params: NAParams, q_offset, kv_offset,
                       max_bytes: Optional[int] = None):
    """The contract's backward: the query slab's gradients through the neighbors inside the kv
    slab, from the given out and lse (those of the whole neighborhood when the forward was
    split over several kv slabs and merged)."""
    check_slabs(q, k, v, params, q_offset, kv_offset)
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    dq = torch.zeros_like(q, dtype=compute)
    dk = torch.zeros_like(k, dtype=compute)
    dv = torch.zeros_like(v, dtype=compute)
    if dout.numel() and k.numel():
        B = q.shape[0]
        with torch.no_grad():
            for qs, ks, masks, shape, kshape in _boxes(q, k, params, q_offset, kv_offset, True,
                                                       max_bytes):
                gq, gk, gv = _tile_backward(q[qs], k[ks], v[ks], out[qs], lse[qs], dout[qs],
                                            params, masks, compute)
                dq[qs] += gq.reshape(B, *shape, *q.shape[-2:])
                dk[ks] += gk.reshape(B, *kshape, *k.shape[-2:])
                dv[ks] += gv.reshape(B, *kshape, *v.shape[-2:])
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def merge(parts):
    """(out, lse) of a query slab from its (out, lse) against several kv slabs that split its
    neighborhood: the softmax over the union, through the logsumexps."""
    if len(parts) == 1:
        return parts[0]
    lse = torch.logsumexp(torch.stack([l for _, l in parts]), dim=0)
    finite = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    out = sum(o.to(lse.dtype) * torch.exp(l - finite)[..., None] for o, l in parts)
    return out.to(parts[0][0].dtype), lse


@dataclass(frozen=True)
class Implementation:
    """One implementation of the contract. `available(device)`: it runs tensors of that device;
    `default(device)`: backend=None takes it there. `whole` (optional): `whole(q, k, v, params,
    q_offset, kv_offset, keep_graph) -> part` for a query slab whose neighborhoods all lie in
    its kv slab, with part.out, part.lse and part.grads(dout) -> (dq, dk, dv) (from the graph
    kept when keep_graph); an implementation that has it is fast on whole neighborhoods, so halo
    mode lets the border queries wait for their halo instead of merging partial parts.
    `describe(q, k, v, params, q_offset, kv_offset)` (optional): what `whole` would run, as
    text (fastna.distributed.local_compute_path)."""
    name: str
    available: Callable[[torch.device], bool]
    forward: Forward
    backward: Backward
    default: Callable[[torch.device], bool]
    whole: Optional[Callable] = None
    describe: Optional[Callable[..., str]] = None


_IMPLEMENTATIONS: Dict[str, Implementation] = {
    "reference": Implementation("reference", lambda device: True, reference_forward,
                                reference_backward, lambda device: True),
}
_ORDER = ["reference"]


def register(name: str, available: Callable[[torch.device], bool], forward: Forward,
             backward: Backward, first: bool = True, *,
             default: Optional[Callable[[torch.device], bool]] = None,
             whole: Optional[Callable] = None,
             describe: Optional[Callable[..., str]] = None) -> None:
    """Add an implementation of the contract (e.g. an offset-slab CUDA kernel): `available(device)`
    says whether it runs tensors of that device; backend=None takes the first one in order whose
    `default(device)` holds (default: where available). `whole` / `describe`: see
    Implementation."""
    _IMPLEMENTATIONS[name] = Implementation(name, available, forward, backward,
                                            default or available, whole, describe)
    if name in _ORDER:
        _ORDER.remove(name)
    _ORDER.insert(0 if first else len(_ORDER), name)


def implementation(backend: Optional[str], device: torch.device) -> Implementation:
    """The slab implementation for `backend` (None: the first one that is the default for
    `device`)."""
    if backend is None:
        for name in _ORDER:
            impl = _IMPLEMENTATIONS[name]
            if impl.available(device) and impl.default(device):
                return impl
    if backend not in _IMPLEMENTATIONS or not _IMPLEMENTATIONS[backend].available(device):
        raise NotImplementedError(
            f"backend={backend!r} has no offset-slab implementation for mode='halo' on "
            f"{device.type} tensors; halo mode runs on: "
            f"{', '.join(slab_backends(device))} "
            f"(mode='ulysses' runs any backend of fastna.neighborhood_attention)")
    return _IMPLEMENTATIONS[backend]


class _SlabAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, params, q_offset, kv_offset, partial, fwd, bwd):
        out, lse = fwd(q, k, v, params, q_offset, kv_offset, partial)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (params, q_offset, kv_offset, bwd)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        params, q_offset, kv_offset, bwd = ctx.args
        dq, dk, dv = bwd(dout.contiguous(), q, k, v, out, lse, params, q_offset, kv_offset)
        return dq, dk, dv, None, None, None, None, None, None


def slab_attention(q, k, v, params: NAParams, q_offset: Sequence[int], kv_offset: Sequence[int],
                   partial: bool = False, backend: Optional[str] = None):
    """The contract as one differentiable call: (out, lse) of the query slab at q_offset against
    the kv slab at kv_offset (see the module docstring); lse is not differentiable."""
    impl = implementation(backend, q.device)
    return _SlabAttention.apply(q, k, v, params, tuple(q_offset), tuple(kv_offset),
                                bool(partial), impl.forward, impl.backward)


def slab_backends(device=None) -> list:
    """Names of the slab implementations (those that run tensors of `device` when given, the
    one backend=None takes there first), in registration order otherwise."""
    if device is None:
        return list(_ORDER)
    device = torch.device(device)
    names = [n for n in _ORDER if _IMPLEMENTATIONS[n].available(device)]
    return sorted(names, key=lambda n: not _IMPLEMENTATIONS[n].default(device))
