"""Unfused QK / AV ops (docs/SEMANTICS.md section 8, heads-last) against a literal brute force."""
import itertools
import math

import pytest
import torch

import fastna
from fastna import ops_unfused as U
from fastna import reference_unfused

QK = {1: U.na1d_qk, 2: U.na2d_qk, 3: U.na3d_qk}
AV = {1: U.na1d_av, 2: U.na2d_av, 3: U.na3d_av}


# ---------------------------------------------------------------- independent brute force

def literal_window(L, K, d, causal, i):
    """docs/SEMANTICS.md sections 3-4 (stride 1), in plain integers: (start, end) group-local."""
    g, il = i % d, i // d
    Lg = -(-(L - g) // d)
    if causal:
        return max(il - K + 1, 0), min(il + 1, Lg)
    start = min(max(il - K // 2, 0), Lg - K)
    return start, start + K


def slots(shape, kernel, dilation, causal, query):
    """Per window slot w (row-major over k_1..k_r): (key coords or None, rpb offsets)."""
    per_axis = []
    for a, L in enumerate(shape):
        i, K, d = query[a], kernel[a], dilation[a]
        start, end = literal_window(L, K, d, causal[a], i)
        axis = []
        for k in range(K):
            jl = start + k
            axis.append((jl * d + i % d if jl < end else None, jl - i // d + K - 1))
        per_axis.append(axis)
    out = []
    for combo in itertools.product(*per_axis):
        keys = tuple(c[0] for c in combo)
        out.append((None if None in keys else keys, tuple(c[1] for c in combo)))
    return out


def brute_qk(q, k, kernel, dilation, causal, rpb=None):
    shape = q.shape[1:-2]
    B, H, Hkv = q.shape[0], q.shape[-2], k.shape[-2]
    W = math.prod(kernel)
    out = torch.empty(q.shape[:-1] + (W,), dtype=q.dtype)
    for idx in itertools.product(*[range(L) for L in shape]):
        for w, (key, rel) in enumerate(slots(shape, kernel, dilation, causal, idx)):
            for h in range(H):
                sel = (slice(None),) + idx + (h, w)
                if key is None:
                    out[sel] = float("-inf")
                    continue
                val = (q[(slice(None),) + idx + (h,)] *
                       k[(slice(None),) + key + (h // (H // Hkv),)]).sum(-1)
                if rpb is not None:
                    val = val + rpb[(h,) + rel]
                out[sel] = val
    return out


def brute_av(attn, v, kernel, dilation, causal):
    shape = attn.shape[1:-2]
    H, Hkv = attn.shape[-2], v.shape[-2]
    out = torch.zeros(attn.shape[:-1] + (v.shape[-1],), dtype=v.dtype)
    for idx in itertools.product(*[range(L) for L in shape]):
        for w, (key, _) in enumerate(slots(shape, kernel, dilation, causal, idx)):
            if key is None:
                continue
            for h in range(H):
                out[(slice(None),) + idx + (h,)] += (
                    attn[(slice(None),) + idx + (h, w)][:, None] *
                    v[(slice(None),) + key + (h // (H // Hkv),)])
    return out


# (shape, kernel, dilation, causal, heads, heads_kv, with_rpb)
CASES = [
    ((11,), (3,), (1,), (False,), 2, 2, True),
    ((13,), (4,), (3,), (False,), 2, 1, False),      # even K, unequal groups (5, 4, 4)
    ((13,), (4,), (2,), (True,), 2, 2, False),
    ((14,), (5,), (2,), (False,), 1, 1, True),
    ((7, 9), (3, 4), (2, 1), (False, False), 4, 2, False),
    ((7, 9), (3, 3), (1, 2), (True, False), 2, 2, False),
    ((8, 7), (3, 5), (2, 1), (False, False), 2, 2, True),
    ((6, 7), (2, 3), (3, 2), (True, True), 2, 1, False),
    ((5, 6, 7), (2, 3, 3), (1, 2, 2), (False, True, False), 2, 2, False),
    ((5, 6, 7), (3, 3, 3), (1, 1, 2), (False, False, False), 2, 1, True),
]


def _ids(c):
    shape, kernel, dil, causal, H, Hkv, rpb = c
    return (f"S{'x'.join(map(str, shape))}-K{'x'.join(map(str, kernel))}-"
            f"d{'x'.join(map(str, dil))}-c{''.join('1' if x else '0' for x in causal)}-"
            f"H{H}/{Hkv}{'-rpb' if rpb else ''}")


def _inputs(shape, H, Hkv, D=3, Dv=4, B=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn((B, *shape, H, D), generator=g, dtype=dtype)
    k = torch.randn((B, *shape, Hkv, D), generator=g, dtype=dtype)
    v = torch.randn((B, *shape, Hkv, Dv), generator=g, dtype=dtype)
    return q, k, v


def _rpb(H, kernel, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((H, *[2 * x - 1 for x in kernel]), generator=g, dtype=dtype)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_qk_matches_bruteforce(case):
    shape, kernel, dil, causal, H, Hkv, with_rpb = case
    q, k, _ = _inputs(shape, H, Hkv)
    rpb = _rpb(H, kernel) if with_rpb else None
    got = QK[len(shape)](q, k, kernel, dil, causal, rpb=rpb, backend="reference")
    want = brute_qk(q, k, kernel, dil, causal, rpb)
    assert got.shape == want.shape and got.dtype == q.dtype
    # -inf exactly where the window has no key, finite elsewhere.
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    assert torch.isfinite(got[~torch.isinf(want)]).all()
    fin = torch.isfinite(want)
    torch.testing.assert_close(got[fin], want[fin], rtol=1e-12, atol=1e-12)
    if any(causal):
        assert torch.isinf(want).any()  # the case exercises invalid slots at all


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_av_matches_bruteforce(case):
    shape, kernel, dil, causal, H, Hkv, _ = case
    q, k, v = _inputs(shape, H, Hkv)
    W = math.prod(kernel)
    attn = torch.randn((q.shape[0], *shape, H, W), dtype=torch.float64)
    # What callers really feed AV in causal NA: -inf (or its softmax, 0) in invalid slots.
    invalid = torch.isinf(brute_qk(q, k, kernel, dil, causal))
    attn = attn.masked_fill(invalid, float("-inf"))
    got = AV[len(shape)](attn, v, kernel, dil, causal, backend="reference")
    want = brute_av(attn.masked_fill(invalid, 0.0), v, kernel, dil, causal)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_qk_softmax_av_equals_fused_reference(case):
    shape, kernel, dil, causal, H, Hkv, _ = case
    q, k, v = _inputs(shape, H, Hkv, D=5, Dv=3, seed=3)
    r = len(shape)
    scale = q.shape[-1] ** -0.5
    attn = QK[r](q * scale, k, kernel, dil, causal)
    out = AV[r](attn.softmax(-1), v, kernel, dil, causal)
    ref = fastna.neighborhood_attention(q, k, v, kernel, 1, dil, causal, backend="reference")
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_additional_kv_match_fused_reference():
    shape, kernel, dil, causal = (9, 8), (3, 4), (2, 1), (False, True)
    q, k, v = _inputs(shape, 4, 2, D=4, Dv=5)
    g = torch.Generator().manual_seed(7)
    ek = torch.randn((2, 3, 2, 4), generator=g, dtype=torch.float64)
    ev = torch.randn((2, 3, 2, 5), generator=g, dtype=torch.float64)
    scale = 0.3
    attn = U.na2d_qk(q * scale, k, kernel, dil, causal, additional_keys=ek)
    assert attn.shape[-1] == 12 + 3
    # Window slots first, then the additional tokens, like NATTEN 0.17.
    torch.testing.assert_close(attn[..., :12], U.na2d_qk(q * scale, k, kernel, dil, causal))
    torch.testing.assert_close(attn[..., 12:],
                               torch.einsum("bxyhd,behd->bxyhe", q * scale,
                                            ek.repeat_interleave(2, dim=2)))
    out = U.na2d_av(attn.softmax(-1), v, kernel, dil, causal, additional_values=ev)
    ref = fastna.neighborhood_attention(q, k, v, kernel, 1, dil, causal, scale=scale,
                                        additional_keys=ek, additional_values=ev,
                                        backend="reference")
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


# Smaller than CASES: gradcheck's numerical Jacobian costs one forward per input element.
GRAD_CASES = [
    ((7,), (3,), (2,), (False,), 2, 2, True),
    ((9,), (4,), (2,), (True,), 2, 1, False),
    ((6, 5), (3, 3), (2, 1), (False, False), 2, 1, True),
    ((5, 6), (2, 3), (2, 1), (True, True), 2, 1, False),
    ((3, 4, 5), (3, 3, 2), (1, 1, 2), (False, False, True), 2, 2, False),
    ((3, 3, 4), (3, 3, 3), (1, 1, 1), (False, False, False), 2, 1, True),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=_ids)
def test_gradcheck(case):
    shape, kernel, dil, causal, H, Hkv, with_rpb = case
    B = 1
    q, k, v = _inputs(shape, H, Hkv, D=2, Dv=2, B=B, seed=5)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    r = len(shape)
    inputs = [q, k, v]
    if with_rpb:
        inputs.append(_rpb(H, kernel).requires_grad_())

    def f(q, k, v, rpb=None):
        attn = QK[r](q, k, kernel, dil, causal, rpb=rpb)
        return AV[r](attn.softmax(-1), v, kernel, dil, causal)

    # Full Jacobians in 1D; random-projection (fast_mode) checks where they would be slow.
    fast = r > 1
    assert torch.autograd.gradcheck(f, tuple(inputs), eps=1e-6, atol=1e-6, fast_mode=fast)

    # AV alone, with garbage (finite, so finite differences work) in the invalid slots: it
    # must be ignored, i.e. get zero gradient.
    attn = torch.randn((B, *shape, H, math.prod(kernel)), dtype=torch.float64,
                       requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, v: AV[r](a, v, kernel, dil, causal),
                                    (attn, v), eps=1e-6, atol=1e-6, fast_mode=fast)
    if any(causal):
        invalid = torch.isinf(brute_qk(q.detach(), k.detach(), kernel, dil, causal))
        AV[r](attn, v, kernel, dil, causal).sum().backward()
        assert (attn.grad[invalid] == 0).all()


def test_rpb_gradient_and_no_nan_through_causal_softmax():
    q, k, v = _inputs((10, 9), 2, 2)
    q.requires_grad_()
    rpb = _rpb(2, (3, 5)).requires_grad_()
    U.na2d_qk(q, k, (3, 5), (3, 1), rpb=rpb).sum().backward()
    # d/d rpb of sum(weights) = number of (query, slot) pairs using each offset, per head.
    counts = torch.zeros(5, 9, dtype=torch.float64)
    for i in range(10):
        for j in range(9):
            for _, rel in slots((10, 9), (3, 5), (3, 1), (False, False), (i, j)):
                counts[rel] += 1
    torch.testing.assert_close(rpb.grad, (2 * counts).expand(2, 5, 9))

    q.grad = None
    attn = U.na2d_qk(q, k, (4, 3), (2, 3), is_causal=True)
    out = U.na2d_av(attn.softmax(-1), v, (4, 3), (2, 3), is_causal=True)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(q.grad).all()


def test_chunked_equals_unchunked(monkeypatch):
    shape, kernel, dil, causal = (9, 10), (3, 4), (3, 2), (True, False)
    q, k, v = _inputs(shape, 2, 1)

    def run():
        ins = [t.clone().requires_grad_() for t in (q, k, v)]
        attn = U.na2d_qk(ins[0], ins[1], kernel, dil, causal)
        out = U.na2d_av(attn.softmax(-1), ins[2], kernel, dil, causal)
        out.backward(torch.ones_like(out))
        return attn, out, [t.grad for t in ins]

    whole = run()
    # 7 queries of 90 per chunk (ragged last chunk), forward and backward.
    monkeypatch.setattr(reference_unfused, "_CHUNK_ELEMS", 7 * 2 * 12 * 1 * 3)
    chunked = run()
    torch.testing.assert_close(chunked[0], whole[0], rtol=0, atol=0)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-14, atol=1e-14)
    for a, b in zip(chunked[2], whole[2]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_non_contiguous_and_low_precision():
    shape, kernel, dil = (12, 10), (5, 3), (2, 3)
    q, k, v = _inputs(shape, 2, 2, D=8, Dv=8)
    rpb = _rpb(2, kernel)
    want = U.na2d_av(U.na2d_qk(q, k, kernel, dil, rpb=rpb).softmax(-1), v, kernel, dil)
    # Heads-first storage seen through a heads-last view, as the NATTEN shim passes it.
    qf, kf, vf = (t.movedim(-2, 1).contiguous().movedim(1, -2) for t in (q, k, v))
    assert not qf.is_contiguous()
    got = U.na2d_av(U.na2d_qk(qf, kf, kernel, dil, rpb=rpb).softmax(-1), vf, kernel, dil)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for dt in (torch.float32, torch.bfloat16):
        a = U.na2d_qk(q.to(dt), k.to(dt), kernel, dil, rpb=rpb.float())
        assert a.dtype == dt
        o = U.na2d_av(a.float().softmax(-1), v.to(dt), kernel, dil)
        assert o.dtype == dt
        tol = 1e-5 if dt == torch.float32 else 5e-2
        torch.testing.assert_close(o.double(), want, rtol=tol, atol=tol)


def test_memory_sane_long_1d():
    # N^2 scores would be 2^30 elements (8 GiB in fp64); the unfused ops only hold [N, K].
    L, K = 1 << 15, 7
    q = torch.randn(1, L, 1, 2, dtype=torch.float64)
    attn = U.na1d_qk(q, q, K, 3)
    assert attn.shape == (1, L, 1, K)
    out = U.na1d_av(attn.softmax(-1), q, K, 3)
    i = L // 2 + 1
    nb = [i + 3 * t for t in range(-3, 4)]
    w = (q[0, i, 0] * q[0, nb, 0]).sum(-1).softmax(0)
    torch.testing.assert_close(out[0, i, 0], (w[:, None] * q[0, nb, 0]).sum(0))


# ---------------------------------------------------------------- validation and backends

def test_backends():
    q, k, v = _inputs((8,), 1, 1)
    assert "reference" in U.available_backends()
    torch.testing.assert_close(U.na1d_qk(q, k, 3, backend=None),
                               U.na1d_qk(q, k, 3, backend="reference"))
    with pytest.raises(NotImplementedError, match="gemm"):
        U.na1d_qk(q, k, 3, backend="gemm")
    with pytest.raises(NotImplementedError, match="gemm"):
        U.na1d_av(torch.zeros(2, 8, 1, 3, dtype=torch.float64), v, 3, backend="gemm")
    with pytest.raises(ValueError, match="backend"):
        U.na1d_qk(q, k, 3, backend="cutlass")
    with pytest.raises(TypeError, match="backend"):
        U.na1d_qk(q, k, 3, backend=1)


def test_registered_backend_is_preferred():
    calls = []

    class Fake:
        name = "fake-unfused"

        @staticmethod
        def available():
            return True

        @staticmethod
        def check(op, tensors, kernel, dilation, causal):
            return None if all(not c for c in causal) else "causal not supported"

        @staticmethod
        def qk(*args):
            calls.append("qk")
            return reference_unfused.Unfused.qk(*args)

        @staticmethod
        def av(*args):
            calls.append("av")
            return reference_unfused.Unfused.av(*args)

    U.register_backend(Fake)
    try:
        q, k, v = _inputs((8,), 1, 1)
        U.na1d_av(U.na1d_qk(q, k, 3), v, 3)
        assert calls == ["qk", "av"]
        U.na1d_qk(q, k, 3, is_causal=True)  # falls back to the reference
        assert calls == ["qk", "av"]
        with pytest.raises(NotImplementedError, match="causal not supported"):
            U.na1d_qk(q, k, 3, is_causal=True, backend="fake-unfused")
    finally:
        U.unregister_backend("fake-unfused")
    assert "fake-unfused" not in U.available_backends()


@pytest.mark.parametrize("call, exc, match", [
    (lambda q, k, v: U.na2d_qk(q, k, 4, rpb=torch.zeros(2, 7, 7, dtype=q.dtype)),
     ValueError, "odd kernel_size"),
    (lambda q, k, v: U.na2d_qk(q, k, 3, is_causal=(True, False),
                               rpb=torch.zeros(2, 5, 5, dtype=q.dtype)),
     ValueError, "non-causal"),
    (lambda q, k, v: U.na2d_qk(q, k, 3, rpb=torch.zeros(2, 5, 4, dtype=q.dtype)),
     ValueError, r"rpb must have shape \[H, 2\*K_1-1, ...\] = \[2, 5, 5\]"),
    (lambda q, k, v: U.na2d_qk(q, k, 3, rpb=torch.zeros(2, 5, 5, dtype=torch.int64)),
     TypeError, "rpb must be a floating-point"),
    (lambda q, k, v: U.na2d_qk(q, k, 3, rpb=[1.0]), TypeError, "rpb must be a torch.Tensor"),
    (lambda q, k, v: U.na2d_qk(q, k, (3, 5), dilation=(1, 2)), ValueError,
     "kernel_size \\* dilation"),
    (lambda q, k, v: U.na2d_qk(q, k, 1), ValueError, "kernel_size must be >= 2"),
    (lambda q, k, v: U.na2d_qk(q, k, "3"), TypeError, "kernel_size"),
    (lambda q, k, v: U.na2d_qk(q, k, (3, 3, 3)), ValueError, "kernel_size"),
    (lambda q, k, v: U.na2d_qk(q, k, 3, dilation=0), ValueError, "dilation"),
    (lambda q, k, v: U.na2d_qk(q, k, 3, is_causal="yes"), TypeError, "is_causal"),
    (lambda q, k, v: U.na2d_qk(q[..., :1, :], k, 3), ValueError, "H_kv"),
    (lambda q, k, v: U.na2d_qk(q, k[..., :2], 3), ValueError, "key head dim"),
    (lambda q, k, v: U.na2d_qk(q, k.float(), 3), TypeError, "key dtype"),
    (lambda q, k, v: U.na2d_qk(q[0], k[0], 3), ValueError, "query must have 5 dims"),
    (lambda q, k, v: U.na1d_qk(q, k, 3), ValueError, "query must have 4 dims"),
    (lambda q, k, v: U.na2d_qk(q, k, 3, additional_keys=k), ValueError, "additional_keys"),
    (lambda q, k, v: U.na2d_av(torch.zeros(2, 6, 5, 2, 8, dtype=q.dtype), v, 3),
     ValueError, r"attn last dim must be prod\(kernel_size\) = 9"),
    (lambda q, k, v: U.na2d_av(torch.zeros(2, 6, 5, 2, 9, dtype=q.dtype), v[:, :5], 3),
     ValueError, "value batch/spatial shape"),
    (lambda q, k, v: U.na2d_av(torch.zeros(2, 6, 5, 3, 9, dtype=q.dtype), v, 3),
     ValueError, "multiple of value heads"),
    (lambda q, k, v: U.na2d_av(torch.zeros(2, 6, 5, 2, 9, dtype=torch.int32), v, 3),
     TypeError, "attn must be a floating-point"),
    (lambda q, k, v: U.na2d_av(torch.zeros(2, 6, 5, 2, 9, dtype=q.dtype), v[..., 0], 3),
     ValueError, "value must have 5 dims"),
    (lambda q, k, v: U.na2d_av(torch.zeros(2, 6, 5, 2, 9, dtype=q.dtype), v, 3, dilation=(1, 2)),
     ValueError, "kernel_size \\* dilation"),
])
def test_validation(call, exc, match):
    q, k, v = _inputs((6, 5), 2, 2)
    with pytest.raises(exc, match=match):
        call(q, k, v)


def test_double_backward_and_additional_kv_gradcheck():
    q, k, v = _inputs((9,), 2, 1, D=2, Dv=2, B=1, seed=11)
    ek, ev = torch.randn(1, 2, 1, 2, dtype=torch.float64), torch.randn(1, 2, 1, 2,
                                                                       dtype=torch.float64)
    rpb = _rpb(2, (3,))
    args = tuple(t.requires_grad_() for t in (q, k, v, rpb, ek, ev))

    def f(q, k, v, rpb, ek, ev):
        attn = U.na1d_qk(q, k, 3, 2, rpb=rpb, additional_keys=ek)
        return U.na1d_av(attn.softmax(-1), v, 3, 2, additional_values=ev)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(f, args[:4] + (ek.detach(), ev.detach()), eps=1e-6,
                                        atol=1e-6)

    def g(q, k, v):
        attn = U.na1d_qk(q, k, 4, 2, is_causal=True)
        return U.na1d_av(attn.softmax(-1), v, 4, 2, is_causal=True)

    assert torch.autograd.gradgradcheck(g, args[:3], eps=1e-6, atol=1e-6)


def test_autograd_saves_weights_not_gathered_neighbors():
    # Saving the gathered neighbors would cost prod(K) * D per query and head; the ops keep
    # their inputs (q, k, attn, v) only.
    B, S, H, D, K = 2, (16, 16), 2, 16, (5, 5)
    q, k, v = (t.float().requires_grad_() for t in _inputs(S, H, H, D=D, Dv=D, B=B))
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        attn = U.na2d_qk(q, k, K)
        out = U.na2d_av(attn, v, K)
    gathered = B * 256 * 25 * H * D
    assert max(saved) < gathered / 4
    assert sum(saved) <= 4 * attn.numel() + 3 * q.numel()
    out.sum().backward()
    assert q.grad is not None and k.grad is not None and v.grad is not None
