"""Per-head-group window parameters on the CUDA kernel backends (fused, hopper): a call with
head_groups against one ordinary call per group on the same backend (what the interim path
runs; a one-launch per-head kernel must agree with it to rounding) and against the float64
reference, forward (out, lse) and gradients, fp16 / bf16, 1D-3D, GQA, stride, dilation, causal;
torch.compile fullgraph through the custom ops; the Hydra module on the GPU.  The CPU side:
tests/test_per_head.py."""
import pytest
import torch

import fastna
from numerics import rel_error as _rel

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

KERNEL_BACKENDS = ["fused", "hopper"]
DTYPES = [torch.float16, torch.bfloat16]
# ||x - ref|| / ||ref|| against the float64 reference (the kernels' own sweeps use these)
OUT_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
GRAD_TOL = {torch.float16: 1e-2, torch.bfloat16: 4e-2}
# against one call per group on the same backend: equal up to the kernel's rounding
SAME_TOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3}

# (shape, H, Hkv, head_groups, per-group (kernel, stride, dilation, causal))
CASES = [
    ((256,), 4, 4, [2, 2], [(7, 1, 1, False), (7, 1, 8, False)]),
    ((200,), 8, 2, [4, 4], [(13, 4, 1, True), (5, 1, 3, False)]),
    ((32, 32), 4, 4, [2, 2], [(7, 1, 1, False), (7, 1, 4, False)]),
    ((48, 40), 6, 3, [2, 2, 2], [((7, 9), 1, 1, False), ((5, 5), (2, 1), (3, 2), False),
                                 ((8, 8), (4, 4), 1, (True, False))]),
    ((24, 24), 8, 1, [3, 5], [(5, 1, 2, False), ((3, 7), 1, 1, (False, True))]),
    ((12, 16, 16), 4, 2, [2, 2], [((3, 5, 5), 1, 1, False), ((3, 3, 3), 1, (2, 3, 3),
                                                                 (True, False, False))]),
]


def _case_id(c):
    return f"{'x'.join(map(str, c[0]))}-H{c[1]}kv{c[2]}-{'+'.join(map(str, c[3]))}"


def _inputs(shape, H, Hkv, D, dtype, seed=0, B=2):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(B, *shape, h, D, generator=g, device="cuda", dtype=dtype)
            for h in (H, Hkv, Hkv)]


def _per_group(q, k, v, counts, params, backend):
    G = q.shape[-2] // k.shape[-2]
    outs, lses, start = [], [], 0
    for n, (kernel, stride, dilation, causal) in zip(counts, params):
        stop = start + n
        ka, kb = start // G, max(start // G + 1, stop // G)
        out, lse = fastna.neighborhood_attention(
            q[..., start:stop, :], k[..., ka:kb, :], v[..., ka:kb, :], kernel, stride,
            dilation, causal, return_lse=True, backend=backend)
        outs.append(out)
        lses.append(lse)
        start = stop
    return torch.cat(outs, -2), torch.cat(lses, -1)


def _per_group_or_skip(q, k, v, counts, params, backend):
    try:
        return _per_group(q, k, v, counts, params, backend)
    except NotImplementedError as e:
        pytest.skip(f"{backend} does not run a group of this case: {e}")


def _grouped(q, k, v, counts, params, backend):
    return fastna.neighborhood_attention(q, k, v, *[list(x) for x in zip(*params)],
                                         return_lse=True, backend=backend, head_groups=counts)


def _need(backend):
    if backend not in fastna.available_backends():
        pytest.skip(f"backend {backend!r} not available here")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_forward(case, dtype, backend):
    _need(backend)
    shape, H, Hkv, counts, params = case
    q, k, v = _inputs(shape, H, Hkv, 64, dtype)
    want_out, want_lse = _per_group_or_skip(q, k, v, counts, params, backend)
    out, lse = _grouped(q, k, v, counts, params, backend)
    assert out.dtype == dtype and out.shape == q.shape and lse.dtype == torch.float32
    assert _rel(out, want_out) < SAME_TOL[dtype]
    assert (lse - want_lse).abs().max().item() < 1e-3
    ref_out, ref_lse = _per_group(q.double(), k.double(), v.double(), counts, params,
                                  "reference")
    assert _rel(out, ref_out) < OUT_TOL[dtype]
    assert (lse.double() - ref_lse).abs().max().item() < 1e-3


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_gradients(case, dtype, backend):
    _need(backend)
    shape, H, Hkv, counts, params = case
    leaves = [t.requires_grad_() for t in _inputs(shape, H, Hkv, 64, dtype, seed=1)]
    want_out, want_lse = _per_group_or_skip(*leaves, counts, params, backend)
    g = torch.Generator(device="cuda").manual_seed(2)
    dout = torch.randn(want_out.shape, generator=g, device="cuda", dtype=dtype)
    want = torch.autograd.grad(want_out, leaves, dout)
    out, _ = _grouped(*leaves, counts, params, backend)
    got = torch.autograd.grad(out, leaves, dout)
    ref = [t.detach().double().requires_grad_() for t in leaves]
    ref_out, _ = _per_group(*ref, counts, params, "reference")
    ref_grads = torch.autograd.grad(ref_out, ref, dout.double())
    for name, a, b, r in zip("qkv", got, want, ref_grads):
        assert _rel(a, b) < GRAD_TOL[dtype], name
        assert _rel(a, r) < GRAD_TOL[dtype], name


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_compile_fullgraph(backend):
    _need(backend)
    shape, H, Hkv, counts, params = CASES[3]
    leaves = [t.requires_grad_() for t in _inputs(shape, H, Hkv, 64, torch.bfloat16, seed=3)]

    def fn(q, k, v):
        return _grouped(q, k, v, counts, params, backend)

    torch._dynamo.reset()
    try:
        out, lse = torch.compile(fn, fullgraph=True)(*leaves)
        got = torch.autograd.grad(out.float().sum() + lse.sum(), leaves)
    finally:
        torch._dynamo.reset()
    want_out, want_lse = fn(*leaves)
    want = torch.autograd.grad(want_out.float().sum() + want_lse.sum(), leaves)
    assert _rel(out, want_out) < SAME_TOL[torch.bfloat16]
    for a, b in zip(got, want):
        assert _rel(a, b) < GRAD_TOL[torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_hydra_module_fused_path_vs_unfused(dtype):
    """StyleNAT's 32x32 layer shape: 8 heads of 32, kernels 7, dilations [1, 4]; the fused
    path (head_groups) against the same layer's per-group unfused ops."""
    torch.manual_seed(0)
    m = fastna.HydraNeighborhoodAttention2D(dim=256, num_heads=8, kernel_sizes=7,
                                            dilations=[1, 4]).to("cuda", dtype)
    x = torch.randn(4, 32, 32, 256, device="cuda", dtype=dtype)
    assert m.uses_fused_path
    y = m(x)
    q, k, v = m.qkv(x).reshape(4, 32, 32, 3, 8, 32).unbind(3)
    want = m.proj(m._unfused(q, k, v).reshape(x.shape))
    assert _rel(y, want) < OUT_TOL[dtype] * 2
