"""The FlexAttention NA mask used by the benchmarks must encode exactly the neighborhoods of
docs/SEMANTICS.md, or the competitor's timings would be of another problem."""
import itertools
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from flex_na import na_mask_mod  # noqa: E402


def literal_window(L, K, s, d, causal, i):
    """docs/SEMANTICS.md sections 3-5, step by step, in plain integers."""
    g, il = i % d, i // d
    Lg = -(-(L - g) // d)
    if causal:
        leader = min((il // s) * s + s - 1, Lg - 1)
        return max(leader - K + 1, 0), min(il + 1, Lg)
    left = K // 2
    leader = min((il // s) * s + s // 2, Lg - 1)
    start = min(max(leader - left, 0), Lg - K)
    return start, start + K


def brute_mask(shape, kernel, stride, dilation, causal):
    n = 1
    for L in shape:
        n *= L
    coords = list(itertools.product(*[range(L) for L in shape]))
    m = torch.zeros(n, n, dtype=torch.bool)
    for qi, qc in enumerate(coords):
        for kj, kc in enumerate(coords):
            ok = True
            for a in range(len(shape)):
                d = dilation[a]
                st, en = literal_window(shape[a], kernel[a], stride[a], d, causal[a], qc[a])
                ok &= kc[a] % d == qc[a] % d and st <= kc[a] // d < en
            m[qi, kj] = ok
    return m


CONFIGS = [
    ((10,), (3,), (1,), (1,), (False,)),
    ((11,), (4,), (3,), (2,), (False,)),
    ((13,), (5,), (2,), (2,), (True,)),
    ((7, 9), (3, 4), (2, 1), (2, 2), (False, True)),
    ((6, 8), (2, 3), (2, 3), (1, 2), (True, True)),
    ((4, 5, 6), (2, 3, 3), (1, 2, 3), (2, 1, 2), (True, False, True)),
]


@pytest.mark.parametrize("shape,kernel,stride,dilation,causal", CONFIGS)
def test_flex_mask_matches_design(shape, kernel, stride, dilation, causal):
    n = 1
    for L in shape:
        n *= L
    mask_mod = na_mask_mod(shape, kernel, stride, dilation, causal)
    q = torch.arange(n).view(n, 1)
    k = torch.arange(n).view(1, n)
    got = mask_mod(0, 0, q, k)
    assert torch.equal(got, brute_mask(shape, kernel, stride, dilation, causal))


def test_compiled_flex_outlives_the_recompile_limit():
    # A sweep of more than 8 problems in one process must keep timing compiled FlexAttention,
    # not dynamo's silent eager fallback (see fastna.flex._raise_recompile_limits).
    import torch._dynamo.config as cfg
    from fastna import flex
    # torch < 2.5 calls it cache_size_limit
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    saved = getattr(cfg, name)
    try:
        setattr(cfg, name, 8)
        flex._raise_recompile_limits()
        assert getattr(cfg, name) >= 64
    finally:
        setattr(cfg, name, saved)
