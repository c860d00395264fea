"""The small-window fused forward (fused_fwd tile "small", include/fastna/small)
against the reference: a fixed sweep of windows that fit it (borders, odd sizes, even kernels,
stride, dilation groups of unequal length, every causal combination, GQA, windows as large as
the group), a seeded random sweep, the binding's automatic choice (bitwise equal to asking for
the tile; FASTNA_SMALL_WINDOW=0 turns it off), and a clear error for windows that do not fit.
Outputs are poisoned with NaN (FASTNA_POISON=1) so rows the kernel forgets to write fail.
"""
import itertools
import random

import pytest
import torch

from fastna import _args, _policy
from fastna.backends import fused, hopper
from fastna.index_math import window

from test_fused_gpu import CASES as FUSED_CASES, DTYPES, _built, _compare, _inputs, _small_fits

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() and fused.available()),
                       reason="needs CUDA and fastna._C with fused kernels"),
]

TILE = _policy.SMALL_TILE
# The documented shapes (small_window_shape.hpp): 16 queries per warp, key slots per axis.
PATCH = {1: (16,), 2: (8, 2)}
SLOTS = {1: (64,), 2: (14, 8)}


def _dims(rank, dtype):
    return sorted(d for d, tiles in _built(rank, dtype).items() if TILE in tiles)


