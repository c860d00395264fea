"""fastna.neighborhood_attention_varlen's per-shape path on the CUDA kernel backends (fused,
hopper, and backend=None): packed mixes of 2-6 samples with repeated, interleaved shapes (so
rows are gathered and scattered), 1D-3D, shared and per-sample parameters, GQA, Dv != D where
the backend runs it, against one fastna.neighborhood_attention call per sample on the same
backend (equal up to the kernel's rounding: the same kernels on a larger batch) and against the
float64 per-sample reference, forward (out, lse) and gradients, fp16 / bf16; torch.compile
fullgraph through the custom ops.  The CPU side: tests/test_varlen.py."""
import pytest
import torch

import fastna
from numerics import rel_error as _rel

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

BACKENDS = ["fused", "hopper", None]
DTYPES = [torch.float16, torch.bfloat16]
# ||x - ref|| / ||ref|| against the float64 reference (tests/test_per_head_gpu.py's)
OUT_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
GRAD_TOL = {torch.float16: 1e-2, torch.bfloat16: 4e-2}
# against one call per sample on the same backend
SAME_TOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3}

# (shapes, H, Hkv, D, Dv, parameters: one (kernel, stride, dilation, causal) shared, or a list
# with one per sample)
CASES = [
    ([(256,), (96,), (256,), (130,)], 4, 4, 64, 32, (7, 1, 2, False)),
    ([(200,), (64,), (200,)], 8, 2, 64, 64, [(13, 4, 1, True), (5, 1, 3, False),
                                             (13, 4, 1, True)]),
    ([(32, 32), (24, 40), (32, 32), (24, 40), (16, 16)], 4, 4, 64, 64, (7, 1, 1, False)),
    ([(48, 40), (20, 28), (48, 40)], 6, 3, 128, 128,
     [((7, 9), 1, 1, False), ((5, 5), (2, 1), (3, 2), (True, False)), ((7, 9), 1, 1, False)]),
    ([(24, 24), (24, 24), (30, 18)], 8, 1, 32, 32, ((3, 7), 1, 1, (False, True))),
    ([(12, 16, 16), (8, 12, 20), (12, 16, 16)], 4, 2, 64, 64,
     [((3, 5, 5), 1, 1, False), ((3, 3, 3), 1, (2, 3, 3), (True, False, False)),
      ((3, 5, 5), 1, 1, False)]),
]


def _case_id(c):
    shapes = "+".join("x".join(map(str, s)) for s in c[0])
    return f"{shapes}-H{c[1]}kv{c[2]}-D{c[3]}"


def _per_sample(case):
    shapes, params = case[0], case[5]
    return params if isinstance(params, list) else [params] * len(shapes)


def _inputs(case, dtype, seed=0):
    shapes, H, Hkv, D, Dv = case[:5]
    total = sum(torch.Size(s).numel() for s in shapes)
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(total, h, d, generator=g, device="cuda", dtype=dtype)
            for h, d in ((H, D), (Hkv, D), (Hkv, Dv))]


def _one_call_per_sample(q, k, v, shapes, params, backend):
    outs, lses, start = [], [], 0
    for shape, (kernel, stride, dilation, causal) in zip(shapes, params):
        n = torch.Size(shape).numel()
        sq, sk, sv = (t[start:start + n].reshape(1, *shape, *t.shape[1:]) for t in (q, k, v))
        out, lse = fastna.neighborhood_attention(sq, sk, sv, kernel, stride, dilation, causal,
                                                 return_lse=True, backend=backend)
        outs.append(out.reshape(n, *out.shape[-2:]))
        lses.append(lse.reshape(n, lse.shape[-1]))
        start += n
    return torch.cat(outs), torch.cat(lses)


def _varlen(q, k, v, case, backend):
    shapes, params = case[0], case[5]
    args = [list(x) for x in zip(*params)] if isinstance(params, list) else list(params)
    return fastna.neighborhood_attention_varlen(q, k, v, shapes, *args, return_lse=True,
                                                backend=backend)


def _need(backend):
    if backend is not None and backend not in fastna.available_backends():
        pytest.skip(f"backend {backend!r} not available here")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS, ids=str)
def test_forward(case, dtype, backend):
    _need(backend)
    shapes, params = case[0], _per_sample(case)
    q, k, v = _inputs(case, dtype)
    try:
        want_out, want_lse = _one_call_per_sample(q, k, v, shapes, params, backend)
    except NotImplementedError as e:
        pytest.skip(f"{backend} does not run a sample of this case: {e}")
    out, lse = _varlen(q, k, v, case, backend)
    assert out.dtype == dtype and out.shape == (q.shape[0], q.shape[1], v.shape[-1])
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:2]
    assert _rel(out, want_out) < SAME_TOL[dtype]
    assert (lse - want_lse).abs().max().item() < 1e-3
    ref_out, ref_lse = _one_call_per_sample(q.double(), k.double(), v.double(), shapes, params,
                                            "reference")
    assert _rel(out, ref_out) < OUT_TOL[dtype]
    assert (lse.double() - ref_lse).abs().max().item() < 1e-3


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS, ids=str)
def test_gradients(case, dtype, backend):
    _need(backend)
    shapes, params = case[0], _per_sample(case)
    leaves = [t.requires_grad_() for t in _inputs(case, dtype, seed=1)]
    try:
        want_out, _ = _one_call_per_sample(*leaves, shapes, params, backend)
    except NotImplementedError as e:
        pytest.skip(f"{backend} does not run a sample of this case: {e}")
    g = torch.Generator(device="cuda").manual_seed(2)
    dout = torch.randn(want_out.shape, generator=g, device="cuda", dtype=dtype)
    want = torch.autograd.grad(want_out, leaves, dout)
    out, _ = _varlen(*leaves, case, backend)
    got = torch.autograd.grad(out, leaves, dout)
    ref = [t.detach().double().requires_grad_() for t in leaves]
    ref_out, _ = _one_call_per_sample(*ref, shapes, params, "reference")
    ref_grads = torch.autograd.grad(ref_out, ref, dout.double())
    for name, a, b, r in zip("qkv", got, want, ref_grads):
        assert a.dtype == dtype, name
        assert _rel(a, b) < GRAD_TOL[dtype], name
        assert _rel(a, r) < GRAD_TOL[dtype], name


@pytest.mark.parametrize("backend", ["fused", "hopper"])
def test_compile_fullgraph(backend):
    _need(backend)
    case = CASES[3]
    leaves = [t.requires_grad_() for t in _inputs(case, torch.bfloat16, seed=3)]

    def fn(q, k, v):
        return _varlen(q, k, v, case, backend)

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
