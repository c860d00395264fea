"""mode="halo": each rank receives exactly the key / value rows (along the shard axis) its
queries need, from their owners, and runs its queries against them as offset slabs (fastna.
distributed._slab). The transfers go by distance (level d: the peers d ranks away), all posted at
once. While they fly every query runs against the rank's own rows: complete for the interior
queries (windows inside the slab), partial for the border ones; then, nearest level first, the
border queries run against each level's rows as soon as they are there, and the parts merge
through their logsumexps -- so the overlap holds even where a window is wider than the slab and
no query is interior. Backward mirrors it: farthest level first, the border queries' dK / dV of
that level's rows are computed and go back to the rows' owners, who add them to their own, while
the rest of the backward runs.

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

__all__ = ["HaloSetup", "Rows", "halo_attention", "exchange", "compute", "peer_levels", "post_kv",
           "halo_rows", "place", "post_halo_grads", "add_arrived_grads", "grad_rows"]


@dataclass(frozen=True)
class HaloSetup:
    params: NAParams          # the global problem
    axis: int                 # the shard axis (0-based among the spatial axes)
    plan: AxisPlan
    group: _comm.Group
    impl: _slab.Implementation   # the local compute (fastna.distributed._slab)

    @property
    def forward(self) -> Callable:
        return self.impl.forward

    @property
    def backward(self) -> Callable:
        return self.impl.backward

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


class Rows:
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


def peer_levels(plan: AxisPlan, me: int):
    """The peers me exchanges rows with (either way), grouped by distance |peer - me|,
    nearest first. Both ends of a pair put it in the same level, and every rank posts its
    levels in the same order (forward nearest first, backward farthest first), so the
    transfers of one level never wait for another rank's later level."""
    levels = {}
    for p in range(plan.world):
        if p != me and (plan.sends(me, p) or plan.sends(p, me)):
            levels.setdefault(abs(p - me), []).append(p)
    return [levels[d] for d in sorted(levels)]


def post_kv(k, v, peers, setup: HaloSetup):
    """Post one level's transfers: my rows to those peers that need them, theirs into new
    buffers. Returns (pending, [(src, rows, k_rows, v_rows)], sent tensors to keep alive)."""
    plan, group, dim = setup.plan, setup.group, setup.dim
    me = group.rank
    s0 = plan.starts[me]
    sends, recvs, arrivals = [], [], []
    for p in peers:
        rows = plan.sends(me, p)
        if rows:
            idx = _index(rows, s0, k.device)
            sends += [(p, k.index_select(dim, idx), 0), (p, v.index_select(dim, idx), 1)]
        rows = plan.sends(p, me)
        if rows:
            kb, vb = _with_rows(k, dim, len(rows)), _with_rows(v, dim, len(rows))
            recvs += [(p, kb, 0), (p, vb, 1)]
            arrivals.append((p, rows, kb, vb))
    return _comm.p2p(sends, recvs, group, "halo kv"), arrivals, sends


def halo_rows(k, v, setup: HaloSetup):
    """(Rows of k, Rows of v): my slab and zeroed halo buffers the arrivals fill."""
    plan, dim, me = setup.plan, setup.dim, setup.group.rank
    span = plan.halo_span(me)
    lo, s0, s1, hi = span
    return tuple(Rows(t, _with_rows(t, dim, s0 - lo), _with_rows(t, dim, hi - s1), span, dim)
                 for t in (k, v))


def place(krows: Rows, vrows: Rows, arrivals, setup: HaloSetup) -> None:
    plan, dim, me = setup.plan, setup.dim, setup.group.rank
    for src, rows, kb, vb in arrivals:
        side, base = _halo_part(plan, me, src)
        idx = _index(rows, base, kb.device)
        getattr(krows, side).index_copy_(dim, idx, kb)
        getattr(vrows, side).index_copy_(dim, idx, vb)


def _own_parts(seg: Segment, owned):
    """The segment's kv range within the rank's own rows (all of it for a local segment)."""
    a, b = max(seg.k0, owned[0]), min(seg.k1, owned[1])
    return [(a, b)] if a < b else []


def _halo_parts(seg: Segment, plan: AxisPlan, me: int, peers):
    """The segment's kv range within the rows each of `peers` sends me."""
    out = []
    for src in peers:
        rows = plan.sends(src, me)
        if rows:
            a, b = max(seg.k0, rows[0]), min(seg.k1, rows[-1] + 1)
            if a < b:
                out.append((a, b))
    return out


def _part_forward(seg: Segment, a: int, b: int, q, krows: Rows, vrows: Rows,
                  setup: HaloSetup):
    s0 = setup.plan.starts[setup.group.rank]
    qs = q.narrow(setup.dim, seg.q0 - s0, seg.q1 - seg.q0)
    return setup.forward(qs, krows.rows(a, b), vrows.rows(a, b), setup.params,
                         setup.offsets(seg.q0), setup.offsets(a), not seg.local)


