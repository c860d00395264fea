"""backend="gemm" of the full attention (fastna.na1d/2d/3d; backends/gemm.py: PN -> softmax ->
NN on the GEMM kernels) against the reference run in float64 on upcast inputs: out, lse and
gradients of q, k, v (and of additional KV tokens), over 1D/2D/3D, odd/even kernels, dilation
with unequal groups, every causal combination, GQA, head dims 32/64/128, outputs poisoned.

The weights round-trip through memory in the input dtype (as NATTEN's unfused kernels did), so
the tolerances are those of a half-precision softmax, looser than the fused backend's.
"""
import itertools

import pytest
import torch

import fastna
from fastna import backends
from fastna._args import normalize
from fastna.backends import gemm as gemm_backend
from fastna.backends import gemm_unfused as G
from numerics import rel_error as _rel

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() and gemm_backend.available()),
                       reason="needs CUDA and fastna._C with gemm_na kernels"),
]

OUT_TOL = {torch.float16: 5e-3, torch.bfloat16: 3e-2, torch.float32: 3e-3}
LSE_TOL = {torch.float16: 1e-2, torch.bfloat16: 6e-2, torch.float32: 5e-3}  # max |lse - ref|
BWD_TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 5e-3}
NA = {1: fastna.na1d, 2: fastna.na2d, 3: fastna.na3d}


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("FASTNA_POISON", "1")


def _dtypes():
    out = []
    for dt in (torch.float16, torch.bfloat16, torch.float32):
        if any(G.head_dims(r, dt, torch.device("cuda")) for r in (1, 2, 3)):
            out.append(dt)
    return out


def _need(rank, dtype, D):
    dims = G.head_dims(rank, dtype, torch.device("cuda"))
    if D not in dims:
        pytest.skip(f"no gemm_na instance for rank {rank}, {dtype}, head dim {D}")


# (shape, kernel, dilation, causal, H, Hkv, D, B)
CASES = [
    ((37,), 7, 1, False, 2, 2, 32, 2),
    ((64,), 8, 2, False, 2, 1, 64, 1),             # even K, dilation, GQA
    ((45,), 5, 3, True, 4, 2, 128, 1),             # causal, unequal dilation groups
    ((96,), 96, 1, False, 1, 1, 64, 1),            # K = L: dense self attention
    ((14, 13), (7, 5), 1, False, 2, 2, 64, 2),
    ((16, 18), (4, 6), (2, 3), False, 4, 1, 32, 1),
    ((9, 10), (3, 3), (2, 1), (True, True), 4, 2, 64, 2),
] + [((11, 10), (5, 4), (1, 2), c, 2, 2, 64, 1)
     for c in itertools.product((False, True), repeat=2)] + [
    ((8, 9, 10), 3, 1, False, 2, 2, 64, 1),
    ((8, 8, 12), (2, 4, 3), (2, 1, 3), False, 2, 1, 32, 1),
] + [((6, 7, 8), (3, 3, 4), (1, 2, 1), c, 2, 2, 128, 1)
     for c in itertools.product((False, True), repeat=3)]


def _id(c):
    return "-".join(str(x) for x in c).replace(" ", "")


def _inputs(shape, H, Hkv, D, B, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def r(*s):
        return torch.randn(*s, device="cuda", generator=g).to(dtype)

    return r(B, *shape, H, D), r(B, *shape, Hkv, D), r(B, *shape, Hkv, D)


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32],
                         ids=["f16", "bf16", "f32"])
