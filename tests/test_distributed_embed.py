"""Slab implementation "embedded" (fastna.distributed._embed, _slab_embed): the embedding's
windows against brute force, and the implementation against the slab reference (forward, lse,
gradients; float64) over random sweeps -- every causal combination, dilation with unequal group
lengths, stride, even kernels, GQA, Dv != D, 1D/2D/3D, windows wider than the query slab. The
process-group runs of the same path: tests/test_distributed_cpu.py (backend="embedded")."""
import itertools
import random

import pytest
import torch

import fastna.distributed as fd
from fastna import _args
from fastna.distributed import _embed, _halo_whole, _plan, _slab, _slab_embed
from fastna.index_math import window
from numerics import random_inputs

TOL = 1e-12


def _neighbors(L, K, s, d, c, i):
    start, end = window(L, K, s, d, c, i)
    return {i % d + d * j for j in range(start, end)}


def _random_axis(rng, L):
    d = rng.randint(1, max(1, L // 3))
    K = rng.randint(2, L // d)
    return K, rng.randint(1, K), d, rng.random() < 0.5


def _query_and_kv_rows(rng, L, K, s, d, c):
    """A random query slab and a kv slab holding its neighborhoods (tight or wider)."""
    q0 = rng.randrange(L)
    q1 = rng.randint(q0 + 1, min(L, q0 + rng.randint(1, 12)))
    rows = _plan.needed_rows(L, K, s, d, c, q0, q1)
    if rng.random() < 0.5:
        return q0, q1, rows[0], rows[-1] + 1
    return q0, q1, rng.randint(0, rows[0]), rng.randint(rows[-1] + 1, L)


def test_embedding_reproduces_the_global_windows():
    """Whenever the kv slab holds the queries' neighborhoods an embedding exists; the ordinary
    problem on its rows gives every query its global neighbor set (brute force through
    index_math on the embedded length); it is at most d * s rows longer than the smallest
    one that does."""
    rng = random.Random(0)
    for _ in range(3000):
        L = rng.randint(2, 40)
        K, s, d, c = _random_axis(rng, L)
        q0, q1, k0, k1 = _query_and_kv_rows(rng, L, K, s, d, c)
        e = _embed.axis_embedding(L, K, s, d, c, q0, q1, k0, k1)
        assert e is not None, (L, K, s, d, c, q0, q1, k0, k1)
        e0, e1 = e
        assert e0 <= min(q0, k0) and max(q1, k1) <= e1 <= L and K * d <= e1 - e0
        for i in range(q0, q1):
            local = {j + e0 for j in _neighbors(e1 - e0, K, s, d, c, i - e0)}
            assert local == _neighbors(L, K, s, d, c, i), (L, K, s, d, c, q0, q1, k0, k1, e)
        smallest = min(b - a for a in range(min(q0, k0) + 1) for b in range(max(q1, k1), L + 1)
                       if _embed.reproduces(L, K, s, d, c, q0, q1, a, b))
        assert e1 - e0 <= smallest + d * s


def test_reproduces_is_exact():
    """The check itself: for every candidate (e0, e1) of small axes, `reproduces` says yes
    exactly when brute force finds the same neighbor sets (and the problem is valid)."""
    rng = random.Random(1)
    for _ in range(150):
        L = rng.randint(2, 14)
        K, s, d, c = _random_axis(rng, L)
        q0 = rng.randrange(L)
        q1 = rng.randint(q0 + 1, L)
        for e0 in range(q0 + 1):
            for e1 in range(q1, L + 1):
                E = e1 - e0
                same = K * d <= E and all(
                    {j + e0 for j in _neighbors(E, K, s, d, c, i - e0)}
                    == _neighbors(L, K, s, d, c, i) for i in range(q0, q1))
                assert _embed.reproduces(L, K, s, d, c, q0, q1, e0, e1) == same


def test_embedding_refuses_a_cut_neighborhood():
    params = _args.normalize(*(torch.zeros(1, 10, 1, 2),) * 3, 5)
    assert _embed.embedding(params, (4,), (1,), (3,), (4,)) is None      # needs rows [2, 7)
    assert _embed.embedding(params, (4,), (1,), (2,), (5,)) == ((2, 7),)


def _causal_combinations(rank):
    return list(itertools.product((False, True), repeat=rank))


def _unaligned_fails(L, K, s, d, c, q0, q1, k0, k1):
    """Whether the embedding starting at the kv slab itself (no alignment to d * s, the least
    end the other rules allow) would give some query a wrong window."""
    e0 = min(q0, k0)
    e1 = min(L, max(_embed.axis_embedding(L, K, s, d, c, q0, q1, k0, k1)[1], e0 + K * d))
    return e1 - e0 >= K * d and not _embed.reproduces(L, K, s, d, c, q0, q1, e0, e1)


def _cases(seed, count, aligned_only=False):
    """Random problems and slabs: every causal combination of each rank in turn, lengths that
    leave dilation groups unequal, even and odd kernels, GQA, Dv != D; the slab offset on a
    random axis. aligned_only: only slabs where the embedding must move its start to line up
    the stride runs and dilation groups."""
    rng = random.Random(seed)
    combos = [(r, c) for r in (1, 2, 3) for c in _causal_combinations(r)]
    i = 0
    while i < count:
        rank, causal = combos[i % len(combos)]
        shape = [rng.randint(4, 11) if rank < 3 else rng.randint(3, 7) for _ in range(rank)]
        kernel, stride, dilation = [], [], []
        for L in shape:
            K, s, d, _ = _random_axis(rng, L)
            kernel.append(K)
            stride.append(s)
            dilation.append(d)
        H, Hkv = rng.choice([(2, 2), (4, 2), (3, 1)])
        D, Dv = rng.choice([(4, 4), (4, 3), (2, 5)])
        a = rng.randrange(rank)
        L = shape[a]
        q0, q1, k0, k1 = _query_and_kv_rows(rng, L, kernel[a], stride[a], dilation[a], causal[a])
        if aligned_only and not _unaligned_fails(L, kernel[a], stride[a], dilation[a],
                                                 causal[a], q0, q1, k0, k1):
            continue
        i += 1
        yield (shape, tuple(kernel), tuple(stride), tuple(dilation), causal, H, Hkv, D, Dv, a,
               (q0, q1, k0, k1), seed * 1000 + i)


def _slabs(t, a, x0, x1):
    return t.narrow(1 + a, x0, x1 - x0)


@pytest.mark.parametrize("seed,count,aligned_only", [(0, 20, False), (1, 20, False),
                                                     (2, 10, True)])
def test_embedded_matches_the_slab_reference(seed, count, aligned_only):
    """Forward (out, lse) and backward (from the forward's out and lse) of the embedded
    implementation equal the reference's, float64; so do a kept-graph part's gradients."""
    seen = set()
    for (shape, kernel, stride, dilation, causal, H, Hkv, D, Dv, a, (q0, q1, k0, k1),
         s) in _cases(seed, count, aligned_only):
        L, K, d = shape[a], kernel[a], dilation[a]
        seen |= {name for name, hit in (
            ("unequal dilation groups", d > 1 and L % d), ("stride", stride[a] > 1),
            ("even kernel", K % 2 == 0), ("GQA", H != Hkv), ("Dv != D", Dv != D),
            ("window wider than the query slab", (K - 1) * d + 1 > q1 - q0)) if hit}
        q, k, v, _, _ = random_inputs(shape, H, Hkv, D, Dv, seed=s)
        params = _args.normalize(q, k, v, kernel, stride, dilation, causal)
        qo, ko = [0] * len(shape), [0] * len(shape)
        qo[a], ko[a] = q0, k0
        qs, ks, vs = _slabs(q, a, q0, q1), _slabs(k, a, k0, k1), _slabs(v, a, k0, k1)
        what = (shape, kernel, stride, dilation, causal, a, (q0, q1, k0, k1))
        assert _slab_embed._boxes(qs, ks, params, qo, ko) is not None, what
        ref_out, ref_lse = _slab.reference_forward(qs, ks, vs, params, qo, ko)
        out, lse = _slab_embed.forward(qs, ks, vs, params, qo, ko)
        torch.testing.assert_close(out, ref_out, rtol=0, atol=TOL, msg=str(what))
        torch.testing.assert_close(lse, ref_lse, rtol=0, atol=TOL, msg=str(what))
        dout = torch.randn_like(ref_out)
        want = _slab.reference_backward(dout, qs, ks, vs, ref_out, ref_lse, params, qo, ko)
        got = _slab_embed.backward(dout, qs, ks, vs, out, lse, params, qo, ko)
        part = _slab_embed.whole(qs, ks, vs, params, qo, ko, keep_graph=True)
        torch.testing.assert_close(part.out, ref_out, rtol=0, atol=TOL)
        for g, p, w in zip(got, part.grads(dout), want):
            torch.testing.assert_close(g, w, rtol=0, atol=TOL, msg=str(what))
            torch.testing.assert_close(p, w, rtol=0, atol=TOL, msg=str(what))
    if not aligned_only:
        assert len(seen) == 6, seen


def test_embedded_through_slab_attention_and_its_fallbacks():
    """backend="embedded" in slab_attention (autograd); partial parts and a kv slab missing
    neighbors go to the reference (which raises for the latter)."""
    q, k, v, _, _ = random_inputs([12, 5], 2, 1, 4, 3, seed=3)
    params = _args.normalize(q, k, v, (5, 3), (2, 1), (2, 1), (True, False))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    qs, ks, vs = leaves[0][:, 6:9], leaves[1][:, 0:9], leaves[2][:, 0:9]
    out, lse = _slab.slab_attention(qs, ks, vs, params, (6, 0), (0, 0), backend="embedded")
    ref, ref_lse = _slab.slab_attention(qs, ks, vs, params, (6, 0), (0, 0), backend="reference")
    torch.testing.assert_close(out, ref, rtol=0, atol=TOL)
    w = torch.randn_like(out)
    got = torch.autograd.grad((out * w).sum(), leaves)
    want = torch.autograd.grad((ref * w).sum(), leaves)
    for g, x in zip(got, want):
        torch.testing.assert_close(g, x, rtol=0, atol=TOL)
    # a neighborhood split over two kv slabs: partial parts, reference path, same merge
    parts = [_slab_embed.forward(q, k[:, a:b], v[:, a:b], params, (0, 0), (a, 0), partial=True)
             for a, b in ((0, 7), (7, 12))]
    merged, _ = _slab.merge(parts)
    full, _ = _slab.reference_forward(q, k, v, params, (0, 0), (0, 0))
    torch.testing.assert_close(merged, full, rtol=0, atol=TOL)
    with pytest.raises(ValueError, match="need key rows"):
        _slab_embed.forward(q[:, 8:9], k[:, 7:9], v[:, 7:9], params, (8, 0), (7, 0))
    # halo mode computes in the inputs' dtype, autocast or not (docs/GUIDE.md)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, lse = _slab_embed.forward(q[:, 6:9], k[:, 0:9], v[:, 0:9], params, (6, 0), (0, 0))
    assert out.dtype == lse.dtype == torch.float64


def test_backend_defaults_and_the_path_text():
    assert fd.slab_backends() == ["embedded", "reference"]
    assert fd.slab_backends("cpu") == ["reference", "embedded"]
    assert fd.slab_backends("cuda") == ["embedded", "reference"]
    assert _slab.implementation(None, torch.device("cpu")).name == "reference"
    assert _slab.implementation(None, torch.device("cuda")).name == "embedded"
    assert _slab.implementation("embedded", torch.device("cpu")).whole is not None
    q = torch.zeros(1, 10, 6, 2, 4)
    text = fd.local_compute_path(q, q, q, (5, 3), shard_axis=0, lengths=[5, 10, 10], rank=1,
                                 backend="embedded")
    assert "offset-slab implementation 'embedded'" in text
    # a separate interior call would compute 52 rows where one call computes 14: one call
    assert "queries [5, 15) (border: waits for its halo, then one call), key rows [3, 17)" in text
    assert "global rows [3, 17), [0, 6) (84 query positions for 60 queries" in text
    slack = _halo_whole.OVERLAP_SLACK
    try:
        _halo_whole.OVERLAP_SLACK = float("inf")
        text = fd.local_compute_path(q, q, q, (5, 3), shard_axis=0, lengths=[5, 10, 10],
                                     rank=1, backend="embedded")
    finally:
        _halo_whole.OVERLAP_SLACK = slack
    assert "queries [7, 13) (interior: runs while the halo flies), key rows [5, 15)" in text
    assert "global rows [3, 9), [0, 6) (36 query positions for 12 queries" in text
    # slabs much wider than the window: the interior's own call costs little, so it overlaps
    wide = torch.zeros(1, 200, 1, 4)
    text = fd.local_compute_path(wide, wide, wide, 5, shard_axis=0, lengths=[200] * 3, rank=1,
                                 backend="embedded")
    assert "queries [202, 398) (interior: runs while the halo flies)" in text
    text = fd.local_compute_path(q, q, q, (5, 3), shard_axis=0, lengths=[5, 10, 10], rank=1)
    assert "'reference' (backend=None's choice on cpu)" in text
    assert "merged through the logsumexp" in text
    with pytest.raises(ValueError, match=r"lengths\[0\] is 5"):
        fd.local_compute_path(q, q, q, 3, lengths=[5, 10, 10], rank=0)
    with pytest.raises(ValueError, match="rank must be an int"):
        fd.local_compute_path(q, q, q, 3, lengths=[5, 10, 10], rank=3)
