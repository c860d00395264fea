"""The naive CUDA backend against the reference (run in float64 on upcast inputs)."""
import itertools

import pytest
import torch

import fastna
from fastna import _args, backends, reference
from numerics import rel_error as _rel

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() and backends.naive.available()),
                       reason="needs CUDA and fastna._C with naive kernels"),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FWD_TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}
BWD_TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}

# (spatial shape, kernel, stride, dilation, causal, H, H_kv, D, Dv, N_extra)
CASES = [
    ((33,), 5, 1, 1, False, 2, 2, 32, 32, 0),
    ((30,), 6, 4, 2, False, 4, 1, 16, 24, 3),        # even kernel, MQA, Dv != D, extras
    ((31,), 7, 3, 4, True, 2, 2, 8, 8, 0),           # dilation 4 on 31: unequal groups
] + [
    ((9, 13), (3, 4), (2, 3), (2, 1), c, 4, 2, 32, 16, e)
    for c, e in zip(itertools.product([False, True], repeat=2), [0, 2, 0, 1])
] + [
    ((5, 6, 7), (2, 3, 4), (1, 2, 3), (2, 1, 1), c, 2, 1, 16, 16, int(c[1]))
    for c in itertools.product([False, True], repeat=3)
] + [
    ((15, 17), (5, 5), (5, 2), (3, 1), (False, False), 6, 3, 64, 64, 0),
]


def _make(case, dtype, seed, fused=False):
    shape, kernel, stride, dilation, causal, H, Hkv, D, Dv, E = case
    g = torch.Generator(device="cuda").manual_seed(seed)

    def r(*s):
        return torch.randn(*s, device="cuda", generator=g, dtype=torch.float32).to(dtype)

    if fused:  # slices of one projection: strided, non-contiguous
        q, k, v = r(2, *shape, H, 3, D).unbind(-2)
    else:
        q, k, v = r(2, *shape, H, D), r(2, *shape, Hkv, D), r(2, *shape, Hkv, Dv)
    ek = r(2, E, k.shape[-2], D) if E else None
    ev = r(2, E, v.shape[-2], v.shape[-1]) if E else None
    return q, k, v, ek, ev


def _compare(case, dtype, monkeypatch, fused=False, seed=0):
    monkeypatch.setenv("FASTNA_POISON", "1")
    shape, kernel, stride, dilation, causal = case[:5]
    q, k, v, ek, ev = _make(case, dtype, seed, fused)
    leaves = [t for t in (q, k, v, ek, ev) if t is not None]
    if fused:
        leaves = [t.detach().requires_grad_() for t in leaves]  # keep the strides
    else:
        leaves = [t.requires_grad_() for t in leaves]
    q, k, v = leaves[:3]
    ek, ev = (leaves[3], leaves[4]) if len(leaves) == 5 else (None, None)
    if fused:
        assert not q.is_contiguous()
    kw = dict(stride=stride, dilation=dilation, is_causal=causal, additional_keys=ek,
              additional_values=ev, return_lse=True)
    out, lse = fastna.neighborhood_attention(q, k, v, kernel, backend="naive", **kw)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, dout)

    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    rq, rk, rv = ref_leaves[:3]
    rek, rev = (ref_leaves[3], ref_leaves[4]) if ek is not None else (None, None)
    p = _args.normalize(rq, rk, rv, kernel, stride, dilation, causal, None, rek, rev)
    rout, rlse = reference.attention(rq, rk, rv, p, rek, rev, return_lse=True)
    rgrads = torch.autograd.grad(rout, ref_leaves, dout.double())

    assert out.dtype == dtype and lse.dtype == torch.float32
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert _rel(out, rout) < FWD_TOL[dtype]
    assert (lse.double() - rlse).abs().max().item() < 10 * FWD_TOL[dtype]
    for name, gr, rg in zip(["dq", "dk", "dv", "dextra_k", "dextra_v"], grads, rgrads):
        assert not torch.isnan(gr).any(), name
        assert gr.dtype == dtype and gr.shape == rg.shape, name
        assert _rel(gr, rg) < BWD_TOL[dtype], (name, _rel(gr, rg))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-k{c[1]}-s{c[2]}-d{c[3]}-c{c[4]}")
def test_naive_matches_reference(case, dtype, monkeypatch):
    _compare(case, dtype, monkeypatch)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", [((9, 10), (3, 4), 1, (2, 1), (True, False), 4, 4, 16, 16, 0),
                                  ((21,), 4, 2, 3, False, 2, 2, 32, 32, 2)],
                         ids=["2d", "1d-extras"])
def test_naive_non_contiguous(case, dtype, monkeypatch):
    _compare(case, dtype, monkeypatch, fused=True)


def test_auto_backend_falls_back_to_naive_on_cuda():
    """fp32 is outside the fused kernels' dtypes, so the default pick on CUDA is naive."""
    from fastna import backends

    q = torch.randn(1, 16, 2, 32, device="cuda", dtype=torch.float32)
    p = _args.normalize(q, q, q, 3)
    assert backends.select(None, q, q, q, p).name == "naive"
    assert "naive" in fastna.available_backends()


def test_naive_lse_is_not_differentiable():
    q = torch.randn(1, 16, 2, 32, device="cuda", requires_grad=True)
    out, lse = fastna.na1d(q, q, q, 3, backend="naive", return_lse=True)
    with pytest.raises(RuntimeError, match="lse"):
        lse.sum().backward()


def test_naive_empty_batch():
    q = torch.randn(0, 16, 2, 32, device="cuda")
    assert fastna.na1d(q, q, q, 3, backend="naive").shape == (0, 16, 2, 32)
