"""Per-axis neighborhood index math in Python (docs/SEMANTICS.md sections 3-6).

This mirrors include/fastna/common/index_math.hpp; tests/test_index_math_python.py cross-checks the
two through the fastna._C bindings. Windows are half-open [start, end) in group-local
coordinates of the query's dilation group.
"""
from __future__ import annotations

import torch


def group_length(L: int, d: int, g: int) -> int:
    return -(-(L - g) // d)  # ceil((L - g) / d)


def window(L: int, K: int, s: int, d: int, causal: bool, i: int) -> tuple[int, int]:
    """Window of absolute query i: docs/SEMANTICS.md sections 3-4, literally."""
    g = i % d
    il = i // d
    Lg = group_length(L, d, g)
    if causal:
        leader = min((il // s) * s + s - 1, Lg - 1)
        return max(leader - K + 1, 0), min(il + 1, Lg)
    left = K // 2
    leader = min((il // s) * s + (s // 2), Lg - 1)
    start = min(max(leader - left, 0), Lg - K)  # clamp(., 0, Lg - K); Lg >= K since K*d <= L
    return start, start + K


def inverse_window(L: int, K: int, s: int, d: int, causal: bool, j: int) -> tuple[int, int]:
    """Group-local queries [begin, end) of j's group whose windows contain key j.

    Brute force on purpose: it is the Python side of a cross-check, not a hot path.
    """
    g = j % d
    jl = j // d
    hits = [q for q in range(group_length(L, d, g))
            if window(L, K, s, d, causal, q * d + g)[0] <= jl < window(L, K, s, d, causal, q * d + g)[1]]
    if not hits:
        return 0, 0
    return hits[0], hits[-1] + 1


def window_vectors(L: int, K: int, s: int, d: int, causal: bool, device=None):
    """(start, end) for every query of the axis, as int64 tensors of length L (group-local)."""
    se = [window(L, K, s, d, causal, i) for i in range(L)]
    t = torch.tensor(se, dtype=torch.int64, device=device).reshape(L, 2)
    return t[:, 0].contiguous(), t[:, 1].contiguous()


def absolute_key_bounds(L: int, K: int, s: int, d: int, causal: bool):
    """Per query, the absolute key interval [lo, hi) spanned by its window (python lists).

    Used to cut the key box of a query tile: the union of the windows of a tile of queries is
    contained in [min lo, max hi).
    """
    lo, hi = [], []
    for i in range(L):
        st, en = window(L, K, s, d, causal, i)
        g = i % d
        lo.append(g + d * st)
        hi.append(g + d * (en - 1) + 1)
    return lo, hi
