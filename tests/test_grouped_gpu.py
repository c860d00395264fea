"""The grouped kernels (fastna.backends.fused_grouped: several problems, one launch per kernel)
on packed variable-size batches against the reference on each sample: forward, lse and
gradients, random mixes of 1-8 samples (ranks 1-3, shapes dividing no tile, shared and
per-sample windows with every causal combination, stride, dilation, even kernels, GQA),
float16 / bfloat16, outputs poisoned."""
import random

import pytest
import torch

import fastna
from fastna import _args
from fastna.backends import fused_grouped
from numerics import rel_error, random_window_params

pytestmark = pytest.mark.gpu

TOL = {torch.float16: 4e-3, torch.bfloat16: 2.5e-2}


def _case(seed, rank, dtype, D=64):
    rng = random.Random(seed)
    count = rng.randint(1, 8)
    hi = {1: 200, 2: 30, 3: 10}[rank]
    shapes = [tuple(rng.randint(3, hi) for _ in range(rank)) for _ in range(count)]
    if rng.random() < 0.5:
        params = [random_window_params(rng, s) for s in shapes]
    else:
        smallest = tuple(min(s[a] for s in shapes) for a in range(rank))
        params = [random_window_params(rng, smallest)] * count
    Hkv = rng.choice([1, 2])
    H = Hkv * rng.choice([1, 2])
    total = sum(torch.Size(s).numel() for s in shapes)
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(total, h, D, generator=g, device="cuda", dtype=dtype)
               for h in (H, Hkv, Hkv))
    return shapes, params, q, k, v


def _grads(fn, q, k, v, dout, dlse):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out, lse = fn(*leaves)
    grads = torch.autograd.grad([out, lse], leaves, [dout, dlse])
    return out.detach(), lse.detach(), grads


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_grouped_kernels_on_packed_batches_match_the_reference(seed, rank, dtype, monkeypatch):
    monkeypatch.setenv("FASTNA_POISON", "1")
    shapes, params, q, k, v = _case(1000 * rank + seed, rank, dtype)
    kernel, stride, dilation, causal = (list(x) for x in zip(*params))
    assert fused_grouped.unavailable(q, k, v, rank, needs_backward=True) is None

    def kernels(q, k, v):
        samples = _args.normalize_varlen(q, k, v, shapes, kernel, stride, dilation, causal)
        return fused_grouped.attention(q, k, v, fused_grouped.VarlenLayout(samples))

    def reference(q, k, v):
        return fastna.neighborhood_attention_varlen(q.double(), k.double(), v.double(), shapes, kernel,
                                                    stride, dilation, causal, return_lse=True,
                                                    backend="reference")

    dout = torch.randn_like(q)
    dlse = torch.randn(q.shape[:-1], device="cuda", dtype=torch.float32)
    out, lse, grads = _grads(kernels, q, k, v, dout, dlse)
    rout, rlse, rgrads = _grads(reference, q, k, v, dout.double(), dlse.double())
    tol = TOL[dtype]
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    assert rel_error(out, rout) < tol and rel_error(lse, rlse) < tol
    for name, a, b in zip("qkv", grads, rgrads):
        assert torch.isfinite(a).all(), f"d{name} has non-finite values"
        assert rel_error(a, b) < 2 * tol, f"d{name}: {rel_error(a, b)}"


def test_grouped_kernels_one_launch_per_kernel():
    """The forward is one kernel launch and the backward three, whatever the sample count."""
    shapes = [(12, 20), (9, 31), (16, 16), (7, 9)]
    total = sum(a * b for a, b in shapes)
    q, k, v = (torch.randn(total, 2, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    samples = _args.normalize_varlen(q, k, v, shapes, 5)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out, lse = fused_grouped.attention(q, k, v, fused_grouped.VarlenLayout(samples))
        torch.autograd.grad(out.sum() + lse.sum(), [q, k, v])
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    for kernel in ("fna_forward_grouped_kernel", "fna_bwd_preprocess_grouped_kernel",
                   "fna_bwd_dkdv_grouped_kernel", "fna_bwd_dq_grouped_kernel"):
        assert sum(kernel in n for n in names) == 1, (kernel, names)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(8))
def test_head_groups_in_one_grouped_launch_match_the_reference(seed, dtype, monkeypatch):
    """backend="fused" with head_groups: one grouped launch for every group (forward, lse and
    gradients against the reference), groups sharing a key/value head included."""
    monkeypatch.setenv("FASTNA_POISON", "1")
    rng = random.Random(seed)
    rank = 1 + seed % 3
    shape = tuple(rng.randint(6, {1: 200, 2: 30, 3: 10}[rank]) for _ in range(rank))
    head_groups = rng.choice([[2, 2], [1, 3], [2, 1, 1, 4], [4, 4]])
    H = sum(head_groups)
    Hkv = rng.choice([h for h in (1, 2, H) if H % h == 0])
    params = [random_window_params(rng, shape) for _ in head_groups]
    kernel, stride, dilation, causal = (list(x) for x in zip(*params))
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(2, *shape, h, 64, generator=g, device="cuda", dtype=dtype)
               for h in (H, Hkv, Hkv))
    dout = torch.randn_like(q)
    dlse = torch.randn(q.shape[:-1], device="cuda")

    def call(backend, *t):
        return fastna.neighborhood_attention(*t, kernel, stride, dilation, causal, head_groups=head_groups,
                                             return_lse=True, backend=backend)

    out, lse, grads = _grads(lambda *t: call("fused", *t), q, k, v, dout, dlse)
    rout, rlse, rgrads = _grads(lambda *t: call("reference", *(x.double() for x in t)), q, k, v,
                                dout.double(), dlse.double())
    tol = TOL[dtype]
    assert rel_error(out, rout) < tol and rel_error(lse, rlse) < tol
    for name, a, b in zip("qkv", grads, rgrads):
        assert rel_error(a, b) < 2 * tol, f"d{name}: {rel_error(a, b)}"


