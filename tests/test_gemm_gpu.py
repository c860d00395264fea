"""The GEMM-based unfused backend (backend="gemm": PN / NN / IN kernels of include/fastna/gemm)
against the reference unfused ops in float64 on upcast inputs.

The GPU tests run when CUDA is present and the build has gemm_na instances (FASTNA_KERNELS
including gemm_na); a fixture (re-)registers the backend and restores the registry afterwards.

Covered: qk forward (valid slots and exact -inf in causal slots) and gradients (q, k, rpb), av
forward and gradients (attn, v), for 1D/2D/3D, odd/even K, dilation, causal, rpb, GQA,
float16/bfloat16/float32 (TF32 tensor cores), D 32/64/128; plus backend=None selection,
registration and the ValueErrors of the bindings. Cases whose (rank, dtype, head dim) instance
is not built are skipped, not failed.
"""
import math

import pytest
import torch

from fastna import _ext
from fastna import ops_unfused as U
from fastna.backends import gemm_unfused as G

_GPU_OK = torch.cuda.is_available() and bool(G.gemm_instances())
_SKIP = "needs CUDA and a gemm_na instance (FASTNA_KERNELS including gemm_na)"

# ||x - ref|| / ||ref|| (valid entries). float32 runs on TF32 tensor cores: operands rounded to
# 10 mantissa bits (relative error 2^-11 each), fp32 accumulation.
TOL = {torch.float16: 5e-3, torch.bfloat16: 2.5e-2, torch.float32: 2e-3}

QK = {1: U.na1d_qk, 2: U.na2d_qk, 3: U.na3d_qk}
AV = {1: U.na1d_av, 2: U.na2d_av, 3: U.na3d_av}


