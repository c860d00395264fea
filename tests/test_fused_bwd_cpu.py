"""The fused backend's backward wiring on CPU (no GPU): which backward runs, and what the
fused backward kernel is handed (head-dim padding, out/lse, dlse from return_lse and from the
extras merge, the custom op's direct path).

The compiled kernel table is faked (tests/fake_kernels.py: fused_fwd / fused_bwd rows for
the head dims of DIMS, a can_implement stub) and the fused forward and backward launches are
replaced by the float64 reference run on exactly what the kernels would receive; the kernels
themselves are checked in tests/test_fused_gpu.py.
"""
import pytest
import torch

from fake_kernels import faked, rows_for
from fastna import _args, _ops, _policy, reference
from fastna.backends import _fused_autograd, fused

DIMS = {32: {"default"}, 64: {"default"}, 128: {"default", _policy.FAST_TILE}}


@pytest.fixture
def fake(monkeypatch):
    """Forward and backward kernels = the reference; returns the list of backward calls."""
    monkeypatch.delenv("FASTNA_FUSED_BACKWARD", raising=False)
    rows = rows_for("fused_fwd", DIMS) + rows_for("fused_bwd", {d: {"default"} for d in DIMS})
    with faked(rows) as table:
        yield table.backward_calls


def _inputs(shape, H, Hkv, D, Dv, E, seed, B=2):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    q, k, v = r(B, *shape, H, D), r(B, *shape, Hkv, D), r(B, *shape, Hkv, Dv)
    return q, k, v, (r(B, E, Hkv, D) if E else None), (r(B, E, Hkv, Dv) if E else None)


CASES = [
    ((11, 7), (3, 5), 1, (2, 1), (False, True), 4, 2, 40, 24, 0),
    ((11, 7), (3, 5), 1, (2, 1), (False, True), 4, 2, 32, 32, 3),
    ((13,), 5, 2, 1, True, 3, 1, 64, 64, 0),
    ((4, 5, 6), (2, 3, 3), (1, 2, 1), 1, (True, False, True), 2, 2, 8, 8, 2),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_lse", [False, True])
@pytest.mark.parametrize("via_op", [False, True])
def test_fused_backward_wiring(case, with_lse, via_op, fake):
    shape, kernel, stride, dilation, causal, H, Hkv, D, Dv, E = case
    ts = _inputs(shape, H, Hkv, D, Dv, E, seed=D + E)
    leaves = [t.requires_grad_() for t in ts if t is not None]
    ek, ev = (leaves[3], leaves[4]) if E else (None, None)
    p = _args.normalize(*leaves[:3], kernel, stride, dilation, causal, None, ek, ev)
    if via_op:
        out, lse = _ops.run(*leaves[:3], p, ek, ev, True, "fused")
    else:
        out, lse = fused.forward(*leaves[:3], p, ek, ev, return_lse=True)
    g = torch.Generator().manual_seed(5)
    dout = torch.randn(out.shape, generator=g, dtype=out.dtype)
    dlse = torch.randn(lse.shape, generator=g, dtype=lse.dtype)
    outs, gs = ([out, lse], [dout, dlse]) if with_lse else ([out], [dout])
    grads = torch.autograd.grad(outs, leaves, gs)
    # exactly one fused backward call; it gets a dlse iff the caller's lse or the extras
    # merge sends one into the kernel's lse
    assert len(fake) == 1, fake
    assert fake[0]["dlse"] == (with_lse or bool(E)) and fake[0]["tile"] == "default"
    ref = [t.detach().clone().requires_grad_() for t in leaves]
    rout, rlse = reference.attention(*ref[:3], p, *(ref[3:] if E else (None, None)),
                                     return_lse=True)
    routs = [rout, rlse] if with_lse else [rout]
    for name, a, b in zip(["q", "k", "v", "ek", "ev"], grads, torch.autograd.grad(routs, ref, gs)):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)


def test_lse_only_gradient(fake):
    q, k, v, _, _ = _inputs((9, 8), 2, 2, 32, 32, 0, seed=3)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    p = _args.normalize(q, k, v, 3, 1, 1, False, None, None, None)
    _, lse = fused.forward(q, k, v, p, return_lse=True)
    dlse = torch.randn_like(lse)
    grads = torch.autograd.grad(lse, leaves, dlse)
    assert fake == [dict(P=32, tile="default", dlse=True, dout=False)]
    ref = [t.detach().clone().requires_grad_() for t in leaves]
    _, rlse = reference.attention(*ref, p, return_lse=True)
    rgrads = torch.autograd.grad(rlse, ref, dlse, allow_unused=True)
    assert rgrads[2] is None                      # lse does not depend on v
    for a, b in zip(grads, rgrads[:2] + (torch.zeros_like(v),)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["naive", "reference"])
def test_forced_mode_skips_fused(mode, fake, monkeypatch):
    monkeypatch.setenv("FASTNA_FUSED_BACKWARD", mode)
    seen = []
    monkeypatch.setattr(_fused_autograd, "reference",
                        lambda *a: seen.append(1) or (torch.zeros_like(a[0]),
                                                      torch.zeros_like(a[1]),
                                                      torch.zeros_like(a[2])))
    q, k, v, _, _ = _inputs((9, 8), 2, 2, 32, 32, 0, seed=3)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    p = _args.normalize(q, k, v, 3, 1, 1, False, None, None, None)
    out = fused.forward(q, k, v, p)
    torch.autograd.grad(out, leaves, torch.ones_like(out))
    assert fake == [] and seen == [1]   # no naive_bwd on CPU: naive falls back to reference


def test_bad_mode_raises(fake, monkeypatch):
    monkeypatch.setenv("FASTNA_FUSED_BACKWARD", "fast")
    with pytest.raises(ValueError, match="FASTNA_FUSED_BACKWARD"):
        _policy.forced_backward()
