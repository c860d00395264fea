"""Where an offset slab problem is an ordinary one: the rows [e0, e1) of each axis such that an
ordinary neighborhood attention on a tensor holding global rows [e0, e1) (the kv slab inside,
anything finite elsewhere) gives every query of the slab exactly its *global* neighborhood
(docs/SEMANTICS.md sections 3-5 with the global length), so the offset slab contract can run
on fastna's own kernels (fastna.distributed._slab_embed).

The embedded problem, of length E = e1 - e0, sees query i at row p = i - e0. It reproduces the
global windows when, per axis:

- dilation groups and stride runs line up: e0 is a multiple of d * s, so every group's
  group-local index moves by the same multiple of s (a run stays a run);
- the borders clamp where the global ones do: e0 = 0 where a window touches the global start;
  e1 = L where a run's leader (non-causal: its middle, causal: its last query) lies past the
  global end (the leader is clamped there) or a window touches the global end; elsewhere e1
  lies past every leader of the slab's runs (a causal leader may lie after its query and after
  the kv slab: a filler row then) and e1 <= L (no extra members of a group);
- K * d <= E (what an ordinary problem requires).

`axis_embedding` builds that candidate and accepts it only if `reproduces` -- the windows of
every query of the slab, recomputed with fastna.index_math on the embedded length, equal the
global ones -- says so; the property test (tests/test_distributed_embed.py) checks the same
function against brute force. Pure Python, cached per shape.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

from ._plan import key_bounds

__all__ = ["axis_embedding", "reproduces", "embedding"]


def reproduces(L: int, K: int, s: int, d: int, causal: bool, q0: int, q1: int, e0: int,
               e1: int) -> bool:
    """Whether the ordinary problem on global rows [e0, e1) gives each query of [q0, q1) the
    key rows of its global window (same dilation group on both sides, as e0 only shifts rows)."""
    E = e1 - e0
    if not (0 <= e0 <= q0 and q1 <= e1 <= L and K * d <= E):
        return False
    for i in range(q0, q1):
        lo, hi = key_bounds(E, K, s, d, causal, i - e0)
        if (lo + e0, hi + e0) != key_bounds(L, K, s, d, causal, i):
            return False
    return True


def _leader_row(L: int, s: int, d: int, causal: bool, i: int) -> int:
    """The row of the unclamped leader of query i's run (may be >= L)."""
    g, il = i % d, i // d
    return g + d * ((il // s) * s + (s - 1 if causal else s // 2))


@functools.lru_cache(maxsize=4096)
def axis_embedding(L: int, K: int, s: int, d: int, causal: bool, q0: int, q1: int, k0: int,
                   k1: int) -> Optional[Tuple[int, int]]:
    """(e0, e1): the global rows of the ordinary problem that serves queries [q0, q1) whose
    neighborhoods lie in kv rows [k0, k1), or None where none reproduces the global windows.

    The smallest that `reproduces` among a few candidates: e0 from the largest the rules allow
    (min(k0, q0), or that less what K * d <= E needs when e1 stops at the leaders or at L) down
    to the multiple of d * s below it (where the stride runs of every group line up), and 0;
    for each e0, e1 the least the rules allow, or L."""
    if q0 >= q1:
        return None
    step = d * s
    right = max(k1, q1)
    for i in range(q0, q1):   # a leader past the global end is clamped: then e1 = L
        right = max(right, min(_leader_row(L, s, d, causal, i) + 1, L))
    starts = []
    for top in (min(k0, q0), min(k0, q0, right - K * d), min(k0, q0, L - K * d)):
        if top >= 0:
            starts += range(top, (top // step) * step - 1, -1)
    best = None
    for e0 in dict.fromkeys(starts + [0]):
        for e1 in dict.fromkeys((min(L, max(right, e0 + K * d)), L)):
            if (best is None or e1 - e0 < best[1] - best[0]) and \
                    reproduces(L, K, s, d, causal, q0, q1, e0, e1):
                best = (e0, e1)
    return best


def embedding(params, q_offset: Sequence[int], q_shape: Sequence[int],
              kv_offset: Sequence[int], kv_shape: Sequence[int]
              ) -> Optional[Tuple[Tuple[int, int], ...]]:
    """Per axis (e0, e1) for a query slab against a kv slab of the global problem `params`
    (NAParams with the global length), or None where an axis has none. Every query's window
    must lie inside the kv slab (the caller's partial=False promise), or None."""
    out = []
    for a in range(params.rank):
        L, K, s, d, c = (params.length[a], params.kernel[a], params.stride[a],
                         params.dilation[a], params.causal[a])
        q0, q1 = q_offset[a], q_offset[a] + q_shape[a]
        k0, k1 = kv_offset[a], kv_offset[a] + kv_shape[a]
        if not _inside(L, K, s, d, c, q0, q1, k0, k1):
            return None
        e = axis_embedding(L, K, s, d, c, q0, q1, k0, k1)
        if e is None:
            return None
        out.append(e)
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _inside(L, K, s, d, c, q0, q1, k0, k1) -> bool:
    return all(k0 <= lo and hi <= k1
               for lo, hi in (key_bounds(L, K, s, d, c, i) for i in range(q0, q1)))