def _documented_fit(case):
    """The documented rule (small_window_shape.hpp), per axis: the run of a warp patch needs at most
    (patch - 1) + K + (stride - 1) keys (non-causal) or (patch - 1) + K (causal), capped by the
    longest dilation group; it must fit the slots."""
    shape, kernel, stride, dilation, causal = case[:5]
    rank = len(shape)
    if rank not in PATCH:
        return False
    per_axis = [(x,) * rank if isinstance(x, (int, bool)) else tuple(x) for x in (kernel, stride, dilation, causal)]
    for a in range(rank):
        K, s, d, c = (v[a] for v in per_axis)
        need = min(-(-shape[a] // d), PATCH[rank][a] - 1 + K + (0 if c else s - 1))
        if need > SLOTS[rank][a]:
            return False
    return True


# (spatial shape, kernel, stride, dilation, causal, H, H_kv): the fused sweep's cases that fit the
# tile, and cases at its limits.
CASES = [c for c in FUSED_CASES if _documented_fit(c)] + [
    ((64,), 64, 1, 1, True, 1, 1),                   # causal self attention, L = slots
    ((517,), 33, 10, 2, False, 2, 2),                # large 1D window that still fits
    ((1000,), 49, 1, 1, False, 1, 1),                # the largest 1D window at stride 1
    ((56, 56), 7, 1, 1, False, 4, 4),                # nat
    ((56, 56), 7, 1, 4, False, 4, 4),                # dinat
    ((23, 29), (7, 6), (1, 2), (2, 3), (False, False), 2, 1),   # odd sizes, even kernel
    ((12, 8), (12, 8), (1, 1), (1, 1), (False, False), 2, 2),   # self attention, halo = slots
    ((7, 7), 7, 1, 1, (True, True), 3, 3),
    ((100, 3), (3, 2), (3, 2), (1, 1), (False, True), 2, 2),
    ((9, 31), (2, 4), (2, 4), (4, 3), (True, False), 4, 2),
] + [
    ((13, 11), (3, 5), (2, 3), (2, 1), c, 4, 2)       # every causal combination in 2D
    for c in itertools.product([False, True], repeat=2)
] + [
    ((17, 45), (5, 3), (1, 3), (3, 2), c, 6, 2)       # stride + dilation + causal, GQA
    for c in itertools.product([False, True], repeat=2)
]


def _case_id(c):
    return f"{'x'.join(map(str, c[0]))}-K{c[1]}-s{c[2]}-d{c[3]}-c{c[4]}-H{c[5]}/{c[6]}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_small_window_sweep(case, dtype, monkeypatch):
    monkeypatch.setenv("FASTNA_POISON", "1")
    shape, kernel, stride, dilation, causal, H, Hkv = case
    rank = len(shape)
    dims = _dims(rank, dtype)
    if not dims:
        pytest.skip(f"no small-window instance for rank {rank}, {dtype}")
    assert _documented_fit(case)
    assert _small_fits(shape, kernel, stride, dilation, causal)
    for seed, D in enumerate(dims):
        q, k, v = _inputs(shape, H, Hkv, D, dtype, seed, B=2 if shape[0] < 100 else 1)
        _, _, msg = _compare(q, k, v, kernel, stride, dilation, causal, tile=TILE)
        assert msg is None, f"D {D}: {msg}"


def _random_fitting(rng, rank):
    while True:
        shape = (rng.randint(4, 300),) if rank == 1 else tuple(rng.randint(4, 40) for _ in range(2))
        kernel, stride, dilation, causal = [], [], [], []
        for L in shape:
            K = rng.randint(2, min(L, 50 if rank == 1 else 8))
            kernel.append(K)
            stride.append(rng.randint(1, K))
            dilation.append(rng.randint(1, L // K))
            causal.append(rng.random() < 0.4)
        cfg = (shape, tuple(kernel), tuple(stride), tuple(dilation), tuple(causal))
        if _small_fits(*cfg):
            return cfg


def test_small_window_random_sweep(monkeypatch):
    """300 seeded random problems that fit the tile (ranks 1 and 2, random GQA, batch, dtype and
    head dim); reports every failure."""
    monkeypatch.setenv("FASTNA_POISON", "1")
    rng = random.Random(20261128)
    failures, ran = [], 0
    for i in range(300):
        rank = rng.choice([1, 2])
        dtype = rng.choice(DTYPES)
        dims = _dims(rank, dtype)
        if not dims:
            continue
        shape, kernel, stride, dilation, causal = _random_fitting(rng, rank)
        H, Hkv = rng.choice([(1, 1), (2, 2), (4, 2), (4, 1), (6, 3)])
        D = rng.choice(dims)
        q, k, v = _inputs(shape, H, Hkv, D, dtype, seed=i, B=rng.choice([1, 2]))
        ran += 1
        try:
            _, _, msg = _compare(q, k, v, kernel, stride, dilation, causal, tile=TILE)
        except Exception as e:  # noqa: BLE001 - report, keep sweeping
            msg = f"{type(e).__name__}: {e}"
        if msg is not None:
            failures.append(f"{(shape, kernel, stride, dilation, causal, H, Hkv, D, dtype)}: {msg}")
    if ran == 0:
        pytest.skip("no small-window instance")
    assert not failures, f"{len(failures)}/{ran} configs failed:\n" + "\n".join(failures[:30])


@pytest.mark.parametrize("rank", [1, 2])
def test_fits_bounds_every_warp_halo(rank):
    """Whenever the binding says the windows fit, every warp's actual key halo (brute force over
    every patch position, from the reference index math) fits the slots on every axis."""
    rng = random.Random(7 + rank)
    checked = 0
    for _ in range(400):
        shape = (rng.randint(2, 200),) if rank == 1 else tuple(rng.randint(2, 30) for _ in range(2))
        kernel = tuple(rng.randint(2, min(L, 60 if rank == 1 else 10)) for L in shape)
        stride = tuple(rng.randint(1, K) for K in kernel)
        dilation = tuple(rng.randint(1, L // K) for L, K in zip(shape, kernel))
        causal = tuple(rng.random() < 0.5 for _ in shape)
        if not _small_fits(shape, kernel, stride, dilation, causal):
            continue
        checked += 1
        for a in range(rank):
            L, K, s, d, c = shape[a], kernel[a], stride[a], dilation[a], causal[a]
            for g in range(d):
                n = len(range(g, L, d))
                for i0 in range(n):
                    last = min(i0 + PATCH[rank][a], n) - 1
                    lo = window(L, K, s, d, c, i0 * d + g)[0]
                    hi = window(L, K, s, d, c, last * d + g)[1]
                    assert hi - lo <= SLOTS[rank][a], (shape, kernel, stride, dilation, causal, a)
    assert checked > 50


def test_small_window_fits_examples():
    assert _small_fits((56, 56), 7, 1, 1, False)
    assert _small_fits((56, 56), 7, 1, 4, False)
    assert not _small_fits((64, 64), 13, 1, 1, False)
    assert not _small_fits((56, 56), 7, 2, 1, False)   # 7 + 2 - 1 > 7
    assert not _small_fits((8, 8, 8), 3, 1, 1, False)  # no 3D tile


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_automatic_choice(dtype, monkeypatch):
    """The policy runs the small-window kernel for backends fused and hopper where
    can_implement takes it: bitwise the same as asking for tile "small"; FASTNA_SMALL_WINDOW=0
    gives the backend's own tile."""
    dims = _dims(2, dtype)
    if not dims:
        pytest.skip(f"no 2D small-window instance for {dtype}")
    D = dims[0]
    q, k, v = _inputs((20, 18), 2, 2, D, dtype, 11)
    p = _args.normalize(q, k, v, 5, 1, 1, False, None, None, None)
    assert fused.choose(q, k, v, p).tile == TILE
    small = fused.forward(q, k, v, p, tile=TILE)
    assert torch.equal(fused.forward(q, k, v, p), small)
    if hopper.available() and hopper.check(q, k, v, p) is None:
        assert torch.equal(hopper.forward(q, k, v, p), small)
    monkeypatch.setenv("FASTNA_SMALL_WINDOW", "0")
    own = fused.choose(q, k, v, p).tile
    assert own != TILE
    assert torch.equal(fused.forward(q, k, v, p), fused.forward(q, k, v, p, tile=own))


def test_window_too_large_is_a_clear_error():
    dtype = torch.bfloat16
    dims = _dims(2, dtype)
    if not dims:
        pytest.skip("no 2D bf16 small-window instance")
    q, k, v = _inputs((30, 30), 1, 1, dims[0], dtype, 2)
    p = _args.normalize(q, k, v, 13, 1, 1, False, None, None, None)
    # the binding runs exactly the tile it is asked for, and says why it cannot
    with pytest.raises(ValueError, match="small"):
        fused.forward(q, k, v, p, tile=TILE)
