"""The fused CUDA backend against the reference (run in float64 on upcast inputs).

Forward out and lse of every compiled (rank, dtype, head dim, tile) on a fixed sweep and a
seeded random sweep (NATTEN style), outputs poisoned with NaN (FASTNA_POISON=1) so rows the
kernel forgets to write fail; NaN containment; a tensor of more than 2^31 elements; gradients
of every backward mode (FASTNA_FUSED_BACKWARD = fused: the fused backward kernel, naive,
reference), a gradient sweep and bitwise determinism of the fused backward; additional KV
tokens, head dims the build lacks and Dv != D (the wrapper's padding and lse merge).
float32 (TF32 tensor cores) on the forward sweeps with TF32 tolerances, against torch's own TF32
error, and its gradients (the naive backward) and backend=None policy (allow_tf32).
"""
import itertools
import math
import random

import pytest
import torch

import fastna
from fastna import _args, _ext, _policy, _table, backends, reference
from fastna.backends import _fused_launch, _layout, fused, hopper
from fastna.index_math import window
from numerics import rel_error as _rel

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() and fused.available()),
                       reason="needs CUDA and fastna._C with fused kernels"),
]

DTYPES = [torch.float16, torch.bfloat16]
# The forward also takes float32 (TF32 tensor cores: q, k, v, P rounded to a 10-bit mantissa).
FWD_DTYPES = DTYPES + [torch.float32]
OUT_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2,     # ||out - ref|| / ||ref||
           torch.float32: 2e-3}
# max |lse - ref|.  float32: the reference sees the unrounded inputs, so the TF32 rounding of q
# and k (relative 2^-11 each) moves every logit by ~4e-4 (std, unit-variance inputs): 4e-3 is
# ~10 sigma over the largest sweep.  16-bit inputs are exact in the reference.
LSE_TOL = {torch.float16: 1e-3, torch.bfloat16: 1e-3, torch.float32: 4e-3}
BWD_TOL = {torch.float16: 1e-2, torch.bfloat16: 4e-2}


def _rows(op, rank, dtype):
    """Rows of the kernel table for op, rank and dtype that run on this GPU."""
    cc = _ext.device_cc()
    return [r for r in _ext.kernel_table() if r["op"] == op and r["rank"] == rank
            and r["dtype"] == _ext.DTYPE_NAMES.get(dtype) and cc is not None
            and _ext.runs_on(r, cc)]


def _built(rank, dtype):
    """{head_dim: tiles} of fused_fwd compiled for (rank, dtype) and runnable on this GPU."""
    found = {}
    for r in _rows("fused_fwd", rank, dtype):
        found.setdefault(r["head_dim"], set()).add(r["tile"])
    return found


def _all_dims():
    return sorted({r["head_dim"] for r in _ext.kernel_table() if r["op"] == "fused_fwd"}) or [64]


def _built_bwd(rank, dtype):
    """Head dims with a default-tile fused_bwd instance runnable on this GPU."""
    return {r["head_dim"] for r in _rows("fused_bwd", rank, dtype) if r["tile"] == "default"}


def _has_naive_bwd(rank, dtype):
    return bool(_rows("naive_bwd", rank, dtype))


@pytest.fixture
def fused_bwd_calls(monkeypatch):
    """Counts launches of the fused backward kernel (fastna.backends._fused_launch)."""
    calls = []
    orig = _fused_launch.backward

    def spy(*a, **kw):
        calls.append(a[0].shape[-1])
        return orig(*a, **kw)

    monkeypatch.setattr(_fused_launch, "backward", spy)
    return calls


def _need(rank, dtype, D, tile="default"):
    if tile not in _built(rank, dtype).get(D, ()):
        pytest.skip(f"fused instance (rank {rank}, {dtype}, D {D}, tile {tile}) not compiled")


def _na_params(shape, kernel, stride, dilation, causal):
    """Normalized NA parameters of a problem on `shape` (no tensors needed)."""
    q = torch.empty(1, *shape, 1, 8)
    return _args.normalize(q, q, q, kernel, stride, dilation, causal, None, None, None)


def _small_fits(shape, kernel, stride, dilation, causal, dtype=torch.bfloat16):
    """Whether can_implement takes these windows on the small-window tile (at a head dim it
    is compiled for)."""
    dims = [d for d, tiles in _built(len(shape), dtype).items() if _policy.SMALL_TILE in tiles]
    if not dims:
        return False
    p = _na_params(shape, kernel, stride, dilation, causal)
    q = torch.empty(1, *shape, 1, min(dims), dtype=dtype)
    pd = _layout.launch_params(p, q, q, q, _policy.SMALL_TILE)
    return not _ext.can_implement("fused_fwd", pd)


def _inputs(shape, H, Hkv, D, dtype, seed, B=2, packed=False):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def r(*s):
        return torch.randn(*s, device="cuda", generator=g, dtype=torch.float32).to(dtype)

    if packed:  # slices of one qkv projection: non-contiguous, strides multiples of 8
        assert H == Hkv
        return r(B, *shape, H, 3, D).unbind(-2)
    return r(B, *shape, H, D), r(B, *shape, Hkv, D), r(B, *shape, Hkv, D)


def _compare(q, k, v, kernel, stride, dilation, causal, tile=None):
    """(rel err of out, max abs err of lse, message or None) of the fused forward."""
    p = _args.normalize(q, k, v, kernel, stride, dilation, causal, None, None, None)
    assert fused.check(q, k, v, p) is None, fused.check(q, k, v, p)
    out, lse = fused.forward(q, k, v, p, return_lse=True, tile=tile)
    rout, rlse = reference.attention(q.double(), k.double(), v.double(), p, return_lse=True)
    assert out.shape == rout.shape and out.dtype == q.dtype
    assert lse.shape == rlse.shape and lse.dtype == torch.float32
    if not torch.isfinite(out).all():
        return math.inf, math.inf, f"non-finite out ({(~torch.isfinite(out)).sum().item()} elements)"
    if not torch.isfinite(lse).all():
        return math.inf, math.inf, f"non-finite lse ({(~torch.isfinite(lse)).sum().item()} elements)"
    e_out = _rel(out, rout)
    e_lse = (lse.double() - rlse).abs().max().item()
    msg = None
    if e_out > OUT_TOL[q.dtype] or e_lse > LSE_TOL[q.dtype]:
        msg = f"out rel err {e_out:.2e}, lse max err {e_lse:.2e}"
    return e_out, e_lse, msg


