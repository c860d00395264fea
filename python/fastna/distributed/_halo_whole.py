"""mode="halo" with a slab implementation that is fast on whole neighborhoods (one with `whole`,
fastna.distributed._slab.Implementation: "embedded" runs fastna's own kernels on them). The
transfers are those of fastna.distributed._halo; the schedule differs: no query is split over
several kv slabs. While the rows fly, the interior queries (windows inside the rank's own slab)
run against the own rows; each border segment waits for the levels that carry its rows and
then runs once against the assembled rows [k0, k1) (own rows and halo rows, contiguous along
the shard axis). Where a separate interior call would cost more than it hides (`calls`), all
the rank's queries run as one call after the transfers instead. The backward runs the border
segments first -- their halo dK / dV go back to the rows' owners level by level, farthest
first -- and the interior while those fly.

The parts keep their autograd graphs from the forward (when a backward can follow), so the
backward runs each part's backward once, without recomputing its forward.
"""
from __future__ import annotations

from typing import Set, Tuple

import torch

from . import _embed, _halo
from ._halo import HaloSetup
from ._plan import AxisPlan, Segment

__all__ = ["halo_attention", "compute", "calls", "row_count", "OVERLAP_SLACK"]


# The interior runs as its own call, overlapped with the transfers, only where that computes at
# most this share more shard-axis rows than one call for all the rank's queries after the
# transfers: every call of an ordinary problem also computes the filler query rows of its key
# context, and on fast links (NVLink) the transfers are far shorter than a slab's compute.
OVERLAP_SLACK = 0.10


def row_count(seg: Segment, setup: HaloSetup) -> int:
    """Shard-axis rows of the ordinary problem that runs the segment (its kv rows where the
    implementation would not embed it)."""
    a, p = setup.axis, setup.params
    e = _embed.axis_embedding(p.length[a], p.kernel[a], p.stride[a], p.dilation[a],
                              p.causal[a], seg.q0, seg.q1, seg.k0, seg.k1)
    return seg.k1 - seg.k0 if e is None else e[1] - e[0]


def calls(setup: HaloSetup, me: int) -> Tuple[Segment, ...]:
    """The query segments rank `me` runs, in order: the plan's (interior and borders) where
    the interior is worth its own call (OVERLAP_SLACK), else one segment of all its queries."""
    segs = setup.plan.segments[me]
    if len(segs) <= 1 or not any(seg.local for seg in segs):
        return segs
    merged = Segment(segs[0].q0, segs[-1].q1, min(seg.k0 for seg in segs),
                     max(seg.k1 for seg in segs), all(seg.local for seg in segs))
    split = sum(row_count(seg, setup) for seg in segs)
    if split <= (1 + OVERLAP_SLACK) * row_count(merged, setup):
        return segs
    return (merged,)


def _sources(seg: Segment, plan: AxisPlan, me: int) -> Set[int]:
    """The ranks whose rows the segment's windows read (empty for an interior segment)."""
    out = set()
    for src in range(plan.world):
        rows = plan.sends(src, me)
        if rows and seg.k0 <= rows[-1] and rows[0] < seg.k1:
            out.add(src)
    return out


def _run(seg: Segment, q, krows: _halo.Rows, vrows: _halo.Rows, setup: HaloSetup,
         keep_graph: bool):
    s0 = setup.plan.starts[setup.group.rank]
    qs = q.narrow(setup.dim, seg.q0 - s0, seg.q1 - seg.q0)
    return setup.impl.whole(qs, krows.rows(seg.k0, seg.k1), vrows.rows(seg.k0, seg.k1),
                            setup.params, setup.offsets(seg.q0), setup.offsets(seg.k0),
                            keep_graph)


def _output(parts, q, v, dim: int) -> torch.Tensor:
    if not parts:   # a rank without rows
        return q.new_zeros((*q.shape[:-1], v.shape[-1]))
    outs = [p.out for p in parts]
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim)


class _HaloWhole(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, setup: HaloSetup, keep_graph: bool):
        me = setup.group.rank
        plan = setup.plan
        segments = calls(setup, me)
        levels = _halo.peer_levels(plan, me)
        posted = [_halo.post_kv(k, v, peers, setup) for peers in levels]
        krows, vrows = _halo.halo_rows(k, v, setup)
        needs = [_sources(seg, plan, me) for seg in segments]
        parts = [None] * len(segments)
        arrived: Set[int] = set()

        def run_ready() -> None:
            for i, seg in enumerate(segments):
                if parts[i] is None and needs[i] <= arrived:
                    parts[i] = _run(seg, q, krows, vrows, setup, keep_graph)

        run_ready()   # the interior, while the rows fly
        for peers, (pending, arrivals, _) in zip(levels, posted):
            pending.wait()
            _halo.place(krows, vrows, arrivals, setup)
            arrived.update(peers)
            run_ready()
        del posted
        ctx.setup = setup
        ctx.segments = segments
        ctx.parts = parts
        ctx.halo = (krows, vrows)
        ctx.save_for_backward(q, k, v)
        return _output(parts, q, v, setup.dim)

    @staticmethod
    def backward(ctx, dout):
        q, k, v = ctx.saved_tensors
        setup, parts = ctx.setup, ctx.parts
        plan, dim, me = setup.plan, setup.dim, setup.group.rank
        s0 = plan.starts[me]
        segments = ctx.segments
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        dk, dv = _halo.grad_rows(*ctx.halo, setup, acc)
        dq_parts = [None] * len(segments)

        def run(local: bool) -> None:
            for i, seg in enumerate(segments):
                if seg.local == local:
                    g = dout.narrow(dim, seg.q0 - s0, seg.q1 - seg.q0).contiguous()
                    gq, gk, gv = parts[i].grads(g)
                    dq_parts[i] = gq
                    dk.add(seg.k0, gk.to(acc))
                    dv.add(seg.k0, gv.to(acc))

        run(local=False)
        posted, arrivals = [], []
        for peers in reversed(_halo.peer_levels(plan, me)):
            posted.append(_halo.post_halo_grads(dk, dv, peers, k, v, setup, arrivals))
        run(local=True)
        for pending, _ in posted:
            pending.wait()
        del posted
        _halo.add_arrived_grads(dk, dv, arrivals, setup)
        if dq_parts:
            dq = dq_parts[0] if len(dq_parts) == 1 else torch.cat(dq_parts, dim)
        else:
            dq = torch.zeros_like(q)
        return dq.to(q.dtype), dk.local.to(k.dtype), dv.local.to(v.dtype), None, None


def halo_attention(q, k, v, setup: HaloSetup) -> torch.Tensor:
    keep_graph = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return _HaloWhole.apply(q, k, v, setup, keep_graph)


def compute(q, krows: _halo.Rows, vrows: _halo.Rows, setup: HaloSetup):
    """The forward's local compute alone, rows already there (benchmarks): (out, lse) of every
    segment."""
    return [(p.out, p.lse) for p in (_run(seg, q, krows, vrows, setup, False)
                                     for seg in calls(setup, setup.group.rank))]