def test_head_groups_take_one_forward_launch():
    q, k, v = (torch.randn(1, 24, 24, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fastna.neighborhood_attention(q, k, v, [3, 7], dilation=[1, 2], head_groups=[2, 2], backend="fused")
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert sum("fna_forward_grouped_kernel" in n for n in names) == 1, names
    assert not any("fna_forward_kernel" in n for n in names), names


def test_small_windows_take_the_grouped_small_window_kernel(monkeypatch):
    """64 images of their own sizes with 7x7 windows, D 32: the grouped small-window forward
    (one launch), equal to the reference."""
    monkeypatch.setenv("FASTNA_POISON", "1")
    rng = random.Random(0)
    shapes = [(rng.randint(24, 64), rng.randint(24, 64)) for _ in range(64)]
    total = sum(a * b for a, b in shapes)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(total, 4, 32, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    samples = _args.normalize_varlen(q, k, v, shapes, 7)
    layout = fused_grouped.VarlenLayout(samples)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out, lse = fused_grouped.attention(q, k, v, layout)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert sum("small_window_grouped_kernel" in n for n in names) == 1, names
    rout, rlse = fastna.neighborhood_attention_varlen(q.double(), k.double(), v.double(), shapes, 7,
                                                      return_lse=True, backend="reference")
    assert rel_error(out, rout) < TOL[torch.bfloat16] and rel_error(lse, rlse) < TOL[torch.bfloat16]


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                    reason="the sm90a grouped forward needs compute capability 9.0")
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_large_windows_take_the_grouped_sm90a_forward(rank, monkeypatch):
    """Video-like clips with large windows on an H100 / H200: the grouped sm90a forward (one
    launch) and backward (dK/dV and dQ one launch each), equal to the reference."""
    monkeypatch.setenv("FASTNA_POISON", "1")
    shapes = {1: [(700,), (1500,), (333,)], 2: [(40, 56), (32, 72), (24, 40)],
              3: [(8, 24, 40), (4, 30, 52), (12, 16, 28)]}[rank]
    window = {1: 129, 2: (13, 17), 3: (3, 9, 9)}[rank]
    total = sum(torch.Size(s).numel() for s in shapes)
    g = torch.Generator(device="cuda").manual_seed(rank)
    q, k, v = (torch.randn(total, 4, 128, generator=g, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True) for _ in range(3))
    samples = _args.normalize_varlen(q, k, v, shapes, window)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out, lse = fused_grouped.attention(q, k, v, fused_grouped.VarlenLayout(samples))
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert sum("fna_hopper_forward_grouped_kernel" in n for n in names) == 1, names
    dout = torch.randn_like(out)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        grads = torch.autograd.grad(out, [q, k, v], dout)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert sum("fna_hopper_bwd_grouped_kernel" in n for n in names) == 2, names   # dK/dV, dQ
    ref = [t.detach().double().requires_grad_() for t in (q, k, v)]
    rout, rlse = fastna.neighborhood_attention_varlen(*ref, shapes, window, return_lse=True,
                                                      backend="reference")
    rgrads = torch.autograd.grad(rout, ref, dout.double())
    tol = TOL[torch.bfloat16]
    assert rel_error(out, rout) < tol and rel_error(lse, rlse) < tol
    for name, a, b in zip("qkv", grads, rgrads):
        assert rel_error(a, b) < 2 * tol, f"d{name}: {rel_error(a, b)}"