class _HaloAttention(torch.autograd.Function):
    """Forward: post every level's transfers; every query against the rank's own rows
    (complete for the interior, partial for the borders) while they fly; then level by level,
    nearest first, wait and run the border queries against that level's rows; merge the parts
    through the logsumexp. Backward: level by level, farthest first, the border queries'
    gradients through that level's rows, posted back to their owners at once; the own rows'
    part while those fly."""

    @staticmethod
    def forward(ctx, q, k, v, setup: HaloSetup):
        me = setup.group.rank
        plan = setup.plan
        segments = plan.segments[me]
        owned = plan.owned(me)
        levels = peer_levels(plan, me)
        posted = [post_kv(k, v, peers, setup) for peers in levels]
        krows, vrows = halo_rows(k, v, setup)
        parts = {seg: [_part_forward(seg, a, b, q, krows, vrows, setup)
                       for a, b in _own_parts(seg, owned)] for seg in segments}
        for peers, (pending, arrivals, _) in zip(levels, posted):
            pending.wait()
            place(krows, vrows, arrivals, setup)
            for seg in segments:
                parts[seg] += [_part_forward(seg, a, b, q, krows, vrows, setup)
                               for a, b in _halo_parts(seg, plan, me, peers)]
        del posted
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
        dk, dv = grad_rows(krows, vrows, setup, acc)
        dq_parts = [torch.zeros_like(q.narrow(dim, seg.q0 - s0, seg.q1 - seg.q0), dtype=acc)
                    for seg in segments]

        def run(ranges_of) -> None:
            for i, seg in enumerate(segments):
                out, lse = ctx.results[i]
                sl = (dim, seg.q0 - s0, seg.q1 - seg.q0)
                for a, b in ranges_of(seg):
                    gq, gk, gv = setup.backward(dout.narrow(*sl).contiguous(), q.narrow(*sl),
                                                krows.rows(a, b), vrows.rows(a, b), out, lse,
                                                setup.params, setup.offsets(seg.q0),
                                                setup.offsets(a))
                    dq_parts[i] += gq.to(acc)
                    dk.add(a, gk.to(acc))
                    dv.add(a, gv.to(acc))

        posted, arrivals = [], []
        for peers in reversed(peer_levels(plan, me)):
            run(lambda seg: _halo_parts(seg, plan, me, peers))
            posted.append(post_halo_grads(dk, dv, peers, k, v, setup, arrivals))
        run(lambda seg: _own_parts(seg, owned))
        for pending, _ in posted:
            pending.wait()
        del posted
        add_arrived_grads(dk, dv, arrivals, setup)
        if dq_parts:
            dq = dq_parts[0] if len(dq_parts) == 1 else torch.cat(dq_parts, dim)
        else:
            dq = torch.zeros_like(q, dtype=acc)
        return dq.to(q.dtype), dk.local.to(k.dtype), dv.local.to(v.dtype), None


def post_halo_grads(dk: Rows, dv: Rows, peers, k, v, setup: HaloSetup, arrivals: list):
    """Post one level's halo gradients back to the rows' owners (in the input dtype, like the
    rows came) and the receives of theirs for my rows (appended to `arrivals` as (rows, dk,
    dv)). Returns (pending, sent tensors to keep alive)."""
    plan, group, dim = setup.plan, setup.group, setup.dim
    me = group.rank
    sends, recvs = [], []
    for p in peers:
        rows = plan.sends(p, me)
        if rows:
            side, base = _halo_part(plan, me, p)
            idx = _index(rows, base, k.device)
            sends += [(p, getattr(dk, side).index_select(dim, idx).to(k.dtype), 0),
                      (p, getattr(dv, side).index_select(dim, idx).to(v.dtype), 1)]
        rows = plan.sends(me, p)
        if rows:
            gk, gv = _with_rows(k, dim, len(rows)), _with_rows(v, dim, len(rows))
            recvs += [(p, gk, 0), (p, gv, 1)]
            arrivals.append((rows, gk, gv))
    return _comm.p2p(sends, recvs, group, "halo dkv"), sends


def add_arrived_grads(dk: Rows, dv: Rows, arrivals, setup: HaloSetup) -> None:
    """Add the halo gradients the peers returned for my rows to my own."""
    s0 = setup.plan.starts[setup.group.rank]
    for rows, gk, gv in arrivals:
        idx = _index(rows, s0, gk.device)
        dk.local.index_add_(setup.dim, idx, gk.to(dk.local.dtype))
        dv.local.index_add_(setup.dim, idx, gv.to(dv.local.dtype))


def grad_rows(krows: Rows, vrows: Rows, setup: HaloSetup, acc) -> Tuple[Rows, Rows]:
    """Zeroed accumulators (acc dtype) for the gradients of every row the rank's queries read,
    halo included."""
    span = setup.plan.halo_span(setup.group.rank)
    return tuple(Rows(*(torch.zeros_like(t, dtype=acc) for t in (r.local, r.left, r.right)),
                      span, setup.dim) for r in (krows, vrows))


def exchange(k, v, setup: HaloSetup):
    """The forward's transfers alone (benchmarks): (Rows of k, Rows of v) once all arrived."""
    krows, vrows = halo_rows(k, v, setup)
    for peers in peer_levels(setup.plan, setup.group.rank):
        pending, arrivals, sent = post_kv(k, v, peers, setup)
        pending.wait()
        place(krows, vrows, arrivals, setup)
    return krows, vrows


def compute(q, krows: Rows, vrows: Rows, setup: HaloSetup):
    """The forward's local compute alone, rows already there (benchmarks): the output parts of
    every segment, merged."""
    me = setup.group.rank
    plan = setup.plan
    peers = [p for level in peer_levels(plan, me) for p in level]
    return [_slab.merge([_part_forward(seg, a, b, q, krows, vrows, setup)
                         for a, b in _own_parts(seg, plan.owned(me)) +
                         _halo_parts(seg, plan, me, peers)])
            for seg in plan.segments[me]]


def halo_attention(q, k, v, setup: HaloSetup) -> torch.Tensor:
    return _HaloAttention.apply(q, k, v, setup)
