"""Several problems in one launch: the grouped kernels (kernel table ops fused_fwd_grouped /
fused_bwd_grouped; families sm80, small and sm90; opt-in at build time, FASTNA_EXTRA_KERNELS) --
one forward launch and three backward launches whatever the number of problems.

The forward runs the small-window tile's grouped kernel where every problem fits it (as the dense
policy picks that tile per call), else the sm90a one on compute capability 9.0, else the sm80
default tile; the backward runs the sm90a kernels on compute capability 9.0 (their launch falls
back to the sm80 ones for problems they do not take: dilation), else the sm80 ones.

A layout says how one call splits into problems:
- `VarlenLayout`: one batch-1 problem per sample of a packed variable-size batch
  (fastna.neighborhood_attention_varlen): rows of the packed tensors.
- `HeadGroupLayout`: one problem per head group of a call with per-head-group windows
  (fastna.neighborhood_attention(..., head_groups=...)): heads of the call's tensors.
Each problem reads views of the call's tensors (nothing is copied per problem) and has its own
contiguous lse rows (kernels index lse as [B, N, heads of the problem]).
"""
from __future__ import annotations

import functools
import math
from typing import List, Optional, Sequence, Tuple

import torch

from .. import _ext, _policy, _table
from . import hopper
from ._base import alloc
from ._layout import fit, launch_params, on_device, packed_arg, stream, tensor_arg

FWD, BWD = "fused_fwd_grouped", "fused_bwd_grouped"
TILE, SMALL_TILE, HOPPER_TILE = "default", _policy.SMALL_TILE, hopper.TILE


