"""The reference against an independent brute force, the examples of docs/SEMANTICS.md and dense
identities."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bruteforce
from fastna import _args, reference
from fastna.index_math import window

CAUSAL_2D = list(itertools.product([False, True], repeat=2))
CAUSAL_3D = list(itertools.product([False, True], repeat=3))

# (spatial shape, kernel, stride, dilation, causal, H, H_kv, D, Dv, N_extra)
CASES = [
    ((11,), 3, 1, 1, False, 2, 2, 4, 4, 0),
    ((12,), 4, 1, 1, False, 2, 1, 4, 3, 0),          # even kernel, MQA, Dv != D
    ((13,), 4, 3, 1, False, 1, 1, 3, 3, 0),          # stride
    ((11,), 3, 2, 3, False, 2, 2, 4, 4, 0),          # dilation 3 on 11: groups of 4, 4, 3
    ((11,), 3, 2, 3, True, 2, 2, 4, 4, 2),
    ((10,), 5, 5, 2, True, 2, 1, 4, 4, 0),
    ((9,), 2, 2, 1, True, 1, 1, 2, 2, 3),
    ((16,), 6, 4, 2, False, 4, 2, 4, 5, 1),
] + [
    ((7, 9), (3, 4), (2, 3), (2, 1), c, 2, 1, 4, 3, e) for c, e in zip(CAUSAL_2D, [0, 1, 2, 0])
] + [
    ((6, 8), (2, 5), 1, (1, 1), c, 4, 2, 3, 3, 0) for c in CAUSAL_2D
] + [
    ((4, 5, 6), (2, 3, 4), (1, 2, 3), (2, 1, 1), c, 2, 2, 3, 2, int(c[0]))
    for c in CAUSAL_3D
] + [
    ((5, 4, 7), (3, 2, 3), (3, 1, 2), (1, 2, 2), (True, False, True), 3, 1, 2, 4, 2),
]


def _make(shape, H, Hkv, D, Dv, E, dtype=torch.float64, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, *shape, H, D, generator=g, dtype=dtype)
    k = torch.randn(B, *shape, Hkv, D, generator=g, dtype=dtype)
    v = torch.randn(B, *shape, Hkv, Dv, generator=g, dtype=dtype)
    ek = torch.randn(B, E, Hkv, D, generator=g, dtype=dtype) if E else None
    ev = torch.randn(B, E, Hkv, Dv, generator=g, dtype=dtype) if E else None
    return q, k, v, ek, ev


def _params(q, k, v, kernel, stride, dilation, causal, ek=None, ev=None, scale=None):
    return _args.normalize(q, k, v, kernel, stride, dilation, causal, scale, ek, ev)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-k{c[1]}-s{c[2]}-d{c[3]}-c{c[4]}")
def test_reference_matches_bruteforce(case):
    shape, kernel, stride, dilation, causal, H, Hkv, D, Dv, E = case
    q, k, v, ek, ev = _make(shape, H, Hkv, D, Dv, E)
    p = _params(q, k, v, kernel, stride, dilation, causal, ek, ev, scale=0.7)
    out, lse = reference.attention(q, k, v, p, ek, ev, return_lse=True)
    exp_out, exp_lse = bruteforce.attention(
        q.numpy(), k.numpy(), v.numpy(), p.kernel, p.stride, p.dilation, p.causal, 0.7,
        None if ek is None else ek.numpy(), None if ev is None else ev.numpy())
    assert out.dtype == torch.float64 and lse.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), exp_out, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(lse.numpy(), exp_lse, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("L,K,s,d,c", [(L, K, s, d, c) for L in (5, 8, 11) for K in (2, 3, 4)
                                       for s in (1, 2, K) for d in (1, 2) for c in (False, True)
                                       if s <= K and K * d <= L])
def test_window_agrees_with_bruteforce_predicate(L, K, s, d, c):
    for i in range(L):
        st, en = window(L, K, s, d, c, i)
        got = {g * d + i % d for g in range(st, en)}
        want = {j for j in range(L) if bruteforce.neighbor_on_axis(L, K, s, d, c, i, j)}
        assert got == want, (i, got, want)
        if not c:
            assert len(got) == K  # shifted at borders, never truncated


def _visible_sets(L, K, d=1, s=1, causal=False):
    """Which keys each query attends to, read off the reference itself: zero queries give
    uniform weights over the neighborhood, one-hot values expose it."""
    q = torch.zeros(1, L, 1, 1, dtype=torch.float64)
    k = torch.zeros_like(q)
    v = torch.eye(L, dtype=torch.float64).reshape(1, L, 1, L)
    p = _params(q, k, v, K, s, d, causal)
    out = reference.attention(q, k, v, p)[0, :, 0]
    return [set(torch.nonzero(out[i] > 0).flatten().tolist()) for i in range(L)]


def test_design_worked_examples():
    sets = _visible_sets(10, 3)
    assert sets[0] == {0, 1, 2}
    assert sets[5] == {4, 5, 6}
    assert sets[9] == {7, 8, 9}
    assert _visible_sets(10, 3, d=2)[1] == {1, 3, 5}


def test_even_kernel_has_more_keys_on_the_left():
    # K = 2r: r keys on the left, r - 1 on the right (away from borders).
    assert _visible_sets(12, 4)[6] == {4, 5, 6, 7}


@pytest.mark.parametrize("shape", [(9,), (4, 6), (3, 4, 5)])
def test_full_kernel_is_self_attention(shape):
    q, k, v, _, _ = _make(shape, 4, 2, 8, 6, 0, dtype=torch.float32)
    out = reference.attention(q, k, v, _params(q, k, v, shape, 1, 1, False))
    B, N = q.shape[0], int(np.prod(shape))
    qh = q.reshape(B, N, 4, 8).transpose(1, 2)
    kh = k.reshape(B, N, 2, 8).transpose(1, 2).repeat_interleave(2, dim=1)
    vh = v.reshape(B, N, 2, 6).transpose(1, 2).repeat_interleave(2, dim=1)
    dense = F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).reshape(out.shape)
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5)


def test_stride_equal_kernel_is_blocked_attention():
    q, k, v, _, _ = _make((6, 8), 2, 2, 4, 4, 0)
    out = reference.attention(q, k, v, _params(q, k, v, (3, 4), (3, 4), 1, False))
    expected = torch.empty_like(out)
    for bi in range(2):
        for bj in range(2):
            sl = (slice(None), slice(3 * bi, 3 * bi + 3), slice(4 * bj, 4 * bj + 4))
            qb = q[sl].reshape(2, 12, 2, 4).transpose(1, 2)
            kb = k[sl].reshape(2, 12, 2, 4).transpose(1, 2)
            vb = v[sl].reshape(2, 12, 2, 4).transpose(1, 2)
            expected[sl] = F.scaled_dot_product_attention(qb, kb, vb).transpose(1, 2).reshape(
                2, 3, 4, 2, 4)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, (True, False, True)])
def test_tiny_budget_matches_large_budget(causal):
    q, k, v, ek, ev = _make((5, 6, 7), 4, 2, 4, 3, 2, B=3)
    p = _params(q, k, v, (2, 3, 4), (1, 2, 2), (2, 1, 1), causal, ek, ev)
    big = reference.attention(q, k, v, p, ek, ev, return_lse=True, max_bytes=1 << 30)
    plans = set()
    for budget in (1, 20000, 40000, 600000, 4000000):
        tile, chunk, hc = reference.plan_tiles(p, (5, 6, 7), 4, 2, 4, 3, 2, 8, 3, budget)
        plans.add((tile[0] < 5 or tile[1] < 6 or tile[2] < 7, 1 < chunk < 3, hc < 2))
        small = reference.attention(q, k, v, p, ek, ev, return_lse=True, max_bytes=budget)
        torch.testing.assert_close(small, big, rtol=1e-12, atol=1e-12)
    # the budgets above exercise spatial tiles, batch chunks and kv-head chunks
    assert any(p[0] for p in plans) and any(p[1] for p in plans) and any(p[2] for p in plans)


def test_plan_tiles_respects_budget_for_hunyuan():
    # The hunyuan anchor must be tiled: no [N, N] scores, and the tiles fit the budget.
    q = torch.empty(1, 30, 48, 80, 24, 128, device="meta")
    p = _params(q, q, q, (18, 24, 24), 1, 1, False)
    tile, chunk, hc = reference.plan_tiles(p, (30, 48, 80), 24, 24, 128, 128, 0, 4, 1)
    n_tile = int(np.prod(tile))
    assert chunk == 1 and 1 <= n_tile < 30 * 48 * 80
    assert hc * n_tile * (18 * 24 * 24) * 4 < reference.DEFAULT_MAX_BYTES


def test_dtypes_and_lse_dtype():
    q, k, v, _, _ = _make((8,), 2, 2, 4, 4, 0, dtype=torch.float64)
    p = _params(q, k, v, 3, 1, 1, False)
    want, _ = reference.attention(q, k, v, p, return_lse=True)
    for dt, tol in ((torch.float32, 1e-5), (torch.bfloat16, 3e-2), (torch.float16, 3e-3)):
        out, lse = reference.attention(q.to(dt), k.to(dt), v.to(dt), p, return_lse=True)
        assert out.dtype == dt and lse.dtype == torch.float32
        assert (out.double() - want).norm() / want.norm() < tol


def test_empty_batch():
    q, k, v, ek, ev = _make((6,), 2, 1, 4, 3, 2, B=0)
    out, lse = reference.attention(q, k, v, _params(q, k, v, 3, 1, 1, False, ek, ev), ek, ev,
                                   return_lse=True)
    assert out.shape == (0, 6, 2, 3) and lse.shape == (0, 6, 2)


@pytest.mark.parametrize("budget", [None, 5000])  # 5000 B: 2x2 query tiles
def test_gradcheck(budget):
    q, k, v, ek, ev = _make((5, 4), 2, 1, 3, 2, 2, B=1)
    p = _params(q, k, v, (3, 2), (2, 1), (1, 2), (True, False), ek, ev)
    inputs = [t.requires_grad_() for t in (q, k, v, ek, ev)]

    def f(q, k, v, ek, ev):
        out, lse = reference.attention(q, k, v, p, ek, ev, return_lse=True, max_bytes=budget)
        return out, lse

    assert torch.autograd.gradcheck(f, inputs)