# (spatial shape, kernel, stride, dilation, causal, H, H_kv)
CASES = [
    ((33,), 5, 1, 1, False, 2, 2),
    ((64,), 7, 3, 2, False, 4, 2),                   # stride + dilation, GQA
    ((100,), 8, 4, 3, True, 2, 1),                   # even kernel, causal, unequal groups, MQA
    ((31,), 7, 3, 4, True, 2, 2),                    # dilation 4 on 31: unequal groups
    ((37,), 37, 1, 1, False, 1, 1),                  # K = L: self attention
    ((48,), 16, 16, 1, False, 2, 2),                 # stride = K: blocked attention
    ((130,), 2, 2, 1, False, 3, 3),                  # smallest kernel, size past two tiles
    ((1200,), 1000, 1, 1, False, 2, 1),              # large window: hopper's 1D pingpong schedule
] + [
    ((9, 13), (3, 4), (2, 3), (2, 1), c, 4, 2)        # every causal combination in 2D
    for c in itertools.product([False, True], repeat=2)
] + [
    ((15, 17), (5, 5), (5, 2), (3, 1), (False, False), 6, 3),
    ((23, 29), (7, 6), (1, 3), (2, 3), (True, False), 2, 1),   # odd sizes, even kernel
    ((20, 20), (20, 20), (1, 1), (1, 1), (False, False), 2, 2),  # self attention
    ((33, 18), (13, 9), (4, 9), (1, 2), (False, True), 2, 2),
] + [
    ((5, 6, 7), (2, 3, 4), (1, 2, 3), (2, 1, 1), c, 2, 1)       # every causal combination in 3D
    for c in itertools.product([False, True], repeat=3)
] + [
    ((6, 8, 10), (3, 3, 3), (1, 3, 2), (2, 2, 3), (False, False, False), 4, 4),
    ((9, 11, 5), (4, 5, 5), (2, 1, 5), (2, 2, 1), (True, False, True), 3, 1),
]


def _case_id(c):
    return f"{'x'.join(map(str, c[0]))}-K{c[1]}-s{c[2]}-d{c[3]}-c{c[4]}-H{c[5]}/{c[6]}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", FWD_DTYPES, ids=str)
@pytest.mark.parametrize("D", _all_dims())
def test_forward_sweep(case, dtype, D, monkeypatch):
    monkeypatch.setenv("FASTNA_POISON", "1")
    shape, kernel, stride, dilation, causal, H, Hkv = case
    rank = len(shape)
    _need(rank, dtype, D)
    tiles = sorted(_built(rank, dtype)[D])
    for seed, tile in enumerate(tiles):
        if tile == _policy.SMALL_TILE and not _small_fits(shape, kernel, stride, dilation, causal):
            continue  # windows too large for it (tests/test_small_window_gpu.py: its own sweep)
        q, k, v = _inputs(shape, H, Hkv, D, dtype, seed)
        _, _, msg = _compare(q, k, v, kernel, stride, dilation, causal, tile=tile)
        assert msg is None, f"tile {tile}: {msg}"


@pytest.mark.parametrize("case", [c for c in CASES if c[5] == c[6]][::2], ids=_case_id)
@pytest.mark.parametrize("dtype", FWD_DTYPES, ids=str)
def test_forward_packed_qkv(case, dtype, monkeypatch):
    """q, k, v as slices of one [B, *S, H, 3, D] projection: read through strides."""
    monkeypatch.setenv("FASTNA_POISON", "1")
    shape, kernel, stride, dilation, causal, H, _ = case
    rank = len(shape)
    dims = sorted(_built(rank, dtype))
    if not dims:
        pytest.skip("no fused instance for this rank/dtype")
    D = dims[-1]
    q, k, v = _inputs(shape, H, H, D, dtype, 3, packed=True)
    assert not q.is_contiguous() and _layout.aligned(q)
    _, _, msg = _compare(q, k, v, kernel, stride, dilation, causal)
    assert msg is None, msg


def test_forward_misaligned_and_size_one_dims(monkeypatch):
    """Inputs the kernel cannot read in place are copied; size-1 dims' strides are ignored."""
    monkeypatch.setenv("FASTNA_POISON", "1")
    dtype = torch.float16
    dims = sorted(_built(2, dtype))
    if not dims:
        pytest.skip("no 2D float16 fused instance")
    D = dims[0]
    g = torch.Generator(device="cuda").manual_seed(5)
    big = torch.randn(1, 11, 12, 2, D + 1, device="cuda", generator=g).to(dtype)
    q = big[..., 1:]                     # pointer off by one element, strides D + 1
    assert not _layout.aligned(q)
    k = torch.randn(1, 11, 12, 2, D, device="cuda", generator=g).to(dtype)
    v = torch.randn(1, 12, 11, 2, D, device="cuda", generator=g).to(dtype).transpose(1, 2)
    _, _, msg = _compare(q, k, v, (5, 3), 1, 1, False)
    assert msg is None, msg
    # B = 1, H = 1 with odd strides on those size-1 dims (never stepped along: no copy).
    base = torch.randn(10 * 10 * D, device="cuda", generator=g).to(dtype)
    qb = base.as_strided((1, 10, 10, 1, D), (3, 10 * D, D, 5, 1))
    assert _layout.aligned(qb)
    _, _, msg = _compare(qb, qb, qb, 3, 1, 1, False)
    assert msg is None, msg