@pytest.fixture
def gemm_registered():
    """float32 runs on the kernels only with TF32 allowed: allow it, restore afterwards
    (backend "gemm" is always registered; it is available where a gemm_na instance runs)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32 = tf32


# (lengths, kernel, dilation, causal, rpb, H, Hkv, D, B)
CASES = [
    ((37,), (7,), (1,), (False,), False, 2, 2, 32, 2),
    ((64,), (8,), (2,), (False,), False, 2, 1, 64, 1),          # even K, dilation, GQA 2/1
    ((45,), (5,), (3,), (True,), False, 4, 2, 128, 1),         # causal, unequal dilation groups
    ((33,), (9,), (1,), (False,), True, 2, 2, 64, 2),          # rpb
    ((96,), (96,), (1,), (False,), False, 1, 1, 32, 1),        # K = L (self attention)
    ((14, 13), (7, 5), (1, 1), (False, False), True, 2, 2, 64, 2),
    ((16, 18), (4, 6), (2, 3), (False, False), False, 4, 1, 32, 1),
    ((12, 11), (3, 5), (1, 2), (True, False), False, 2, 2, 128, 1),
    ((10, 12), (5, 4), (1, 1), (False, True), False, 2, 2, 64, 1),
    ((9, 10), (3, 3), (2, 1), (True, True), False, 4, 2, 64, 2),
    ((20, 9), (5, 3), (3, 1), (False, False), True, 2, 2, 32, 1),  # rpb + dilation
    ((8, 9, 10), (3, 3, 3), (1, 1, 1), (False, False, False), True, 2, 2, 64, 1),
    ((8, 8, 12), (2, 4, 3), (2, 1, 3), (False, False, False), False, 2, 1, 32, 1),
    ((6, 7, 8), (3, 3, 4), (1, 2, 1), (True, False, True), False, 4, 2, 128, 1),
    ((5, 6, 7), (5, 3, 3), (1, 1, 2), (True, True, True), False, 2, 2, 64, 1),
]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]
DT_IDS = ["f16", "bf16", "f32"]


def _id(c):
    L, K, d, cz, rpb, H, Hkv, D, B = c
    s = "x".join(map(str, L)) + "_k" + "x".join(map(str, K)) + "_d" + "x".join(map(str, d))
    if any(cz):
        s += "_c" + "".join(str(int(x)) for x in cz)
    if rpb:
        s += "_rpb"
    return s + f"_h{H}-{Hkv}_D{D}_B{B}"


def _need(rank, dtype, D):
    dims = G.head_dims(rank, dtype, torch.device("cuda"))
    if D not in dims:
        pytest.skip(f"no gemm_na instance for rank {rank}, {dtype}, head dim {D} (built: {sorted(dims)})")


def _rel(x, ref, mask=None):
    x, ref = x.double(), ref.double()
    if mask is not None:
        x, ref = x[mask], ref[mask]
    assert not torch.isnan(x).any(), "NaN in the kernel output"
    den = ref.norm().item()
    return (x - ref).norm().item() / max(den, 1e-30)


def _inputs(case, dtype, seed=0):
    L, K, d, cz, use_rpb, H, Hkv, D, B = case
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn((B, *L, H, D), device="cuda", generator=g).to(dtype)
    k = torch.randn((B, *L, Hkv, D), device="cuda", generator=g).to(dtype)
    v = torch.randn((B, *L, Hkv, D), device="cuda", generator=g).to(dtype)
    rpb = None
    if use_rpb:
        rpb = torch.randn((H, *[2 * x - 1 for x in K]), device="cuda", generator=g).to(dtype)
    return q, k, v, rpb


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
@pytest.mark.usefixtures("gemm_registered")
@pytest.mark.gpu
@pytest.mark.skipif(not _GPU_OK, reason=_SKIP)
def test_qk_forward_backward(case, dtype):
    L, K, d, cz, use_rpb, H, Hkv, D, B = case
    rank = len(L)
    _need(rank, dtype, D)
    q, k, _, rpb = _inputs(case, dtype)
    qk = QK[rank]
    q1, k1 = q.clone().requires_grad_(), k.clone().requires_grad_()
    r1 = None if rpb is None else rpb.clone().requires_grad_()
    attn = qk(q1, k1, K, d, cz, rpb=r1, backend="gemm")
    q2, k2 = q.double().requires_grad_(), k.double().requires_grad_()
    r2 = None if rpb is None else rpb.double().requires_grad_()
    ref = qk(q2, k2, K, d, cz, rpb=r2, backend="reference")
    assert attn.dtype == dtype and attn.shape == ref.shape
    inv = torch.isneginf(ref)
    assert torch.equal(torch.isneginf(attn), inv), "-inf slots differ from the reference"
    assert _rel(attn, ref, ~inv) < TOL[dtype]
    # Upstream gradient: random everywhere, causal slots included (they must be ignored).
    g = torch.randn(ref.shape, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1)).to(dtype)
    attn.backward(g)
    ref.backward(g.double())
    assert _rel(q1.grad, q2.grad) < TOL[dtype], "dq"
    assert _rel(k1.grad, k2.grad) < TOL[dtype], "dk"
    if rpb is not None:
        assert r1.grad.dtype == rpb.dtype
        assert _rel(r1.grad, r2.grad) < TOL[dtype], "drpb"


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
@pytest.mark.usefixtures("gemm_registered")
@pytest.mark.gpu
@pytest.mark.skipif(not _GPU_OK, reason=_SKIP)
def test_av_forward_backward(case, dtype):
    L, K, d, cz, _, H, Hkv, D, B = case
    rank = len(L)
    _need(rank, dtype, D)
    q, k, v, _ = _inputs(case, dtype, seed=2)
    # Attention weights: softmax-like positives, -inf in the causal slots past the window (as qk
    # writes them; av must ignore them).
    logits = QK[rank](q.double(), k.double(), K, d, cz, backend="reference")
    inv = torch.isneginf(logits)
    a = torch.rand(logits.shape, device="cuda", dtype=torch.float64).masked_fill(inv, float("-inf")).to(dtype)
    av = AV[rank]
    a1, v1 = a.clone().requires_grad_(), v.clone().requires_grad_()
    out = av(a1, v1, K, d, cz, backend="gemm")
    a2, v2 = a.double().requires_grad_(), v.double().requires_grad_()
    ref = av(a2, v2, K, d, cz, backend="reference")
    assert out.dtype == dtype and out.shape == ref.shape
    assert _rel(out, ref) < TOL[dtype]
    g = torch.randn(ref.shape, device="cuda", generator=torch.Generator(device="cuda").manual_seed(3)).to(dtype)
    out.backward(g)
    ref.backward(g.double())
    assert _rel(v1.grad, v2.grad) < TOL[dtype], "dv"
    assert torch.isfinite(a1.grad).all(), "dattn must be finite (causal slots 0)"
    assert (a1.grad[inv] == 0).all()
    assert _rel(a1.grad, a2.grad, ~inv) < TOL[dtype], "dattn"


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.usefixtures("gemm_registered")
@pytest.mark.gpu
@pytest.mark.skipif(not _GPU_OK, reason=_SKIP)
def test_default_selection_and_fallback(dtype):
    rank, D = 2, None
    dims = G.head_dims(rank, dtype, torch.device("cuda"))
    if not dims:
        pytest.skip("no rank-2 gemm_na instance")
    D = min(dims)
    q = torch.randn((1, 12, 12, 2, D), device="cuda", dtype=dtype)
    assert "gemm" in U.available_backends()
    assert U._select(None, "qk", (q, q, None, None), (3, 3), (1, 1), (False, False)) is G.GemmBackend
    # float64 and CPU tensors fall back to the reference under backend=None and raise when named.
    qd = q.double()
    assert U._select(None, "qk", (qd, qd, None, None), (3, 3), (1, 1), (False, False)).name == "reference"
    with pytest.raises(NotImplementedError, match="float64"):
        U.na2d_qk(qd, qd, 3, backend="gemm")
    qc = q.float().cpu()
    assert U._select(None, "qk", (qc, qc, None, None), (3, 3), (1, 1), (False, False)).name == "reference"
    with pytest.raises(NotImplementedError, match="CUDA"):
        U.na2d_qk(qc, qc, 3, backend="gemm")


# ---- no GPU needed -------------------------------------------------------------------------

def test_available_where_instances_run():
    """backend "gemm" of the unfused ops is available exactly where a gemm_na instance of the
    kernel table runs; otherwise backend=None uses the reference and "gemm" raises."""
    from fake_kernels import faked, row
    q = torch.randn(1, 10, 1, 32)
    with faked([]):
        assert "gemm" not in U.available_backends()
        assert U.na1d_qk(q, q, 3).shape == (1, 10, 1, 3)   # reference
        with pytest.raises(NotImplementedError, match="not available"):
            U.na1d_qk(q, q, 3, backend="gemm")
    with faked([row("gemm_na", "default", 1, torch.float32, 32)]):
        assert "gemm" in U.available_backends()
        assert G.head_dims(1, torch.float32, q.device) == {32}


def test_check_accepts_float32():
    """float32 goes to the TF32 kernels; other dtypes are named in the refusal."""
    q = torch.randn(1, 10, 1, 32)
    why = G.check("qk", (q.double(), q.double(), None, None), (3,), (1,), (False,))
    assert why is not None
    why = G.check("qk", (q, q, None, None), (3,), (1,), (False,))
    assert why is not None and "float32" not in why   # refused for the CPU device, not the dtype


def _params(**kw):
    p = {"dtype": "float16", "batch": 1, "heads": 1, "heads_kv": 1, "dim": 32, "dim_v": 32, "num_extra": 0,
         "length": [16], "kernel": [3], "stride": [1], "dilation": [1], "causal": [False]}
    p.update(kw)
    return p


# The conditions are the gemm_na instances' can_implement: they need a CUDA build.
@pytest.mark.gpu
@pytest.mark.skipif(_ext.load() is None, reason="fastna._C not built")
@pytest.mark.parametrize("kw, match", [
    ({"dtype": "float64"}, "unsupported dtype"),
    ({"num_extra": 1}, "additional KV tokens"),
    ({"stride": [2]}, "stride != 1"),
    ({"batch": 70000}, "must be <= 65535"),
])
def test_binding_value_errors(kw, match):
    C = _ext.load()
    t = (16, [512, 32, 32, 1])
    attn = (16, [48, 3, 3, 1])
    with pytest.raises(ValueError, match=match):
        C.gemm_qk(_params(**kw), t, t, None, attn, 0)
    with pytest.raises(ValueError, match=match):
        C.gemm_av(_params(**kw), attn, t, (32, [512, 32, 32, 1]), 0)
    with pytest.raises(ValueError, match=match):
        C.gemm_inverse(_params(**kw), attn, t, (32, [512, 32, 32, 1]), 0)


@pytest.mark.gpu
@pytest.mark.skipif(_ext.load() is None, reason="fastna._C not built")
def test_binding_float32_strides():
    """16-byte rows: float32 views need strides in multiples of 4 elements, 16-bit ones of 8. The
    float32 call gets past the view checks and stops at a later one (no launch: attn aliases q).
    A CUDA build without a rank-1 head-dim-32 instance refuses both earlier ("not instantiated")."""
    C = _ext.load()
    t = (16, [576, 36, 36, 1])
    with pytest.raises(ValueError, match="multiples of 8 elements|not instantiated"):
        C.gemm_qk(_params(), t, t, None, (4096, [48, 3, 3, 1]), 0)
    with pytest.raises(ValueError, match="must not alias|not instantiated"):
        C.gemm_qk(_params(dtype="float32"), t, t, None, (16, [48, 3, 3, 1]), 0)


@pytest.mark.usefixtures("gemm_registered")
@pytest.mark.gpu
@pytest.mark.skipif(not _GPU_OK, reason=_SKIP)
def test_float32_follows_allow_tf32():
    """float32 on the TF32 kernels only while torch allows TF32 matmuls."""
    dims = G.head_dims(2, torch.float32, torch.device("cuda"))
    if not dims:
        pytest.skip("no rank-2 float32 gemm_na instance")
    q = torch.randn((1, 12, 12, 2, min(dims)), device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    assert U._select(None, "qk", (q, q, None, None), (3, 3), (1, 1), (False, False)).name == "reference"
    with pytest.raises(NotImplementedError, match="allow_tf32"):
        U.na2d_qk(q, q, 3, backend="gemm")
    torch.backends.cuda.matmul.allow_tf32 = True
    assert U._select(None, "qk", (q, q, None, None), (3, 3), (1, 1), (False, False)) is G.GemmBackend


@pytest.mark.usefixtures("gemm_registered")
@pytest.mark.gpu
@pytest.mark.skipif(not _GPU_OK, reason=_SKIP)
def test_one_head_views_from_heads_first_layout():
    """A single head moved from a heads-first layout is 'contiguous' to torch with a stray
    head stride (what the NATTEN shim hands over in a 1-head layer): qk and av still run."""
    dims = G.head_dims(2, torch.float16, torch.device("cuda"))
    if not dims:
        pytest.skip("no rank-2 float16 gemm_na instance")
    D = min(dims)
    q = torch.randn(2, 1, 9, 10, D, device="cuda", dtype=torch.float16).movedim(1, -2)
    attn = U.na2d_qk(q, q, 3, backend="gemm")
    ref = U.na2d_qk(q.double(), q.double(), 3, backend="reference")
    assert _rel(attn, ref) < TOL[torch.float16]
    a = torch.softmax(attn.float(), -1).half().movedim(-2, 1).contiguous().movedim(1, -2)
    out = U.na2d_av(a, q, 3, backend="gemm")
    assert _rel(out, U.na2d_av(a.double(), q.double(), 3, backend="reference")) < TOL[torch.float16]
