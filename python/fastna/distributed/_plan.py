"""The shard axis as the ranks see it: who owns which rows, which key rows each rank's queries
need (docs/SEMANTICS.md sections 3-4 on the *global* axis), who sends them to whom, and how a rank
splits its queries into the part that needs only its own rows and the borders that wait for the
halo.

Pure Python, no communication: every rank derives the same plan from the slab lengths and the
axis' parameters, so both ends of a transfer agree on its rows without telling each other
(benchmarks/bench_context_parallel.py uses it to predict bytes without GPUs).
"""
from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from typing import Tuple

from ..index_math import group_length, window

__all__ = ["even_lengths", "key_bounds", "needed_rows", "Segment", "AxisPlan", "axis_plan"]


def even_lengths(length: int, parts: int) -> Tuple[int, ...]:
    """Near-even split: the first length % parts slabs get one row more."""
    base, extra = divmod(length, parts)
    return tuple(base + (1 if r < extra else 0) for r in range(parts))


def key_bounds(L: int, K: int, s: int, d: int, causal: bool, i: int) -> Tuple[int, int]:
    """Absolute key rows [lo, hi) spanned by the window of absolute query i (every row of the
    span in i's dilation group is a neighbor)."""
    start, end = window(L, K, s, d, causal, i)
    g = i % d
    return g + d * start, g + d * (end - 1) + 1


def needed_rows(L: int, K: int, s: int, d: int, causal: bool, q0: int, q1: int
                ) -> Tuple[int, ...]:
    """Sorted absolute key rows that at least one query of [q0, q1) has as a neighbor.

    Per dilation group the queries' windows have non-decreasing starts and ends, and consecutive
    windows overlap or touch (a run moves the window by at most s <= K keys; a causal window ends
    after its query and the next run's starts no later), so the group's needed keys are the
    single group-local range [start(first query), end(last query)).
    """
    rows = []
    for g in range(min(d, L)):
        first = -(-(q0 - g) // d)            # group-local index of the first query >= q0
        last = -(-(q1 - g) // d) - 1         # ... of the last query < q1
        first = max(first, 0)
        last = min(last, group_length(L, d, g) - 1)
        if first > last:
            continue
        start = window(L, K, s, d, causal, first * d + g)[0]
        end = window(L, K, s, d, causal, last * d + g)[1]
        rows.extend(g + d * j for j in range(start, end))
    return tuple(sorted(rows))


@dataclass(frozen=True)
class Segment:
    """Queries [q0, q1) of one rank (global rows) and the key rows [k0, k1) their windows span;
    `local`: those rows all belong to the rank itself (no halo needed)."""
    q0: int
    q1: int
    k0: int
    k1: int
    local: bool


def _segments(L, K, s, d, causal, S0, S1) -> Tuple[Segment, ...]:
    """[left border, interior, right border] of the queries [S0, S1), empty parts dropped.

    The interior is the longest run whose windows all stay inside [S0, S1): after the last query
    reaching left of S0 and before the first reaching right of S1 (with dilation the reach is
    not monotone in the query, so both are searched over all queries). Without an interior all
    queries form one border segment.
    """
    if S0 == S1:
        return ()
    bounds = [key_bounds(L, K, s, d, causal, i) for i in range(S0, S1)]
    left_reach = [i for i, (lo, _) in enumerate(bounds, S0) if lo < S0]
    right_reach = [i for i, (_, hi) in enumerate(bounds, S0) if hi > S1]
    qa = left_reach[-1] + 1 if left_reach else S0
    qb = right_reach[0] if right_reach else S1
    parts = [(S0, qa), (qa, qb), (qb, S1)] if qa < qb else [(S0, S1)]
    out = []
    for q0, q1 in parts:
        if q0 == q1:
            continue
        k0 = min(lo for lo, _ in bounds[q0 - S0:q1 - S0])
        k1 = max(hi for _, hi in bounds[q0 - S0:q1 - S0])
        out.append(Segment(q0, q1, k0, k1, S0 <= k0 and k1 <= S1))
    return tuple(out)


@dataclass(frozen=True)
class AxisPlan:
    """The shard axis of one call: global `length`, per rank its first row `starts[r]`, its row
    count `lengths[r]`, the key rows its queries need `needed[r]` (sorted, its own included) and
    its query `segments[r]`."""
    length: int
    starts: Tuple[int, ...]
    lengths: Tuple[int, ...]
    needed: Tuple[Tuple[int, ...], ...]
    segments: Tuple[Tuple[Segment, ...], ...]

    @property
    def world(self) -> int:
        return len(self.lengths)

    def owned(self, r: int) -> Tuple[int, int]:
        return self.starts[r], self.starts[r] + self.lengths[r]

    def sends(self, src: int, dst: int) -> Tuple[int, ...]:
        """Rows of src's slab that dst's queries need (none when src == dst)."""
        if src == dst:
            return ()
        rows = self.needed[dst]
        a, b = self.owned(src)
        return rows[bisect.bisect_left(rows, a):bisect.bisect_left(rows, b)]

    def halo(self, r: int) -> Tuple[int, ...]:
        """Rows r receives: what its queries need beyond its own slab."""
        a, b = self.owned(r)
        return tuple(x for x in self.needed[r] if not a <= x < b)

    def halo_span(self, r: int) -> Tuple[int, int, int, int]:
        """(lo, S0, S1, hi): r's slab [S0, S1) and the rows [lo, hi) its queries reach."""
        a, b = self.owned(r)
        rows = self.needed[r]
        if not rows:
            return a, a, b, b
        return min(rows[0], a), a, b, max(rows[-1] + 1, b)


@functools.lru_cache(maxsize=256)
def axis_plan(lengths: Tuple[int, ...], K: int, s: int, d: int, causal: bool) -> AxisPlan:
    """The plan of a shard axis split into slabs of `lengths` (rank order) with window K,
    stride s, dilation d and causal flag `causal` on that axis."""
    L = sum(lengths)
    starts = tuple(sum(lengths[:r]) for r in range(len(lengths)))
    needed = tuple(needed_rows(L, K, s, d, causal, a, a + n) if n else ()
                   for a, n in zip(starts, lengths))
    segments = tuple(_segments(L, K, s, d, causal, a, a + n) for a, n in zip(starts, lengths))
    return AxisPlan(L, starts, tuple(lengths), needed, segments)
