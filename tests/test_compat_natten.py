"""fastna.compat: the NATTEN 0.17 heads-first functional API and the `natten` import shim."""
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import types

import pytest
import torch

import fastna
from fastna import compat
from fastna import ops_unfused as U
from fastna.compat import natten as N

QK = {1: U.na1d_qk, 2: U.na2d_qk, 3: U.na3d_qk}
AV = {1: U.na1d_av, 2: U.na2d_av, 3: U.na3d_av}


def hf(t):  # heads-last -> heads-first
    return t.movedim(-2, 1)


def hl(t):  # heads-first -> heads-last
    return t.movedim(1, -2)


def rand(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# Parameter lists of NATTEN 0.17.4 natten/functional.py: (name, default or REQUIRED).
REQ = inspect.Parameter.empty
NATTEN_0_17_4 = {
    **{f"na{r}d_qk": [("query", REQ), ("key", REQ), ("kernel_size", REQ), ("dilation", 1),
                      ("additional_keys", None), ("is_causal", False), ("rpb", None)]
       for r in (1, 2, 3)},
    **{f"na{r}d_av": [("attn", REQ), ("value", REQ), ("kernel_size", REQ), ("dilation", 1),
                      ("additional_values", None), ("is_causal", False)] for r in (1, 2, 3)},
    # 0.17.4 added additional KV (and xformers_kwargs) to the fused ops, after scale.
    **{f"na{r}d": [("query", REQ), ("key", REQ), ("value", REQ), ("kernel_size", REQ),
                   ("dilation", 1), ("is_causal", False), ("rpb", None), ("scale", None),
                   ("additional_keys", None), ("additional_values", None),
                   ("xformers_kwargs", None)]
       for r in (1, 2, 3)},
    **{f"natten{r}dqkrpb": [("query", REQ), ("key", REQ), ("rpb", REQ), ("kernel_size", REQ),
                            ("dilation", REQ)] for r in (1, 2)},
    **{f"natten{r}dqk": [("query", REQ), ("key", REQ), ("kernel_size", REQ), ("dilation", REQ)]
       for r in (1, 2)},
    **{f"natten{r}dav": [("attn", REQ), ("value", REQ), ("kernel_size", REQ), ("dilation", REQ)]
       for r in (1, 2)},
    "natten3dqkrpb": [("query", REQ), ("key", REQ), ("rpb", REQ), ("kernel_size_d", REQ),
                      ("kernel_size", REQ), ("dilation_d", REQ), ("dilation", REQ)],
    "natten3dqk": [("query", REQ), ("key", REQ), ("kernel_size_d", REQ), ("kernel_size", REQ),
                   ("dilation_d", REQ), ("dilation", REQ)],
    "natten3dav": [("attn", REQ), ("value", REQ), ("kernel_size_d", REQ), ("kernel_size", REQ),
                   ("dilation_d", REQ), ("dilation", REQ)],
}
# 0.17.4's na3d_av alone has no default dilation; the shim defaults it to 1 like the others.
NATTEN_0_17_4["na3d_av"] = [("attn", REQ), ("value", REQ), ("kernel_size", REQ),
                            ("dilation", REQ), ("additional_values", None), ("is_causal", False)]


@pytest.mark.parametrize("name", sorted(NATTEN_0_17_4))
def test_signatures_match_natten_0_17_4(name):
    params = list(inspect.signature(getattr(N, name)).parameters.values())
    want = NATTEN_0_17_4[name]
    assert [p.name for p in params] == [n for n, _ in want]
    for p, (_, default) in zip(params, want):
        # Same default, or a default where NATTEN requires the argument (a superset).
        assert p.default == default or default is REQ, (p.name, p.default, default)


# (shape, kernel, dilation, causal, with_rpb); NATTEN 0.17.4 takes odd kernels > 1 only.
CASES = [
    ((12,), (5,), (2,), (False,), True),
    ((11,), (3,), (2,), (True,), False),
    ((9, 10), (3, 5), (3, 2), (False, False), True),
    ((9, 10), (3, 3), (2, 1), (False, True), False),
    ((5, 6, 7), (3, 3, 3), (1, 2, 2), (False, False, False), True),
    ((6, 6, 7), (3, 3, 3), (2, 1, 2), (True, False, False), False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{len(c[0])}d-{c}")
def test_heads_first_wrappers_match_heads_last_ops(case):
    shape, kernel, dil, causal, with_rpb = case
    r, B, H, D = len(shape), 2, 3, 4
    q, k, v = rand(B, H, *shape, D, seed=1), rand(B, H, *shape, D, seed=2), \
        rand(B, H, *shape, 5, seed=3)
    rpb = rand(H, *[2 * x - 1 for x in kernel], seed=4) if with_rpb else None
    qk = getattr(N, f"na{r}d_qk")
    av = getattr(N, f"na{r}d_av")
    attn = qk(q, k, kernel, dil, is_causal=causal, rpb=rpb)
    want = hf(QK[r](hl(q), hl(k), kernel, dil, causal, rpb=rpb))
    assert attn.shape == (B, H, *shape, torch.Size(kernel).numel())
    torch.testing.assert_close(attn, want, rtol=0, atol=0)
    probs = attn.softmax(-1)
    out = av(probs, v, kernel, dil, is_causal=causal)
    assert out.shape == v.shape
    torch.testing.assert_close(out, hf(AV[r](hl(probs), hl(v), kernel, dil, causal)),
                               rtol=0, atol=0)

    # The legacy names take int kernel/dilation (3D: separate depth values).
    if len(set(kernel[-2:])) == 1 and len(set(dil[-2:])) == 1 and not any(causal):
        if r == 3:
            args = (kernel[0], kernel[1], dil[0], dil[1])
        else:
            if len(set(kernel)) > 1 or len(set(dil)) > 1:
                return
            args = (kernel[0], dil[0])
        torch.testing.assert_close(getattr(N, f"natten{r}dqkrpb")(q, k, rpb, *args), attn)
        torch.testing.assert_close(getattr(N, f"natten{r}dav")(probs, v, *args), out)
        plain = getattr(N, f"natten{r}dqk")(q, k, *args)
        torch.testing.assert_close(plain, qk(q, k, kernel, dil))


def test_legacy_2d_int_args_and_gradients():
    q, k, v = rand(2, 2, 8, 9, 4, seed=1), rand(2, 2, 8, 9, 4, seed=2), rand(2, 2, 8, 9, 4, seed=3)
    rpb = rand(2, 5, 5, seed=4)
    for t in (q, k, v, rpb):
        t.requires_grad_()
    attn = N.natten2dqkrpb(q, k, rpb, 3, 2)
    out = N.natten2dav(attn.softmax(-1), v, 3, 2)
    ql, kl, vl = (hl(t.detach()).requires_grad_() for t in (q, k, v))
    rl = rpb.detach().clone().requires_grad_()
    ref = U.na2d_av(U.na2d_qk(ql, kl, 3, 2, rpb=rl).softmax(-1), vl, 3, 2)
    torch.testing.assert_close(out, hf(ref))
    g = rand(*out.shape, seed=9)
    out.backward(g)
    ref.backward(hl(g))
    for a, b in ((q, ql), (k, kl), (v, vl)):
        torch.testing.assert_close(a.grad, hf(b.grad))
    torch.testing.assert_close(rpb.grad, rl.grad)


def test_additional_kv_heads_first():
    B, H, X, Y, D, E = 2, 2, 7, 8, 4, 3
    q, k, v = rand(B, H, X, Y, D, seed=1), rand(B, H, X, Y, D, seed=2), rand(B, H, X, Y, D, seed=3)
    ek, ev = rand(B, H, E, D, seed=4), rand(B, H, E, D, seed=5)
    attn = N.na2d_qk(q, k, 3, 2, additional_keys=ek)
    assert attn.shape == (B, H, X, Y, 9 + E)
    out = N.na2d_av(attn.softmax(-1), v, 3, 2, additional_values=ev)
    ref = fastna.neighborhood_attention(hl(q), hl(k), hl(v), 3, 1, 2, scale=1.0,
                                        additional_keys=ek.transpose(1, 2),
                                        additional_values=ev.transpose(1, 2), backend="reference")
    torch.testing.assert_close(out, hf(ref))


def test_fused_api_heads_last():
    q, k, v = rand(2, 9, 8, 2, 4, seed=1), rand(2, 9, 8, 2, 4, seed=2), rand(2, 9, 8, 2, 4, seed=3)
    out = N.na2d(q, k, v, (3, 5), (2, 1), is_causal=(False, True))
    ref = fastna.neighborhood_attention(q, k, v, (3, 5), 1, (2, 1), (False, True),
                                        backend="reference")
    torch.testing.assert_close(out, ref)
    rpb = rand(2, 5, 9, seed=4)
    out = N.na2d(q, k, v, (3, 5), 1, rpb=rpb, scale=0.7)
    man = U.na2d_av(U.na2d_qk(q * 0.7, k, (3, 5), 1, rpb=rpb).softmax(-1), v, (3, 5), 1)
    torch.testing.assert_close(out, man)


@pytest.mark.parametrize("call, exc, match", [
    (lambda q: N.na2d_qk(q[0], q[0], 3), ValueError, r"heads-first \[B, H, X, Y, D\]"),
    (lambda q: N.na2d_av(q[..., :8], q, 3), ValueError, "attn last dim"),
    (lambda q: N.na1d_qk(q, q, 3), ValueError, r"heads-first \[B, H, L, D\]"),
    (lambda q: N.natten2dqkrpb(q, q, torch.zeros(2, 5, 5, dtype=q.dtype), 4, 1), ValueError,
     "odd kernel sizes"),
    (lambda q: N.na2d_qk(q, "k", 3), TypeError, "key must be a torch.Tensor"),
    (lambda q: N.na2d_qk(q, q, 3, additional_keys=q), ValueError, "additional_keys"),
])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(rand(2, 2, 6, 7, 9))


# ------------------------------------------------------------------------------- the shim

@pytest.fixture
def shim():
    had = "natten" in sys.modules
    assert not had or getattr(sys.modules["natten"], "__fastna_shim__", False)
    yield compat.install_natten_shim()
    compat.uninstall_natten_shim()


def test_shim_imports_and_metadata(shim):
    import natten
    from natten.functional import natten2dav, natten2dqkrpb

    assert natten is shim
    assert natten2dqkrpb is N.natten2dqkrpb and natten2dav is N.natten2dav
    assert natten.functional.na2d_qk is N.na2d_qk
    assert natten.__version__ == compat.NATTEN_SHIM_VERSION
    assert importlib.metadata.version("natten") == compat.NATTEN_SHIM_VERSION
    assert importlib.metadata.distribution("natten").metadata["Name"] == "natten"
    assert importlib.util.find_spec("natten") is not None
    assert importlib.util.find_spec("natten.functional") is not None
    assert natten.__version__.split("+")[0] == "0.17.4"  # a PEP 440 local version of 0.17.4
    # 0.17's probes answer for CUDA devices only.
    assert natten.has_half() == torch.cuda.is_available()

    # What transformers 4.x runs at import time (utils/import_utils._is_package_available).
    assert importlib.util.find_spec("natten") is not None
    importlib.metadata.version("natten")

    # Idempotent: a second install changes nothing.
    n_finders = len(sys.meta_path)
    assert compat.install_natten_shim() is natten
    assert len(sys.meta_path) == n_finders and compat.natten_shim_installed()

    # The functions do the real work.
    q = rand(1, 2, 6, 6, 4)
    out = natten2dav(natten2dqkrpb(q, q, rand(2, 5, 5), 3, 1).softmax(-1), q, 3, 1)
    assert out.shape == q.shape and torch.isfinite(out).all()


def test_shim_uninstall_and_reinstall():
    compat.install_natten_shim()
    compat.uninstall_natten_shim()
    compat.uninstall_natten_shim()  # idempotent
    assert not compat.natten_shim_installed()
    assert "natten" not in sys.modules and "natten.functional" not in sys.modules
    try:  # a real NATTEN might be installed in some environment; the shim must not linger
        dist = importlib.metadata.distribution("natten")
        assert dist.version != compat.NATTEN_SHIM_VERSION
    except importlib.metadata.PackageNotFoundError:
        pass
    mod = compat.install_natten_shim()
    try:
        import natten.functional as F
        assert F.na1d_av is N.na1d_av and mod.functional is F
    finally:
        compat.uninstall_natten_shim()


def test_shim_refuses_to_replace_imported_real_natten():
    compat.uninstall_natten_shim()
    real = types.ModuleType("natten")
    sys.modules["natten"] = real
    try:
        with pytest.raises(RuntimeError, match="already imported"):
            compat.install_natten_shim()
        assert sys.modules["natten"] is real
    finally:
        del sys.modules["natten"]
        compat.uninstall_natten_shim()