class VarlenLayout:
    """Problem i = sample i of a packed batch: rows [start, start + n) of every [total, H, D]
    tensor as [1, *shape, H, D]; its lse rows [start, start + n) of the packed [total, H]."""

    def __init__(self, samples: Sequence):
        self.samples = tuple(samples)
        self.rank = self.samples[0].params.rank

    def problem_params(self):
        return [s.params for s in self.samples]

    def _rows(self, t):
        return [t[s.start:s.start + s.tokens].view(1, *s.shape, *t.shape[1:]) for s in self.samples]

    q_views = kv_views = _rows

    def new_lse(self, q) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(the call's lse, the problems' rows of it): here the rows are views of it."""
        lse = alloc(q.shape[:-1], torch.float32, q.device)
        return lse, self.lse_rows(lse)

    def joined_lse(self, lse, rows):
        return lse

    def lse_rows(self, lse) -> List[torch.Tensor]:
        return [lse[s.start:s.start + s.tokens].view(1, s.tokens, lse.shape[-1]) for s in self.samples]

    saved_lse_rows = lse_rows

    def kv_grads(self, k, v):
        """(dk, dv, the problems' dk / dv views, finish): the samples' rows do not overlap."""
        dk, dv = alloc(k.shape, k.dtype, k.device), alloc(v.shape, v.dtype, v.device)
        return dk, dv, self._rows(dk), self._rows(dv), lambda: None


class HeadGroupLayout:
    """Problem i = head group i of a call: query heads [h0, h1) and key/value heads [k0, k1) of
    every [B, *spatial, H, D] tensor; its lse rows are its own contiguous [B, N, h1 - h0] block
    (joined along the heads for the caller).  Groups may share a key/value head (GQA): their
    dK / dV go to buffers of their own, summed into the call's."""

    def __init__(self, groups: Sequence, query):
        self.groups = tuple(groups)
        self.rank = self.groups[0].params.rank
        self.batch_shape = tuple(query.shape[:-2])   # [B, *spatial]

    def problem_params(self):
        return [g.params for g in self.groups]

    def q_views(self, t):
        return [t[..., g.heads[0]:g.heads[1], :] for g in self.groups]

    def kv_views(self, t):
        return [t[..., g.kv_heads[0]:g.kv_heads[1], :] for g in self.groups]

    def _lse_blocks(self, flat) -> List[torch.Tensor]:
        n, blocks, at = math.prod(self.batch_shape[1:]), [], 0
        for g in self.groups:
            size = self.batch_shape[0] * n * (g.heads[1] - g.heads[0])
            blocks.append(flat[at:at + size].view(self.batch_shape[0], n, g.heads[1] - g.heads[0]))
            at += size
        return blocks

    def new_lse(self, q):
        flat = alloc((math.prod(q.shape[:-1]),), torch.float32, q.device)
        return flat, self._lse_blocks(flat)

    def joined_lse(self, flat, rows):
        return torch.cat([r.view(*self.batch_shape, r.shape[-1]) for r in rows], dim=-1)

    def lse_rows(self, lse) -> List[torch.Tensor]:
        """The caller's [B, *spatial, H] lse gradient as the problems' blocks (copies)."""
        rows = []
        for g in self.groups:
            part = lse[..., g.heads[0]:g.heads[1]]
            block = alloc((self.batch_shape[0], math.prod(self.batch_shape[1:]), part.shape[-1]),
                          torch.float32, lse.device)
            rows.append(block.copy_(part.reshape(block.shape)))
        return rows

    def saved_lse_rows(self, flat) -> List[torch.Tensor]:
        return self._lse_blocks(flat)

    def kv_grads(self, k, v):
        ranges = [g.kv_heads for g in self.groups]
        shared = any(a[1] > b[0] for a, b in zip(ranges, ranges[1:]))
        if not shared:   # each group writes its own key/value heads completely
            dk, dv = alloc(k.shape, k.dtype, k.device), alloc(v.shape, v.dtype, v.device)
            return dk, dv, self.kv_views(dk), self.kv_views(dv), lambda: None
        dk, dv = torch.zeros_like(k), torch.zeros_like(v)
        parts = [(alloc(dk[..., a:b, :].shape, k.dtype, k.device),
                  alloc(dv[..., a:b, :].shape, v.dtype, v.device)) for a, b in ranges]

        def finish():
            for (a, b), (pk, pv) in zip(ranges, parts):
                dk[..., a:b, :] += pk
                dv[..., a:b, :] += pv

        return dk, dv, [p[0] for p in parts], [p[1] for p in parts], finish


def unavailable(query, key, value, rank: int, needs_backward: bool) -> Optional[str]:
    """Why the grouped kernels cannot run problems of these tensors, or None."""
    if not query.is_cuda:
        return "the grouped kernels run on CUDA tensors"
    if query.dtype not in (torch.float16, torch.bfloat16):
        return f"the grouped kernels take float16 / bfloat16, not {query.dtype}"
    if value.shape[-1] != query.shape[-1]:
        return f"the grouped kernels need Dv == D (got D={query.shape[-1]}, Dv={value.shape[-1]})"
    for op in (FWD, BWD) if needs_backward else (FWD,):
        why = _table.unavailable("fused", op, TILE)
        if why:
            return why
        dims = _table.tiles_by_head_dim(op, rank, query.dtype, query.device)
        if query.shape[-1] not in dims:
            return (f"no {op} instance for rank {rank}, {query.dtype}, head dim "
                    f"{query.shape[-1]} (built: {sorted(dims)})")
    return None


def forward_tile(q, rank: int, pds) -> str:
    """The grouped forward's tile, in the dense policy's order: the small-window one where it
    is built and takes every problem, else the sm90a one where it is built (compute capability
    9.0), else "default"."""
    built = _table.tiles_by_head_dim(FWD, rank, q.dtype, q.device).get(q.shape[-1], frozenset())
    if _policy.small_window_enabled() and SMALL_TILE in built and all(
            _small_fits(_key(pd), _ext.device_cc(q.device)) for pd in pds):
        return SMALL_TILE
    return HOPPER_TILE if HOPPER_TILE in built else TILE


def _key(pd: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in pd.items()))