def _random_config(rng, dims_of, dtypes=DTYPES):
    rank = rng.choice([1, 2, 3])
    dtype = rng.choice(dtypes)
    dims = sorted(dims_of(rank, dtype))
    if not dims:
        return None
    if rank == 1:
        shape = (rng.randint(4, 128),)
    elif rank == 2:
        shape = tuple(rng.randint(4, 24) for _ in range(2))
    else:
        shape = tuple(rng.randint(4, 14) for _ in range(3))
    kernel, stride, dilation, causal = [], [], [], []
    for L in shape:
        K = rng.randint(2, L)
        kernel.append(K)
        stride.append(rng.randint(1, K))
        dilation.append(rng.randint(1, L // K))
        causal.append(rng.random() < 0.5)
    H, Hkv = rng.choice([(1, 1), (2, 2), (3, 3), (4, 2), (4, 1), (6, 2)])
    D = rng.choice(dims)
    tiles = sorted(t for t in dims_of(rank, dtype)[D]
                   if t != _policy.SMALL_TILE or _small_fits(shape, kernel, stride, dilation, causal))
    return dict(shape=shape, kernel=tuple(kernel), stride=tuple(stride),
                dilation=tuple(dilation), causal=tuple(causal), H=H, Hkv=Hkv, D=D,
                dtype=dtype, B=rng.choice([1, 2]), tile=rng.choice(tiles))


def test_forward_random_sweep(monkeypatch):
    """>= 500 seeded random problems (rank 1-3, K in [2, L], stride in [1, K], dilation in
    [1, L // K], random causal per axis, random GQA, head dim and tile); reports every failure."""
    _random_sweep(monkeypatch, DTYPES, 20261126, 520, 500)


def test_forward_random_sweep_float32(monkeypatch):
    """The random sweep on float32 (TF32 tensor cores): >= 250 problems."""
    _random_sweep(monkeypatch, [torch.float32], 20261127, 260, 250)


def _random_sweep(monkeypatch, dtypes, seed, n, n_min):
    monkeypatch.setenv("FASTNA_POISON", "1")
    rng = random.Random(seed)
    cache = {}

    def dims_of(rank, dtype):
        if (rank, dtype) not in cache:
            cache[rank, dtype] = _built(rank, dtype)
        return cache[rank, dtype]

    if not any(dims_of(r, dt) for r in (1, 2, 3) for dt in dtypes):
        pytest.skip(f"no fused instance for {dtypes}")
    failures, ran, tries = [], 0, 0
    while ran < n and tries < 5000:
        tries += 1
        cfg = _random_config(rng, dims_of, dtypes)
        if cfg is None:
            continue
        ran += 1
        q, k, v = _inputs(cfg["shape"], cfg["H"], cfg["Hkv"], cfg["D"], cfg["dtype"], seed=ran,
                          B=cfg["B"])
        try:
            _, _, msg = _compare(q, k, v, cfg["kernel"], cfg["stride"], cfg["dilation"],
                                 cfg["causal"], tile=cfg["tile"])
        except Exception as e:  # noqa: BLE001 - report, keep sweeping
            msg = f"{type(e).__name__}: {e}"
        if msg is not None:
            failures.append(f"{cfg}: {msg}")
    assert ran >= n_min, f"only {ran} configs had a compiled instance"
    assert not failures, f"{len(failures)}/{ran} configs failed:\n" + "\n".join(failures[:30])


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_nan_query_stays_in_its_row(rank, monkeypatch):
    """A NaN in one query token's q makes exactly that token's output rows NaN (for the head
    it is in); every other row is unaffected.  (A NaN key would spread to every query that
    sees it, which is expected and not tested here.)"""
    monkeypatch.setenv("FASTNA_POISON", "1")
    dtype = torch.float16
    dims = sorted(_built(rank, dtype))
    if not dims:
        pytest.skip("no fused instance")
    D = dims[0]
    shape = {1: (40,), 2: (12, 13), 3: (6, 7, 5)}[rank]
    q, k, v = _inputs(shape, 2, 2, D, dtype, seed=11)
    clean = q.clone()
    idx = (1,) + tuple(s // 2 for s in shape) + (1,)   # batch 1, middle token, head 1
    q[idx] = float("nan")
    p = _args.normalize(q, k, v, 3, 1, 1, False, None, None, None)
    out, lse = fused.forward(q, k, v, p, return_lse=True)
    assert torch.isnan(out[idx]).all()
    bad = torch.zeros(out.shape[:-1], dtype=torch.bool, device=out.device)
    bad[idx] = True
    assert torch.isfinite(out[~bad]).all() and torch.isfinite(lse[~bad]).all()
    rout, rlse = reference.attention(clean.double(), k.double(), v.double(), p, return_lse=True)
    assert _rel(out[~bad], rout[~bad]) < OUT_TOL[dtype]
    assert (lse[~bad].double() - rlse[~bad]).abs().max().item() < LSE_TOL[dtype]


def test_more_than_2_31_elements():
    """q/k/v/out of more than 2^31 elements: 64-bit offsets in loads, stores and lse."""
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2**30:
        pytest.skip(f"needs 24 GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    dtype = torch.float16
    dims = sorted(_built(1, dtype))
    if not dims:
        pytest.skip("no 1D float16 fused instance")
    D, B, H = dims[-1], 2, 8
    L = 2**31 // (B * H * D) + 24
    assert B * L * H * D > 2**31
    K, s, d = 7, 2, 3
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, L, H, D, device="cuda", dtype=dtype, generator=g)
    k = torch.randn(B, L, H, D, device="cuda", dtype=dtype, generator=g)
    v = torch.randn(B, L, H, D, device="cuda", dtype=dtype, generator=g)
    p = _args.normalize(q, k, v, K, s, d, False, None, None, None)
    out, lse = fused.forward(q, k, v, p, return_lse=True)
    torch.cuda.synchronize()
    rows = [(0, 0, 0), (0, L - 1, 7), (1, 0, 0), (1, L // 2 + 1, 3), (1, L - 1, 7), (1, L - 5, 2)]
    rows += [(1, random.Random(i).randrange(L), i % H) for i in range(10)]
    for b, i, h in rows:
        st, en = window(L, K, s, d, False, i)
        keys = torch.arange(st, en, device="cuda") * d + i % d
        qi = q[b, i, h].double()
        sc = (k[b, keys, h].double() @ qi) * p.scale
        ref_lse = torch.logsumexp(sc, 0)
        ref = torch.softmax(sc, 0) @ v[b, keys, h].double()
        assert _rel(out[b, i, h], ref) < OUT_TOL[dtype], (b, i, h)
        assert abs(lse[b, i, h].item() - ref_lse.item()) < LSE_TOL[dtype], (b, i, h)
    del q, k, v, out, lse
    torch.cuda.empty_cache()


GRAD_CASES = [
    ((40,), 7, 2, 2, True, 2, 1),
    ((10, 12), (3, 4), (2, 1), (2, 1), (False, True), 4, 2),
    ((5, 6, 7), (2, 3, 4), (1, 2, 1), (2, 1, 1), (True, False, False), 2, 2),
]


def _ref_grads(leaves, p, dout, dlse=None):
    ref = [t.detach().double().requires_grad_() for t in leaves]
    rout, rlse = reference.attention(*ref, p, return_lse=True)
    outs, gs = [rout], [dout.double()]
    if dlse is not None:
        outs.append(rlse)
        gs.append(dlse.double())
    return torch.autograd.grad(outs, ref, gs)


@pytest.mark.parametrize("case", GRAD_CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["fused", "naive", "reference"])
def test_gradients(case, dtype, mode, monkeypatch, fused_bwd_calls):
    monkeypatch.setenv("FASTNA_POISON", "1")
    monkeypatch.setenv("FASTNA_FUSED_BACKWARD", mode)
    shape, kernel, stride, dilation, causal, H, Hkv = case
    rank = len(shape)
    dims = sorted(_built(rank, dtype))
    if not dims:
        pytest.skip("no fused instance")
    if mode == "naive" and not _has_naive_bwd(rank, dtype):
        pytest.skip("no naive_bwd instance")
    D = dims[0]
    if mode == "fused" and D not in _built_bwd(rank, dtype):
        pytest.skip("no fused_bwd instance")
    leaves = [t.requires_grad_() for t in _inputs(shape, H, Hkv, D, dtype, seed=7)]
    kw = dict(stride=stride, dilation=dilation, is_causal=causal)
    out = fastna.neighborhood_attention(*leaves, kernel, backend="fused", **kw)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, dout)
    p = _args.normalize(*leaves, kernel, stride, dilation, causal, None, None, None)
    assert len(fused_bwd_calls) == (mode == "fused")
    for name, g, rg in zip("qkv", grads, _ref_grads(leaves, p, dout)):
        assert torch.isfinite(g).all(), name
        assert _rel(g, rg) < BWD_TOL[dtype], (name, _rel(g, rg))


@pytest.mark.parametrize("mode", ["fused", "reference"])
def test_gradients_packed_qkv_and_lse(mode, monkeypatch, fused_bwd_calls):
    """Gradients into one packed qkv leaf, with a gradient through the lse (fused: its dlse
    input; the naive backward has none)."""
    monkeypatch.setenv("FASTNA_FUSED_BACKWARD", mode)
    monkeypatch.setenv("FASTNA_POISON", "1")
    dtype = torch.bfloat16
    dims = sorted(_built(2, dtype))
    if not dims:
        pytest.skip("no 2D bfloat16 fused instance")
    D = dims[0]
    if mode == "fused" and D not in _built_bwd(2, dtype):
        pytest.skip("no fused_bwd instance")
    g = torch.Generator(device="cuda").manual_seed(9)
    qkv = torch.randn(2, 9, 11, 2, 3, D, device="cuda", generator=g).to(dtype).requires_grad_()
    q, k, v = qkv.unbind(-2)
    out, lse = fastna.na2d(q, k, v, (3, 5), dilation=(2, 1), return_lse=True, backend="fused")
    dout, dlse = torch.randn_like(out), torch.randn_like(lse)
    (gqkv,) = torch.autograd.grad([out, lse], [qkv], [dout, dlse])
    ref = qkv.detach().double().requires_grad_()
    p = _args.normalize(q, k, v, (3, 5), 1, (2, 1), False, None, None, None)
    rout, rlse = reference.attention(*ref.unbind(-2), p, return_lse=True)
    (rg,) = torch.autograd.grad([rout, rlse], [ref], [dout.double(), dlse.double()])
    assert len(fused_bwd_calls) == (mode == "fused")
    assert _rel(gqkv, rg) < BWD_TOL[dtype]


def test_selected_by_default_and_declines():
    dtype = torch.float16
    dims = sorted(_built(2, dtype))
    if not dims:
        pytest.skip("no 2D float16 fused instance")
    D = dims[0]
    q, k, v = _inputs((8, 8), 2, 2, D, dtype, seed=1)
    p = _args.normalize(q, k, v, 3, 1, 1, False, None, None, None)
    assert "fused" in fastna.available_backends()
    want = hopper if hopper.check(q, k, v, p) is None else fused
    assert backends.select(None, q, k, v, p) is want
    # declined with a reason: float64, a head dim larger than every compiled one
    assert "float16, bfloat16 and float32" in fused.check(q.double(), k.double(), v.double(), p)
    big = max(_all_dims()) + 8
    qb = torch.randn(2, 8, 8, 2, big, device="cuda", dtype=dtype)
    assert f"head dim {big} not instantiated" in fused.check(qb, qb, qb, p)
    assert "no larger compiled head dim" in fused.check(qb, qb, qb, p)
    assert f"D={D}, Dv={big}" in fused.check(q, k, qb, p)
    with pytest.raises(TypeError, match="backend='fused'.*float16, bfloat16 and float32"):
        fastna.na2d(q.double(), k.double(), v.double(), 3, backend="fused")
    # accepted now: Dv != D, additional KV tokens, a head dim the build lacks (zero-padded)
    assert fused.check(q, k, v[..., :D // 2], p) is None
    ek = torch.randn(2, 3, 2, D, device="cuda", dtype=dtype)
    assert fused.check(q, k, v, p, ek, ek) is None
    q48 = torch.randn(2, 8, 8, 2, 48, device="cuda", dtype=dtype)
    if _table.padded_head_dim(48, 48, _built(2, dtype)) is not None:
        assert fused.check(q48, q48, q48, p) is None
        # the Hopper tile of the fused forward goes first where it runs this (padded) head dim
        want = hopper if hopper.check(q48, q48, q48, p) is None else fused
        assert backends.select(None, q48, q48, q48, p) is want
    # backend=None falls through to another backend for what fused declines
    out = fastna.na2d(qb, qb, qb, 3)
    assert out.shape == qb.shape


def test_binding_errors_name_the_condition():
    C = _ext.load()
    dtype = torch.float16
    dims = sorted(_built(2, dtype))
    if not dims:
        pytest.skip("no 2D float16 fused instance")
    D = dims[0]
    q = torch.randn(1, 8, 8, 2, D, device="cuda", dtype=dtype)
    out = torch.empty_like(q)

    def pd(**kw):
        d = dict(dtype="float16", batch=1, heads=2, heads_kv=2, dim=D, dim_v=D, num_extra=0,
                 length=[8, 8], kernel=[3, 3], stride=[1, 1], dilation=[1, 1],
                 causal=[False, False])
        d.update(kw)
        return d

    def ta(t, strides=None):
        return (t.data_ptr(), list(t.stride()) if strides is None else strides)

    s = torch.cuda.current_stream().cuda_stream
    with pytest.raises(ValueError, match="fused: head dim 48 not instantiated"):
        q48 = torch.randn(1, 8, 8, 2, 48, device="cuda", dtype=dtype)
        C.fused_forward(pd(dim=48, dim_v=48), ta(q48), ta(q48), ta(q48), ta(q48), None, s)
    with pytest.raises(ValueError, match=r"fused: Dv != D"):
        C.fused_forward(pd(dim_v=D // 2), ta(q), ta(q), ta(q), ta(out), None, s)
    with pytest.raises(ValueError, match="fused: additional KV tokens not supported yet"):
        C.fused_forward(pd(num_extra=1), ta(q), ta(q), ta(q), ta(out), None, s)
    with pytest.raises(ValueError, match="fused: stride_dim != 1"):
        C.fused_forward(pd(), ta(q, [8 * 8 * 2 * D, 8 * 2 * D, 2 * D, D, 2]), ta(q), ta(q),
                        ta(out), None, s)
    with pytest.raises(ValueError, match="unsupported dtype 'float64'"):
        C.fused_forward(pd(dtype="float64"), ta(q), ta(q), ta(q), ta(out), None, s)
    with pytest.raises(ValueError, match="fused: q data pointer is not 16-byte aligned"):
        C.fused_forward(pd(), (q.data_ptr() + 2, list(q.stride())), ta(q), ta(q), ta(out), None, s)
    with pytest.raises(ValueError, match="fused: tile 'nope' not instantiated"):
        C.fused_forward(pd(tile="nope"), ta(q), ta(q), ta(q), ta(out), None, s)
    # lse = None is allowed
    C.fused_forward(pd(), ta(q), ta(q), ta(q), ta(out), None, s)
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------ additional KV tokens,
# head dims the build lacks and Dv != D (zero-padded to a compiled head dim, extras merged
# through the logsumexp by the wrapper: fastna/backends/_fused_family.py, _merge.py)

def _inputs_x(shape, H, Hkv, D, Dv, E, dtype, seed, B=2):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def r(*s):
        return torch.randn(*s, device="cuda", generator=g, dtype=torch.float32).to(dtype)

    q, k, v = r(B, *shape, H, D), r(B, *shape, Hkv, D), r(B, *shape, Hkv, Dv)
    ek = r(B, E, Hkv, D) if E else None
    ev = r(B, E, Hkv, Dv) if E else None
    return q, k, v, ek, ev


def _compare_x(q, k, v, ek, ev, kernel, stride, dilation, causal):
    """Message or None: fused forward (out, lse) vs the float64 reference, with extras."""
    p = _args.normalize(q, k, v, kernel, stride, dilation, causal, None, ek, ev)
    assert fused.check(q, k, v, p, ek, ev) is None, fused.check(q, k, v, p, ek, ev)
    out, lse = fused.forward(q, k, v, p, ek, ev, return_lse=True)
    d = (lambda t: None if t is None else t.double())
    rout, rlse = reference.attention(q.double(), k.double(), v.double(), p, d(ek), d(ev),
                                     return_lse=True)
    assert out.shape == rout.shape and out.dtype == q.dtype and out.is_contiguous()
    assert lse.shape == rlse.shape and lse.dtype == torch.float32
    if not (torch.isfinite(out).all() and torch.isfinite(lse).all()):
        return "non-finite out or lse"
    e_out, e_lse = _rel(out, rout), (lse.double() - rlse).abs().max().item()
    if e_out > OUT_TOL[q.dtype] or e_lse > LSE_TOL[q.dtype]:
        return f"out rel err {e_out:.2e}, lse max err {e_lse:.2e}"
    return None


# (spatial shape, kernel, stride, dilation, causal, H, H_kv)
EXTRA_CASES = [
    ((40,), 7, 2, 2, True, 4, 2),
    ((33,), 5, 1, 1, False, 2, 2),
    ((9, 13), (3, 4), (2, 3), (2, 1), (True, False), 4, 1),
    ((15, 17), (5, 5), (5, 2), (3, 1), (False, False), 6, 3),
    ((5, 6, 7), (2, 3, 4), (1, 2, 3), (2, 1, 1), (False, True, True), 2, 1),
    ((6, 8, 10), (3, 3, 3), (1, 3, 2), (2, 2, 3), (False, False, False), 4, 4),
]


@pytest.mark.parametrize("case", EXTRA_CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("E", [1, 7])
def test_forward_additional_kv(case, dtype, E, monkeypatch):
    monkeypatch.setenv("FASTNA_POISON", "1")
    shape, kernel, stride, dilation, causal, H, Hkv = case
    dims = sorted(_built(len(shape), dtype))
    if not dims:
        pytest.skip("no fused instance")
    D = dims[0]
    q, k, v, ek, ev = _inputs_x(shape, H, Hkv, D, D, E, dtype, seed=E)
    msg = _compare_x(q, k, v, ek, ev, kernel, stride, dilation, causal)
    assert msg is None, msg


@pytest.mark.parametrize("case", EXTRA_CASES[::2], ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D,Dv", [(8, 8), (40, 40), (96, 96), (200, 200), (64, 32), (32, 128),
                                  (24, 72)])
@pytest.mark.parametrize("E", [0, 3])
def test_forward_padded_head_dims(case, dtype, D, Dv, E, monkeypatch):
    monkeypatch.setenv("FASTNA_POISON", "1")
    shape, kernel, stride, dilation, causal, H, Hkv = case
    if _table.padded_head_dim(D, Dv, _built(len(shape), dtype)) is None:
        pytest.skip(f"no compiled head dim >= {max(D, Dv)}")
    q, k, v, ek, ev = _inputs_x(shape, H, Hkv, D, Dv, E, dtype, seed=D + Dv)
    msg = _compare_x(q, k, v, ek, ev, kernel, stride, dilation, causal)
    assert msg is None, msg


@pytest.mark.parametrize("case", GRAD_CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D,Dv,E", [(32, 32, 3), (40, 24, 0), (40, 24, 7), (8, 8, 1)])
@pytest.mark.parametrize("mode", ["auto", "fused", "naive"])
def test_gradients_padded_and_extras(case, dtype, D, Dv, E, mode, monkeypatch, fused_bwd_calls):
    """Gradients of q, k, v, extras (and through the lse) vs the float64 reference.

    With extras, or with_lse, the kernel's lse gets a gradient (the merge): fused takes it as
    dlse; naive then falls back to the reference recomputation."""
    monkeypatch.setenv("FASTNA_POISON", "1")
    if mode != "auto":
        monkeypatch.setenv("FASTNA_FUSED_BACKWARD", mode)
    shape, kernel, stride, dilation, causal, H, Hkv = case
    rank = len(shape)
    if _table.padded_head_dim(D, Dv, _built(rank, dtype)) is None:
        pytest.skip(f"no compiled head dim >= {max(D, Dv)}")
    if mode == "naive" and not _has_naive_bwd(rank, dtype):
        pytest.skip("no naive_bwd instance")
    P = _table.padded_head_dim(D, Dv, _built(rank, dtype))
    has_fused = P in _built_bwd(rank, dtype)
    if mode == "fused" and not has_fused:
        pytest.skip("no fused_bwd instance at the padded head dim")
    ts = _inputs_x(shape, H, Hkv, D, Dv, E, dtype, seed=13)
    leaves = [t.requires_grad_() for t in ts if t is not None]
    ek, ev = (leaves[3], leaves[4]) if E else (None, None)
    p = _args.normalize(*leaves[:3], kernel, stride, dilation, causal, None, ek, ev)
    assert fused.check(*leaves[:3], p, ek, ev) is None
    for with_lse in (False, True):
        # the backend's own autograd (fastna's API may wrap it in the custom op fastna::na_*)
        out, lse = fused.forward(*leaves[:3], p, ek, ev, return_lse=True)
        dout = torch.randn_like(out)
        dlse = torch.randn_like(lse) if with_lse else None
        outs, gs = ([out, lse], [dout, dlse]) if with_lse else ([out], [dout])
        grads = torch.autograd.grad(outs, leaves, gs)
        ref = [t.detach().double().requires_grad_() for t in leaves]
        rout, rlse = reference.attention(*ref[:3], p, *(ref[3:] if E else (None, None)),
                                         return_lse=True)
        routs, rgs = ([rout, rlse], [dout.double(), dlse.double()]) if with_lse else \
            ([rout], [dout.double()])
        rgrads = torch.autograd.grad(routs, ref, rgs)
        for name, g, rg in zip(["q", "k", "v", "ek", "ev"], grads, rgrads):
            assert g.shape == rg.shape and g.dtype == dtype, name
            assert torch.isfinite(g).all(), (name, with_lse)
            assert _rel(g, rg) < BWD_TOL[dtype], (name, with_lse, _rel(g, rg))
    # one fused backward call per backward (with_lse False and True) where it runs
    assert fused_bwd_calls == ([P, P] if has_fused and mode != "naive" else [])


# --------------------------------------------------------------- the fused backward kernel

# (spatial shape, kernel, stride, dilation, causal, H, H_kv): small, each feature once or twice
BWD_SWEEP = [
    ((37,), 7, 1, 1, False, 2, 2),
    ((70,), 9, 4, 2, True, 4, 2),                      # stride + dilation + causal, GQA
    ((29,), 29, 1, 1, False, 2, 1),                    # self attention, MQA
    ((24,), 8, 8, 1, False, 2, 2),                     # blocked
] + [
    ((11, 13), (3, 4), (2, 1), (2, 3), c, 4, 2)         # every causal combination in 2D
    for c in itertools.product([False, True], repeat=2)
] + [
    ((17, 9), (9, 9), (1, 1), (1, 1), (False, False), 3, 1),   # K = L on one axis, MQA
    ((5, 6, 7), (2, 3, 4), (1, 2, 3), (2, 1, 1), (True, False, True), 2, 1),
    ((6, 5, 8), (3, 3, 3), (1, 1, 2), (1, 1, 2), (False, True, False), 4, 2),
    ((4, 4, 4), (3, 3, 3), (1, 1, 1), (1, 1, 1), (True, True, True), 2, 2),
]


@pytest.mark.parametrize("case", BWD_SWEEP, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", [32, 64, 128])
def test_fused_backward_sweep(case, dtype, D, monkeypatch, fused_bwd_calls):
    """dq, dk, dv (out and lse gradients) of the fused backward vs the float64 reference."""
    monkeypatch.setenv("FASTNA_POISON", "1")
    monkeypatch.setenv("FASTNA_FUSED_BACKWARD", "fused")
    shape, kernel, stride, dilation, causal, H, Hkv = case
    rank = len(shape)
    if D not in _built(rank, dtype) or D not in _built_bwd(rank, dtype):
        pytest.skip(f"no fused_fwd/fused_bwd instance (rank {rank}, {dtype}, D {D})")
    leaves = [t.requires_grad_() for t in _inputs(shape, H, Hkv, D, dtype, seed=D + rank,
                                                   B=1 + (rank == 1))]
    out, lse = fastna.neighborhood_attention(*leaves, kernel, stride=stride, dilation=dilation,
                                             is_causal=causal, return_lse=True, backend="fused")
    dout, dlse = torch.randn_like(out), torch.randn_like(lse)
    grads = torch.autograd.grad([out, lse], leaves, [dout, dlse])
    assert fused_bwd_calls == [D]
    p = _args.normalize(*leaves, kernel, stride, dilation, causal, None, None, None)
    for name, g, rg in zip("qkv", grads, _ref_grads(leaves, p, dout, dlse)):
        assert torch.isfinite(g).all(), name
        assert _rel(g, rg) < BWD_TOL[dtype], (name, _rel(g, rg))


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("via", ["api", "function"])
def test_fused_backward_is_deterministic(rank, via, monkeypatch, fused_bwd_calls):
    """Two backward runs give bitwise identical dq, dk, dv (no atomics in the kernels)."""
    monkeypatch.setenv("FASTNA_FUSED_BACKWARD", "fused")
    dtype = torch.bfloat16
    dims = sorted(_built_bwd(rank, dtype) & set(_built(rank, dtype)))
    if not dims:
        pytest.skip("no fused_bwd instance")
    D = dims[-1]
    shape, kernel = {1: ((300,), 31), 2: ((24, 20), (7, 9)), 3: ((8, 10, 9), (3, 5, 3))}[rank]
    leaves = [t.requires_grad_() for t in _inputs(shape, 4, 2, D, dtype, seed=3)]
    p = _args.normalize(*leaves, kernel, 1, 1, False, None, None, None)
    runs = []
    for _ in range(2):
        if via == "api":
            out, lse = fastna.neighborhood_attention(*leaves, kernel, return_lse=True,
                                                     backend="fused")
        else:
            out, lse = fused.forward(*leaves, p, return_lse=True)
        g = torch.Generator(device="cuda").manual_seed(1)
        dout = torch.randn(out.shape, device="cuda", generator=g).to(out.dtype)
        dlse = torch.randn(lse.shape, device="cuda", generator=g)
        runs.append(torch.autograd.grad([out, lse], leaves, [dout, dlse]))
    assert len(fused_bwd_calls) == 2
    for name, a, b in zip("qkv", *runs):
        assert torch.equal(a, b), name


def test_fused_backward_binding_errors():
    """fastna._C.fused_backward names the unsupported condition (ValueError)."""
    dims = sorted(_built_bwd(2, torch.float16))
    if not dims:
        pytest.skip("no 2D float16 fused_bwd instance")
    C = _ext.load()
    D = dims[0]
    q, k, v = _inputs((8, 8), 2, 2, D, torch.float16, seed=1, B=1)
    p = _args.normalize(q, k, v, 3, 1, 1, False, None, None, None)
    pd = _layout.launch_params(p, q, k, v, "default")
    lse = torch.zeros(q.shape[:-1], device="cuda")
    grads = [torch.empty_like(t) for t in (q, k, v)]

    def call(pd=pd, lse=lse, dlse=None, dout=q):
        C.fused_backward(pd, *(_layout.tensor_arg(t) for t in (q, k, v, q, dout)),
                         None if lse is None else _layout.packed_arg(lse),
                         None if dlse is None else (dlse.data_ptr(), list(dlse.stride())),
                         *(_layout.tensor_arg(t) for t in grads), 0)

    call()  # valid (out = q is fine for the binding)
    torch.cuda.synchronize()
    with pytest.raises(ValueError, match="dtype float32 not supported by the fused backward"):
        call(pd={**pd, "dtype": "float32"})
    with pytest.raises(ValueError, match="Dv != D"):
        call(pd={**pd, "dim_v": D // 2})
    with pytest.raises(ValueError, match="additional KV"):
        call(pd={**pd, "num_extra": 1})
    with pytest.raises(ValueError, match="not instantiated in the backward"):
        call(pd={**pd, "dim": 48, "dim_v": 48})
    with pytest.raises(ValueError, match="lse is required"):
        call(lse=None)
    with pytest.raises(ValueError, match="dlse must be a contiguous"):
        call(dlse=torch.zeros(q.shape[:-1], device="cuda").transpose(1, 2))
    with pytest.raises(ValueError, match="stride_dim"):
        call(dout=torch.zeros(*q.shape[:-1], 2 * D, device="cuda", dtype=q.dtype)[..., ::2])


def test_hopper_backend_selection():
    """backend=None takes the sm90a kernel exactly where it has a head dim (64/128 here), the
    sm80-class fused forward elsewhere; an explicit backend="hopper" names what it lacks."""
    if not hopper.available():
        pytest.skip("needs an sm_90a build on a compute capability 9.0 GPU")
    dtype = torch.bfloat16
    tiles = _built(2, dtype)
    for D in sorted(tiles):
        q, k, v = _inputs((9, 10), 2, 2, D, dtype, seed=D)
        p = _args.normalize(q, k, v, 3, 1, 1, False, None, None, None)
        if "hopper" in tiles[D]:
            assert backends.select(None, q, k, v, p) is hopper
            out = fastna.na2d(q, k, v, 3)
            ref = fastna.na2d(q.double(), k.double(), v.double(), 3, backend="reference")
            assert _rel(out, ref) < OUT_TOL[dtype]
        else:
            assert backends.select(None, q, k, v, p) is fused
            with pytest.raises(NotImplementedError, match="no Hopper kernel"):
                fastna.na2d(q, k, v, 3, backend="hopper")


# backend="hopper": the sm90a backward (fused_bwd tile "hopper"); dilation runs the sm80 one.
HOPPER_BWD_SWEEP = [
    ((37,), 7, 1, 1, False, 2, 2),
    ((300,), 65, 3, 1, True, 4, 2),                    # stride + causal, GQA, many query tiles
    ((29,), 29, 1, 1, False, 2, 1),                    # self attention, MQA
    ((24,), 8, 8, 1, False, 2, 2),                     # blocked
    ((70,), 9, 4, 2, True, 4, 2),                      # dilation: sm80 fallback
] + [
    ((19, 21), (7, 6), (1, 2), (1, 1), c, 4, 2)         # every causal combination in 2D
    for c in itertools.product([False, True], repeat=2)
] + [
    ((17, 9), (9, 9), (1, 1), (1, 1), (False, False), 3, 1),   # K = L on one axis, MQA
    ((40, 36), (21, 17), (1, 1), (1, 1), (False, False), 2, 2),  # full tiles
    ((11, 13), (3, 4), (2, 1), (2, 3), (True, False), 4, 2),     # dilation: sm80 fallback
    ((5, 6, 7), (2, 3, 4), (1, 2, 3), (1, 1, 1), (True, False, True), 2, 1),
    ((6, 10, 12), (3, 5, 7), (1, 1, 1), (1, 1, 1), (False, True, False), 4, 2),
    ((4, 4, 4), (3, 3, 3), (1, 1, 1), (1, 1, 1), (True, True, True), 2, 2),
]


@pytest.mark.parametrize("case", HOPPER_BWD_SWEEP, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", [32, 64, 128])
def test_hopper_backward_sweep(case, dtype, D, monkeypatch):
    """dq, dk, dv (out and lse gradients) of backend="hopper" vs the float64 reference; the
    fused backward runs tile "hopper" where can_implement takes the problem, else "default"
    (head dim 32 has a Hopper forward but no Hopper backward: the sm80 fallback)."""
    monkeypatch.setenv("FASTNA_POISON", "1")
    if not hopper.available():
        pytest.skip("needs an sm_90a build on a compute capability 9.0 GPU")
    shape, kernel, stride, dilation, causal, H, Hkv = case
    rank = len(shape)
    if "hopper" not in _built(rank, dtype).get(D, ()) or D not in _built_bwd(rank, dtype):
        pytest.skip(f"no hopper instance (rank {rank}, {dtype}, D {D})")
    tiles = []
    orig = _fused_launch.backward

    def spy(*a, **kw):
        tiles.append(a[5]["tile"])
        return orig(*a, **kw)

    monkeypatch.setattr(_fused_launch, "backward", spy)
    leaves = [t.requires_grad_() for t in _inputs(shape, H, Hkv, D, dtype, seed=D + rank, B=2)]
    out, lse = fastna.neighborhood_attention(*leaves, kernel, stride=stride, dilation=dilation,
                                             is_causal=causal, return_lse=True, backend="hopper")
    dout, dlse = torch.randn_like(out), torch.randn_like(lse)
    grads = torch.autograd.grad([out, lse], leaves, [dout, dlse])
    p = _args.normalize(*leaves, kernel, stride, dilation, causal, None, None, None)
    # the policy asks for the sm90a backward where can_implement takes it, else the sm80 one
    assert tiles == [hopper.choose(*leaves, p).bwd_tile]
    for name, g, rg in zip("qkv", grads, _ref_grads(leaves, p, dout, dlse)):
        assert torch.isfinite(g).all(), name
        assert _rel(g, rg) < BWD_TOL[dtype], (name, _rel(g, rg))
    # deterministic: a second backward is bitwise identical
    again = torch.autograd.grad(fastna.neighborhood_attention(
        *leaves, kernel, stride=stride, dilation=dilation, is_causal=causal, return_lse=True,
        backend="hopper"), leaves, [dout, dlse])
    for name, a, b in zip("qkv", grads, again):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------ float32: TF32 tensor cores

def _need_fp32(rank=2):
    dims = sorted(_built(rank, torch.float32))
    if not dims:
        pytest.skip(f"no rank-{rank} float32 fused instance")
    return dims


def test_float32_selection_policy(set_tf32):
    """backend=None takes the fused TF32 kernel for float32 only while
    torch.backends.cuda.matmul.allow_tf32; backend="fused" always runs it; "hopper" declines."""
    D = _need_fp32()[0]
    q, k, v = _inputs((9, 10), 2, 2, D, torch.float32, seed=3)
    p = _args.normalize(q, k, v, 3, 1, 1, False, None, None, None)
    assert fused.check(q, k, v, p) is None
    why = hopper.check(q, k, v, p)
    assert why is not None and why.exc is TypeError and "float16 and bfloat16" in why
    with pytest.raises(TypeError, match="backend='hopper'.*float16 and bfloat16"):
        fastna.na2d(q, k, v, 3, backend="hopper")
    ref = reference.attention(q.double(), k.double(), v.double(), p)
    set_tf32(False)
    assert backends.select(None, q, k, v, p) not in (fused, hopper)
    assert "allow_tf32" in fused.check_auto(q, k, v, p)
    exact = fastna.na2d(q, k, v, 3)                        # naive: full fp32
    assert _rel(exact, ref) < 1e-5
    out = fastna.na2d(q, k, v, 3, backend="fused")         # explicit: TF32
    assert out.dtype == torch.float32 and _rel(out, ref) < OUT_TOL[torch.float32]
    set_tf32(True)
    assert fused.check_auto(q, k, v, p) is None
    assert backends.select(None, q, k, v, p) is fused
    assert _rel(fastna.na2d(q, k, v, 3), ref) < OUT_TOL[torch.float32]
    # 16-bit inputs do not depend on the switch
    set_tf32(False)
    if D in _built(2, torch.float16):
        qh, kh, vh = (t.half() for t in (q, k, v))
        assert backends.select(None, qh, kh, vh, p) in (fused, hopper)


def test_float32_error_vs_torch_tf32(set_tf32):
    """Self attention (K = L) in float32: the fused kernel's error vs the float64 reference is
    at most twice that of torch's own TF32 path (matmul with allow_tf32, softmax in fp32)."""
    D = _need_fp32(1)[-1]
    B, L, H = 2, 512, 4
    q, k, v = _inputs((L,), H, H, D, torch.float32, seed=21, B=B)
    p = _args.normalize(q, k, v, L, 1, 1, False, None, None, None)
    out = fused.forward(q, k, v, p)
    ref = reference.attention(q.double(), k.double(), v.double(), p)
    set_tf32(True)
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))          # [B, H, L, D]
    s = torch.matmul(qt, kt.transpose(-1, -2)) * p.scale
    tout = torch.matmul(torch.softmax(s, -1), vt).transpose(1, 2)
    e_fused, e_torch = _rel(out, ref), _rel(tout, ref)
    print(f"float32 self attention L={L} D={D}: fused TF32 rel err {e_fused:.2e}, "
          f"torch TF32 {e_torch:.2e}")
    assert e_fused < OUT_TOL[torch.float32]
    if e_torch > 1e-5:          # torch really ran TF32 (else it computed in full fp32)
        assert e_fused < 2 * e_torch, (e_fused, e_torch)


def test_float32_rows_in_16_byte_chunks():
    """float32 views need strides in multiples of 4 elements (16 bytes), not 8: such a view is
    read in place, a misaligned one copied, and the binding names the condition."""
    D = _need_fp32()[0]
    g = torch.Generator(device="cuda").manual_seed(4)
    big = torch.randn(2, 9, 11, 2, D + 4, device="cuda", generator=g)
    q = big[..., :D]                                   # strides multiples of 4, not of 8
    assert _layout.aligned(q) and not _layout.aligned(big.half()[..., :D])
    k = torch.randn(2, 9, 11, 2, D, device="cuda", generator=g)
    _, _, msg = _compare(q, k, k, (3, 5), 1, 1, False)
    assert msg is None, msg
    off = torch.randn(2, 9, 11, 2, D + 1, device="cuda", generator=g)[..., 1:]
    assert not _layout.aligned(off)
    _, _, msg = _compare(off, k, k, (3, 5), (1, 2), (2, 1), (True, False))
    assert msg is None, msg
    C = _ext.load()
    p = _args.normalize(q, k, k, 3, 1, 1, False, None, None, None)
    pd = _layout.launch_params(p, q, k, k, "default")
    bad = (big.data_ptr(), [9 * 11 * 2 * (D + 2), 11 * 2 * (D + 2), 2 * (D + 2), D + 2, 1])
    with pytest.raises(ValueError, match="multiples of 4 elements \\(16 bytes\\) for float32"):
        ka = _layout.tensor_arg(k)
        C.fused_forward(pd, bad, ka, ka, ka, None, torch.cuda.current_stream().cuda_stream)


@pytest.mark.parametrize("case", GRAD_CASES, ids=_case_id)
@pytest.mark.parametrize("with_lse", [False, True])
def test_float32_gradients(case, with_lse, monkeypatch, fused_bwd_calls):
    """float32 has no fused backward: gradients run the naive one (fp32), or with a gradient
    into the lse the reference's recomputation; both match the float64 reference closely."""
    monkeypatch.setenv("FASTNA_POISON", "1")
    monkeypatch.delenv("FASTNA_FUSED_BACKWARD", raising=False)
    shape, kernel, stride, dilation, causal, H, Hkv = case
    D = _need_fp32(len(shape))[0]
    assert D not in _built_bwd(len(shape), torch.float32)
    leaves = [t.requires_grad_() for t in _inputs(shape, H, Hkv, D, torch.float32, seed=8)]
    kw = dict(stride=stride, dilation=dilation, is_causal=causal)
    out, lse = fastna.neighborhood_attention(*leaves, kernel, backend="fused", return_lse=True,
                                             **kw)
    dout = torch.randn_like(out)
    dlse = torch.randn_like(lse) if with_lse else None
    outs = [out, lse] if with_lse else [out]
    grads = torch.autograd.grad(outs, leaves, [dout] + ([dlse] if with_lse else []))
    assert fused_bwd_calls == []
    p = _args.normalize(*leaves, kernel, stride, dilation, causal, None, None, None)
    for name, g, rg in zip("qkv", grads, _ref_grads(leaves, p, dout, dlse)):
        assert torch.isfinite(g).all(), name
        # the backward computes in fp32; the forward's TF32 out only enters through nothing
        assert _rel(g, rg) < 1e-4, (name, _rel(g, rg))
