"""mode="halo": each rank receives exactly the key / value rows (along the shard axis) its
queries need, from their owners, and runs its queries against them as offset slabs (fastna.
distributed._slab). While the transfers are in flight every query runs against the rank's own
rows: complete for the interior queries (windows inside the slab), partial for the border ones;
after wait() the border queries run against the halo rows and the parts merge through their
logsumexps -- so the overlap holds even where a window is wider than the slab and no query is
interior. Backward mirrors it: the border queries' halo dK / dV are computed first and go back
to the rows' owners, who add them to their own, while the rest of the backward runs.

Every rank of the group must run the backward of the call (the owners wait for their halo
gradients), as with any collective inside autograd.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import torch

from .._args import NAParams
from . import _comm, _slab
from ._plan import AxisPlan, Segment

__all__ = ["HaloSetup", "halo_attention"]


@dataclass(frozen=True)
class HaloSetup:
    params: NAParams          # the global problem
    axis: int                 # the shard axis (0-based among the spatial axes)
    plan: AxisPlan
    group: _comm.Group
    forward: Callable         # the slab contract's forward / backward (fastna.distributed._slab)
    backward: Callable

    @property
    def dim(self) -> int:
        return 1 + self.axis

    def offsets(self, row: int) -> Tuple[int, ...]:
        off = [0] * self.params.rank
        off[self.axis] = row
        return tuple(off)


def _index(rows, base: int, device) -> torch.Tensor:
    return torch.tensor([r - base for r in rows], dtype=torch.int64, device=device)


def _with_rows(t: torch.Tensor, dim: int, n: int, dtype=None) -> torch.Tensor:
    shape = list(t.shape)
    shape[dim] = n
    return t.new_zeros(shape, dtype=dtype or t.dtype)


class _Rows:
    """Key (or value) rows [lo, hi) of the shard axis as a rank sees them: a left halo
    [lo, S0), its own slab [S0, S1) and a right halo [S1, hi); halo rows no query needs (gaps
    left by dilation) stay zero."""

    def __init__(self, local, left, right, span, dim):
        self.local, self.left, self.right = local, left, right
        self.lo, self.s0, self.s1, self.hi = span
        self.dim = dim

    def pieces(self, k0: int, k1: int):
        """[(tensor, its slice holding rows [a, b), a, b)] covering [k0, k1), in row order."""
        out = []
        for t, base, a, b in ((self.left, self.lo, k0, min(k1, self.s0)),
                              (self.local, self.s0, max(k0, self.s0), min(k1, self.s1)),
                              (self.right, self.s1, max(k0, self.s1), k1)):
            if a < b:
                out.append((t, t.narrow(self.dim, a - base, b - a), a, b))
        return out

    def rows(self, k0: int, k1: int) -> torch.Tensor:
        views = [v for _, v, _, _ in self.pieces(k0, k1)]
        return views[0] if len(views) == 1 else torch.cat(views, self.dim)

    def add(self, k0: int, grad: torch.Tensor) -> None:
        """Accumulate the gradient of rows [k0, k0 + len) into the three parts."""
        k1 = k0 + grad.shape[self.dim]
        for _, view, a, b in self.pieces(k0, k1):
            view.add_(grad.narrow(self.dim, a - k0, b - a))


def _halo_part(plan: AxisPlan, me: int, src: int):
    """Where rows from `src` sit in me's halo: ('left' or 'right', base row)."""
    lo, s0, s1, _ = plan.halo_span(me)
    return ("left", lo) if src < me else ("right", s1)


def _post_kv(k, v, setup: HaloSetup):
    """Post the halo transfers: my rows to every rank that needs them, theirs into new buffers.
    Returns (pending, [(src, rows, k_rows, v_rows)], sent tensors kept alive until wait)."""
    plan, group, dim = setup.plan, setup.group, setup.dim
    me = group.rank
    s0 = plan.starts[me]
    sends, recvs, arrivals = [], [], []
    for dst in range(group.size):
        rows = plan.sends(me, dst)
        if rows:
            idx = _index(rows, s0, k.device)
            sends += [(dst, k.index_select(dim, idx), 0), (dst, v.index_select(dim, idx), 1)]
    for src in range(group.size):
        rows = plan.sends(src, me)
        if rows:
            kb, vb = _with_rows(k, dim, len(rows)), _with_rows(v, dim, len(rows))
            recvs += [(src, kb, 0), (src, vb, 1)]
            arrivals.append((src, rows, kb, vb))
    return _comm.p2p(sends, recvs, group, "halo kv"), arrivals, sends


def _assemble(k, v, arrivals, setup: HaloSetup):
    """(_Rows of k, _Rows of v) from my slab and the received rows."""
    plan, dim, me = setup.plan, setup.dim, setup.group.rank
    span = plan.halo_span(me)
    lo, s0, s1, hi = span
    parts = {}
    for t, which in ((k, 0), (v, 1)):
        parts[which] = {"left": _with_rows(t, dim, s0 - lo), "right": _with_rows(t, dim, hi - s1)}
    for src, rows, kb, vb in arrivals:
        side, base = _halo_part(plan, me, src)
        idx = _index(rows, base, k.device)
        parts[0][side].index_copy_(dim, idx, kb)
        parts[1][side].index_copy_(dim, idx, vb)
    return tuple(_Rows(t, parts[w]["left"], parts[w]["right"], span, dim)
                 for t, w in ((k, 0), (v, 1)))


def _local_rows(k, v, setup: HaloSetup):
    me = setup.group.rank
    s0, s1 = setup.plan.owned(me)
    empty = (None, None)
    return tuple(_Rows(t, *empty, (s0, s0, s1, s1), setup.dim) for t in (k, v))