@functools.lru_cache(maxsize=4096)
def _small_fits(key: tuple, cc) -> bool:
    """Whether the small-window tile takes a problem on a device of compute capability cc (one
    binding call per distinct problem, not per call: a packed batch asks for every sample)."""
    pd = {k: list(v) if isinstance(v, tuple) else v for k, v in key}
    return not _ext.can_implement(_table.FUSED_FWD, {**pd, "tile": SMALL_TILE})


_ext.on_clear(_small_fits.cache_clear)


def _launch_params(layout, q, k, v) -> List[dict]:
    return [launch_params(p, qi, ki, vi, TILE) for p, qi, ki, vi in
            zip(layout.problem_params(), layout.q_views(q), layout.kv_views(k), layout.kv_views(v))]


def explain(query, key, value, layout) -> str:
    """What a grouped call of `layout` runs, as one line."""
    pds = _launch_params(layout, query, key, value)
    return (f"grouped kernels: {len(pds)} problem(s) in one forward launch (tile "
            f"{forward_tile(query, layout.rank, pds)!r}), three backward launches (tile "
            f"{backward_tile(query, layout.rank)!r})")


def backward_tile(q, rank: int) -> str:
    """The grouped backward's tile: the sm90a one where it is built (compute capability 9.0;
    its launch runs the sm80 kernels for problems the Hopper ones do not take), else "default"."""
    built = _table.tiles_by_head_dim(BWD, rank, q.dtype, q.device).get(q.shape[-1], frozenset())
    return HOPPER_TILE if HOPPER_TILE in built else TILE


class _Grouped(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, layout):
        q, k, v = (fit(t) for t in (q, k, v))
        pds = _launch_params(layout, q, k, v)
        out = alloc(q.shape, q.dtype, q.device)
        lse_store, lse_rows = layout.new_lse(q)
        tile = forward_tile(q, layout.rank, pds)
        problems = [({**pd, "tile": tile}, tensor_arg(qi), tensor_arg(ki), tensor_arg(vi), tensor_arg(oi),
                     packed_arg(li))
                    for pd, qi, ki, vi, oi, li in zip(pds, layout.q_views(q), layout.kv_views(k),
                                                     layout.kv_views(v), layout.q_views(out), lse_rows)]
        with on_device(q.device):
            _ext.load().fused_grouped_forward(problems, stream(q.device))
        ctx.save_for_backward(q, k, v, out, lse_store)
        ctx.layout, ctx.pds = layout, pds
        return out, layout.joined_lse(lse_store, lse_rows)

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse_store = ctx.saved_tensors
        layout = ctx.layout
        lse_rows = layout.saved_lse_rows(lse_store)
        dout = torch.zeros_like(out) if dout is None else fit(dout.to(out.dtype))
        dlse_rows = ([None] * len(ctx.pds) if dlse is None
                     else layout.lse_rows(dlse.to(torch.float32).contiguous()))
        dq = alloc(q.shape, q.dtype, q.device)
        dk, dv, dk_parts, dv_parts, finish = layout.kv_grads(k, v)
        tile = backward_tile(q, layout.rank)
        problems = [
            ({**pd, "tile": tile}, tensor_arg(qi), tensor_arg(ki), tensor_arg(vi), tensor_arg(oi), tensor_arg(gi),
             packed_arg(li), None if di is None else packed_arg(di), tensor_arg(dqi),
             tensor_arg(dki), tensor_arg(dvi))
            for pd, qi, ki, vi, oi, gi, li, di, dqi, dki, dvi in zip(
                ctx.pds, layout.q_views(q), layout.kv_views(k), layout.kv_views(v),
                layout.q_views(out), layout.q_views(dout), lse_rows, dlse_rows,
                layout.q_views(dq), dk_parts, dv_parts)]
        with on_device(q.device):
            _ext.load().fused_grouped_backward(problems, stream(q.device))
        finish()
        return dq, dk, dv, None


def attention(query, key, value, layout):
    """(out like query, lse fp32 like query without its head dim) of the problems `layout`
    splits the call into, through the grouped kernels."""
    return _Grouped.apply(query, key, value, layout)