def test_forward_backward_matches_reference(case, dtype):
    if dtype not in _dtypes():
        pytest.skip(f"no gemm_na instance for {dtype}")
    shape, K, d, c, H, Hkv, D, B = case
    rank = len(shape)
    _need(rank, dtype, D)
    q, k, v = _inputs(shape, H, Hkv, D, B, dtype)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    with _tf32(dtype):
        out, lse = NA[rank](*leaves, K, dilation=d, is_causal=c, return_lse=True, backend="gemm")
    ref_leaves = [t.double().requires_grad_() for t in (q, k, v)]
    ref, ref_lse = NA[rank](*ref_leaves, K, dilation=d, is_causal=c, return_lse=True,
                            backend="reference")
    assert out.dtype == dtype and out.shape == ref.shape
    assert not torch.isnan(out).any()
    assert _rel(out, ref) < OUT_TOL[dtype]
    assert (lse.double() - ref_lse).abs().max().item() < LSE_TOL[dtype]
    go = torch.randn(ref.shape, device="cuda", generator=torch.Generator(device="cuda")
                     .manual_seed(7)).to(dtype)
    with _tf32(dtype):
        out.backward(go)
    ref.backward(go.double())
    for name, a, b in zip("qkv", leaves, ref_leaves):
        assert _rel(a.grad, b.grad) < BWD_TOL[dtype], f"d{name}"


class _tf32:
    """TF32 on for float32 inputs (the GEMM kernels compute fp32 in TF32 and say so)."""

    def __init__(self, dtype):
        self.on = dtype == torch.float32

    def __enter__(self):
        self.prev = torch.backends.cuda.matmul.allow_tf32
        if self.on:
            torch.backends.cuda.matmul.allow_tf32 = True

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self.prev


def test_additional_kv_merged():
    dtype = _dtypes()[0]
    _need(2, dtype, 64)
    q, k, v = _inputs((12, 11), 4, 2, 64, 2, dtype, seed=3)
    g = torch.Generator(device="cuda").manual_seed(4)
    ek = torch.randn(2, 5, 2, 64, device="cuda", generator=g).to(dtype)
    ev = torch.randn(2, 5, 2, 64, device="cuda", generator=g).to(dtype)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, ek, ev)]
    out = fastna.na2d(*leaves[:3], (5, 3), additional_keys=leaves[3],
                      additional_values=leaves[4], backend="gemm")
    rl = [t.double().requires_grad_() for t in (q, k, v, ek, ev)]
    ref = fastna.na2d(*rl[:3], (5, 3), additional_keys=rl[3], additional_values=rl[4],
                      backend="reference")
    assert _rel(out, ref) < OUT_TOL[dtype]
    go = torch.randn_like(ref)
    out.backward(go.to(dtype))
    ref.backward(go)
    for name, a, b in zip(("q", "k", "v", "ek", "ev"), leaves, rl):
        assert _rel(a.grad, b.grad) < BWD_TOL[dtype], f"d{name}"


def test_compiled_matches_eager():
    dtype = _dtypes()[0]
    _need(2, dtype, 32)
    q, k, v = _inputs((10, 12), 2, 2, 32, 1, dtype, seed=5)

    def f(q, k, v):
        return fastna.na2d(q, k, v, (3, 5), dilation=(2, 1), is_causal=(False, True),
                           backend="gemm")

    eager = f(q, k, v)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v)
    assert torch.equal(eager, compiled)


def test_declines_with_clear_errors():
    dtype = _dtypes()[0]
    dim = min(G.head_dims(2, dtype, torch.device("cuda")) or {64})
    q = torch.randn(1, 12, 12, 2, dim, device="cuda", dtype=dtype)
    with pytest.raises(NotImplementedError, match="stride"):
        fastna.na2d(q, q, q, 3, stride=2, backend="gemm")
    with pytest.raises(NotImplementedError, match="head dim"):
        x = torch.randn(1, 12, 12, 2, 24, device="cuda", dtype=dtype)
        fastna.na2d(x, x, x, 3, backend="gemm")
    with pytest.raises(TypeError, match="dtype"):
        fastna.na2d(q, q.float(), q, 3, backend="gemm")
    # backend=None never lands on gemm while the fused backend takes the call.
    p = normalize(q, q, q, 3, 1, 1, False, None, None, None, rank=2)
    assert backends.select(None, q, q, q, p).name != "gemm" or \
        "fused" not in fastna.available_backends()