def _parts(seg: Segment, owned, halo: bool):
    """The kv row ranges the segment's neighborhood splits into: its part of the rank's own
    rows (halo=False; the whole range for a local segment), or its left and right halo parts
    (halo=True)."""
    s0, s1 = owned
    if seg.local:
        return [] if halo else [(seg.k0, seg.k1)]
    ranges = [(seg.k0, min(seg.k1, s0)), (max(seg.k0, s1), seg.k1)] if halo \
        else [(max(seg.k0, s0), min(seg.k1, s1))]
    return [(a, b) for a, b in ranges if a < b]


def _part_forward(seg: Segment, a: int, b: int, q, krows: _Rows, vrows: _Rows,
                  setup: HaloSetup):
    s0 = setup.plan.starts[setup.group.rank]
    qs = q.narrow(setup.dim, seg.q0 - s0, seg.q1 - seg.q0)
    return setup.forward(qs, krows.rows(a, b), vrows.rows(a, b), setup.params,
                         setup.offsets(seg.q0), setup.offsets(a), not seg.local)


class _HaloAttention(torch.autograd.Function):
    """Forward: post the transfers; every segment against the rank's own rows (complete for
    the interior, partial for the borders) while they fly; wait; the borders against the halo
    rows, merged through the logsumexp. Backward: the borders' halo parts first, their dK / dV
    posted back to the owners, the rest while those fly."""

    @staticmethod
    def forward(ctx, q, k, v, setup: HaloSetup):
        me = setup.group.rank
        segments = setup.plan.segments[me]
        owned = setup.plan.owned(me)
        pending, arrivals, sent = _post_kv(k, v, setup)
        local_k, local_v = _local_rows(k, v, setup)
        parts = {seg: [_part_forward(seg, a, b, q, local_k, local_v, setup)
                       for a, b in _parts(seg, owned, halo=False)] for seg in segments}
        pending.wait()
        del sent
        krows, vrows = _assemble(k, v, arrivals, setup)
        for seg in segments:
            parts[seg] += [_part_forward(seg, a, b, q, krows, vrows, setup)
                           for a, b in _parts(seg, owned, halo=True)]
        results = [_slab.merge(parts[seg]) for seg in segments]
        if results:
            outs = [o for o, _ in results]
            out = outs[0] if len(outs) == 1 else torch.cat(outs, setup.dim)
        else:   # a rank without rows
            out = q.new_zeros((*q.shape[:-1], v.shape[-1]))
        ctx.save_for_backward(q, k, v)
        ctx.setup = setup
        ctx.halo = (krows, vrows)
        ctx.results = results
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v = ctx.saved_tensors
        setup = ctx.setup
        plan, group, dim = setup.plan, setup.group, setup.dim
        me = group.rank
        s0 = plan.starts[me]
        owned = plan.owned(me)
        segments = plan.segments[me]
        krows, vrows = ctx.halo
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        # gradients of every row the rank's queries read, halo included, in acc precision
        dk, dv = (_Rows(*(torch.zeros_like(t, dtype=acc) for t in (r.local, r.left, r.right)),
                        plan.halo_span(me), dim) for r in (krows, vrows))
        dq_parts = [torch.zeros_like(q.narrow(dim, seg.q0 - s0, seg.q1 - seg.q0), dtype=acc)
                    for seg in segments]

        def run(i: int, seg: Segment, halo: bool) -> None:
            out, lse = ctx.results[i]
            sl = (dim, seg.q0 - s0, seg.q1 - seg.q0)
            for a, b in _parts(seg, owned, halo):
                gq, gk, gv = setup.backward(dout.narrow(*sl).contiguous(), q.narrow(*sl),
                                            krows.rows(a, b), vrows.rows(a, b), out, lse,
                                            setup.params, setup.offsets(seg.q0),
                                            setup.offsets(a))
                dq_parts[i] += gq.to(acc)
                dk.add(a, gk.to(acc))
                dv.add(a, gv.to(acc))

        for i, seg in enumerate(segments):
            run(i, seg, halo=True)
        # halo gradients back to the rows' owners (in the input dtype, like the rows came)
        sends, recvs, arrivals = [], [], []
        for src in range(group.size):
            rows = plan.sends(src, me)
            if rows:
                side, base = _halo_part(plan, me, src)
                idx = _index(rows, base, k.device)
                gk = getattr(dk, side).index_select(dim, idx).to(k.dtype)
                gv = getattr(dv, side).index_select(dim, idx).to(v.dtype)
                sends += [(src, gk, 0), (src, gv, 1)]
        for dst in range(group.size):
            rows = plan.sends(me, dst)
            if rows:
                gk, gv = _with_rows(k, dim, len(rows)), _with_rows(v, dim, len(rows))
                recvs += [(dst, gk, 0), (dst, gv, 1)]
                arrivals.append((rows, gk, gv))
        pending = _comm.p2p(sends, recvs, group, "halo dkv")
        for i, seg in enumerate(segments):
            run(i, seg, halo=False)
        pending.wait()
        del sends
        for rows, gk, gv in arrivals:
            idx = _index(rows, s0, k.device)
            dk.local.index_add_(dim, idx, gk.to(acc))
            dv.local.index_add_(dim, idx, gv.to(acc))
        if dq_parts:
            dq = dq_parts[0] if len(dq_parts) == 1 else torch.cat(dq_parts, dim)
        else:
            dq = torch.zeros_like(q, dtype=acc)
        return dq.to(q.dtype), dk.local.to(k.dtype), dv.local.to(v.dtype), None


def halo_attention(q, k, v, setup: HaloSetup) -> torch.Tensor:
    return _HaloAttention.apply(q, k, v, setup)
