"""torch.compile / custom-op / autocast integration (fastna._ops, fastna._dispatch).

CPU: a model calling fastna.na2d (the reference backend) compiled with fullgraph=True on the
eager, aot_eager and inductor backends equals eager, forward and gradients, with no graph
break; the custom ops fastna::na_forward / na_backward pass torch.library.opcheck through
their backend="reference" path, and the API's op route (forced onto the reference) compiles,
also with dynamic shapes; CPU autocast.
GPU (marked gpu): the same with backend="fused" and "naive" (the custom ops), opcheck on CUDA,
CUDA autocast.
"""
import pytest
import torch

import fastna
from fastna import _args, backends, reference
from numerics import rel_error as _rel


class TinyNA(torch.nn.Module):
    """qkv projection -> fastna.na2d (packed, strided q/k/v) -> output projection."""

    def __init__(self, dim=16, heads=2, kernel=3, dilation=(1, 2), is_causal=(False, True),
                 backend=None, return_lse=False):
        super().__init__()
        self.heads, self.kernel, self.dilation, self.is_causal = heads, kernel, dilation, is_causal
        self.backend, self.return_lse = backend, return_lse
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):
        B, X, Y, C = x.shape
        q, k, v = self.qkv(x).reshape(B, X, Y, 3, self.heads, C // self.heads).unbind(3)
        res = fastna.na2d(q, k, v, self.kernel, dilation=self.dilation,
                          is_causal=self.is_causal, backend=self.backend,
                          return_lse=self.return_lse)
        if self.return_lse:
            out, lse = res
            return self.proj(out.reshape(B, X, Y, C)), lse
        return self.proj(res.reshape(B, X, Y, C))


def _grads(model, x, compiled=None):
    """Output and gradients (parameters and input) of model (or compiled) on x."""
    model.zero_grad()
    x = x.detach().requires_grad_()
    res = (model if compiled is None else compiled)(x)
    out = res[0] if isinstance(res, tuple) else res
    loss = (out.float() * torch.linspace(-1, 1, out.shape[-1], device=out.device)).sum()
    if isinstance(res, tuple):
        loss = loss + res[1].float().sin().sum()
    loss.backward()
    grads = [x.grad] + [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return res, grads


def _compare_compiled(model, x, backend, tol=1e-5, **kw):
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend, **kw)
    got, ggot = _grads(model, x, compiled)
    want, gwant = _grads(model, x)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert _rel(a, b) < tol, _rel(a, b)
    for a, b in zip(ggot, gwant):
        assert _rel(a, b) < tol, _rel(a, b)


def _graph_breaks(fn, *args):
    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args).graph_break_count


# ------------------------------------------------------------------------------- CPU

@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("return_lse", [False, True], ids=["out", "out+lse"])
def test_compiled_reference_matches_eager(backend, return_lse):
    torch.manual_seed(0)
    model = TinyNA(return_lse=return_lse)
    _compare_compiled(model, torch.randn(2, 7, 9, 16), backend)


def test_compiled_reference_inductor():
    """Inductor (C++ codegen) on the reference: forward only, to keep the CPU suite fast (its
    cold compile with the backward takes ~15 s here); gradients through AOTAutograd are
    checked with aot_eager above, and with inductor on the GPU."""
    torch.manual_seed(0)
    model = TinyNA(kernel=(3, 5), dilation=1, is_causal=False)
    x = torch.randn(2, 6, 10, 16)
    torch._dynamo.reset()
    with torch.no_grad():
        got = torch.compile(model, fullgraph=True)(x)
        want = model(x)
    assert _rel(got, want) < 1e-5


def test_no_graph_breaks_cpu():
    torch.manual_seed(0)
    model = TinyNA()
    x = torch.randn(1, 7, 9, 16)
    assert _graph_breaks(model, x) == 0
    with torch.no_grad():
        assert _graph_breaks(model, x) == 0
    # the library's own module too
    m = fastna.NeighborhoodAttention2D(16, 2, 3, dilation=2)
    assert _graph_breaks(m, x) == 0


def test_compiled_extras_gqa_and_dynamic_shapes():
    def f(q, k, v, ek, ev):
        return fastna.na1d(q, k, v, 4, stride=2, dilation=2, additional_keys=ek,
                           additional_values=ev)

    torch._dynamo.reset()
    cf = torch.compile(f, fullgraph=True, backend="eager", dynamic=True)
    for L in (17, 23):
        q, k, v = torch.randn(2, L, 4, 8), torch.randn(2, L, 2, 8), torch.randn(2, L, 2, 6)
        ek, ev = torch.randn(2, 3, 2, 8), torch.randn(2, 3, 2, 6)
        assert _rel(cf(q, k, v, ek, ev), f(q, k, v, ek, ev)) < 1e-6


def test_explicit_backend_errors_under_compile():
    q = torch.randn(1, 8, 8, 2, 16)
    torch._dynamo.reset()
    fn = torch.compile(lambda q: fastna.na2d(q, q, q, 3, backend="naive"), backend="eager")
    # CPU tensors: a ValueError where the naive kernels run, NotImplementedError where they
    # cannot (no CUDA device) -- either way the explicit backend's reason, as in eager calls.
    expected = ValueError if torch.cuda.is_available() else NotImplementedError
    with pytest.raises(expected, match="backend='naive' cannot run this call"):
        fn(q)
    torch._dynamo.reset()
    fn = torch.compile(lambda q: fastna.na2d(q, q, q, 3, backend="naive"), backend="eager",
                       fullgraph=True)
    with pytest.raises(Exception) as info:
        fn(q)
    # fastna raises the same ValueError; under fullgraph=True dynamo wraps any exception the
    # traced code raises as "Observed exception", and only newer releases (2.13 here) append
    # the original one to that text.
    text = str(info.value)
    assert "backend='naive' cannot run this call" in text or \
        (type(info.value).__name__ == "Unsupported" and "Observed exception" in text), text


@pytest.fixture
def reference_through_ops(monkeypatch):
    """Route the reference backend through the custom ops, as the CUDA backends are under
    torch.compile (and in eager calls too here: FASTNA_EAGER_CUSTOM_OP's switch)."""
    monkeypatch.setattr(backends.reference, "via_custom_op", True)
    monkeypatch.setattr(fastna._dispatch, "_EAGER_CUSTOM_OP", True)
    yield
    torch._dynamo.reset()


def _ops_in_graph(fn, *args):
    torch._dynamo.reset()
    ex = torch._dynamo.explain(fn)(*args)
    code = "\n".join(g.code for g in ex.graphs)
    return ex.graph_break_count, code


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_op_route_compiles(reference_through_ops, backend):
    torch.manual_seed(0)
    model = TinyNA(return_lse=True)
    x = torch.randn(2, 7, 9, 16)
    breaks, code = _ops_in_graph(model, x)
    assert breaks == 0 and "fastna.na_forward" in code
    _compare_compiled(model, x, backend)


def test_op_route_dynamic_shapes(reference_through_ops):
    def f(q, k, v):
        return fastna.na2d(q, k, v, 3, dilation=(1, 2), is_causal=(True, False))

    torch._dynamo.reset()
    cf = torch.compile(f, fullgraph=True, backend="aot_eager", dynamic=True)
    for shape in [(2, 8, 9, 2, 16), (3, 10, 9, 2, 16)]:
        q = torch.randn(shape, requires_grad=True)
        out, want = cf(q, q, q), f(q, q, q)
        (g,) = torch.autograd.grad(out.sum(), q)
        (gw,) = torch.autograd.grad(want.sum(), q)
        assert _rel(out, want) < 1e-6 and _rel(g, gw) < 1e-6


def test_op_route_eager_matches_reference(reference_through_ops):
    """Eager calls through the op: values, gradients (incl. through lse), empty batch."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 9, 10, s, 8, generator=g, dtype=torch.float64).requires_grad_()
               for s in (4, 2, 2))
    ek, ev = (torch.randn(2, 3, 2, 8, generator=g, dtype=torch.float64).requires_grad_()
              for _ in range(2))
    kw = dict(stride=(1, 2), dilation=(2, 1), is_causal=(False, True), additional_keys=ek,
              additional_values=ev, return_lse=True)
    out, lse = fastna.na2d(q, k, v, 3, **kw)
    assert lse.dtype == torch.float32  # the op's contract (the reference alone: float64)
    p = _args.normalize(q, k, v, 3, (1, 2), (2, 1), (False, True), None, ek, ev)
    rout, rlse = reference.attention(q, k, v, p, ek, ev, return_lse=True)
    assert _rel(out, rout) < 1e-12 and _rel(lse, rlse) < 1e-6
    leaves = [q, k, v, ek, ev]
    dout, dlse = torch.randn_like(out), torch.randn_like(rlse)
    got = torch.autograd.grad([out, lse], leaves, [dout, dlse.float()])
    want = torch.autograd.grad([rout, rlse], leaves, [dout, dlse])
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-6
    # only the output differentiated; no extras
    out = fastna.na2d(q, k, v, 3)
    (gq,) = torch.autograd.grad(out.sum(), q)
    assert gq.shape == q.shape
    e = torch.randn(0, 8, 8, 2, 8, requires_grad=True)
    assert fastna.na2d(e, e, e, 3).shape == e.shape


def _op_args(dtype=torch.float32, device="cpu", extras=True, backend="reference", grad=True,
             D=16):
    g = torch.Generator(device=device).manual_seed(0)

    def r(*s):
        t = torch.randn(*s, generator=g, device=device, dtype=torch.float32).to(dtype)
        return t.requires_grad_(grad)

    q, k, v = r(2, 7, 8, 4, D), r(2, 7, 8, 2, D), r(2, 7, 8, 2, D)
    ek, ev = (r(2, 3, 2, D), r(2, 3, 2, D)) if extras else (None, None)
    return (q, k, v, ek, ev, [3, 4], [1, 2], [2, 1], [False, True], 0.25, backend)


def _opcheck_both(args):
    out, lse, aux = torch.ops.fastna.na_forward(*args)
    if args[-1] == "naive":
        # opcheck's autograd tests backpropagate into every output, lse too, which the naive
        # backend refuses: check its forward without grad (its backward op is checked below,
        # its autograd wiring by the compiled-model tests)
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(torch.ops.fastna.na_forward.default, args)
    # naive: a nonzero lse gradient raises, a zero one counts as none
    dlse = torch.zeros_like(lse) if args[-1] == "naive" else torch.randn_like(lse)
    bargs = (torch.randn_like(out), dlse) + args[:5] + (out, lse, aux) + args[5:]
    bargs = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in bargs)
    torch.library.opcheck(torch.ops.fastna.na_backward.default, bargs)
    # dout only (dlse None)
    torch.library.opcheck(torch.ops.fastna.na_backward.default, bargs[:1] + (None,) + bargs[2:])


@pytest.mark.parametrize("extras", [False, True], ids=["plain", "extras"])
def test_opcheck_cpu(extras):
    _opcheck_both(_op_args(extras=extras))


@pytest.fixture
def fused_on_cpu():
    """The fused backend's Python layers on CPU: a fake kernel table with head dims 32 and 64
    (CPU tensors count as CUDA ones), the launches replaced by the reference
    (tests/fake_kernels.py)."""
    from fake_kernels import faked, rows_for
    with faked(rows_for("fused_fwd", {32: {"default"}, 64: {"default"}})):
        yield
    torch._dynamo.reset()


def test_fused_op_path_on_cpu(fused_on_cpu):
    """backend="fused" through the custom ops (padding D=24 -> 32, extras merged through the
    lse, lse gradient): eager and compiled equal the reference; opcheck."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 7, 9, s, 24, generator=g).requires_grad_() for s in (4, 2, 2))
    ek, ev = (torch.randn(2, 3, 2, 24, generator=g).requires_grad_() for _ in range(2))
    leaves = [q, k, v, ek, ev]

    def f(q, k, v, ek, ev):
        return fastna.na2d(q, k, v, (3, 4), dilation=(2, 1), is_causal=(False, True),
                           additional_keys=ek, additional_values=ev, return_lse=True,
                           backend="fused")

    p = _args.normalize(q, k, v, (3, 4), 1, (2, 1), (False, True), None, ek, ev)
    rout, rlse = reference.attention(*leaves[:3], p, ek, ev, return_lse=True)
    dout, dlse = torch.randn_like(rout), torch.randn_like(rlse)
    want = torch.autograd.grad([rout, rlse], leaves, [dout, dlse])
    breaks, code = _ops_in_graph(f, *leaves)
    assert breaks == 0 and "fastna.na_forward" in code
    torch._dynamo.reset()
    for fn in (f, torch.compile(f, fullgraph=True, backend="aot_eager")):
        out, lse = fn(*leaves)
        assert _rel(out, rout) < 1e-5 and _rel(lse, rlse) < 1e-5
        got = torch.autograd.grad([out, lse], leaves, [dout, dlse])
        for a, b in zip(got, want):
            assert _rel(a, b) < 1e-5
    _opcheck_both(_op_args(backend="fused", D=24))


def test_autocast_cpu():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 9, 10, 2, 16, requires_grad=True) for _ in range(3))

    def f(q, k, v):
        return fastna.na2d(q, k, v, 3, dilation=(2, 1))

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = f(q, k, v)
        torch._dynamo.reset()
        cout = torch.compile(f, fullgraph=True, backend="eager")(q, k, v)
    assert out.dtype == cout.dtype == torch.bfloat16
    p = _args.normalize(q, k, v, 3, 1, (2, 1))
    want = reference.attention(*(t.detach().bfloat16() for t in (q, k, v)), p)
    assert _rel(out, want) < 1e-6 and _rel(cout, want) < 1e-6
    (gq,) = torch.autograd.grad(out.float().sum(), q)
    assert gq.dtype == torch.float32 and torch.isfinite(gq).all()


# ------------------------------------------------------------------------------- GPU

def _need(name):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not backends.get(name).available():
        pytest.skip(f"backend {name!r} not built")


GPU_CASES = [("fused", torch.float16), ("fused", torch.bfloat16), ("naive", torch.float32),
             ("naive", torch.float16)]
GPU_TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 4e-2}
SAME_TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("name,dtype", GPU_CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_compiled_cuda_matches_eager(name, dtype, compiler):
    _need(name)
    torch.manual_seed(0)
    model = TinyNA(dim=128, heads=2, kernel=(3, 5), backend=name).cuda().to(dtype)
    x = torch.randn(2, 9, 12, 128, device="cuda", dtype=dtype)
    breaks, code = _ops_in_graph(model, x)
    assert breaks == 0 and "fastna.na_forward" in code
    # eager and compiled run the same attention kernels; only rounding in the projections
    # (and atomics in the naive backward) may differ
    _compare_compiled(model, x, compiler, tol=SAME_TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("name,dtype", GPU_CASES, ids=lambda c: str(c))
def test_compiled_cuda_matches_reference(name, dtype):
    _need(name)
    g = torch.Generator(device="cuda").manual_seed(3)
    q, k, v = (torch.randn(2, 9, 12, 2, 64, device="cuda", generator=g).to(dtype)
               .requires_grad_() for _ in range(3))

    def f(q, k, v):
        return fastna.na2d(q, k, v, (3, 5), dilation=(2, 1), is_causal=(True, False),
                           backend=name)

    torch._dynamo.reset()
    out = torch.compile(f, fullgraph=True)(q, k, v)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    p = _args.normalize(*leaves, (3, 5), 1, (2, 1), (True, False))
    want = reference.attention(*leaves, p)
    wgrads = torch.autograd.grad(want, leaves, dout.double())
    assert out.dtype == dtype and _rel(out, want) < GPU_TOL[dtype]
    for a, b in zip(grads, wgrads):
        assert a.dtype == dtype and _rel(a, b) < 2 * GPU_TOL[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("name,dtype", [("fused", torch.float16), ("naive", torch.float16),
                                        ("naive", torch.float32)], ids=lambda c: str(c))
@pytest.mark.parametrize("extras", [False, True], ids=["plain", "extras"])
def test_opcheck_cuda(name, dtype, extras):
    _need(name)
    args = _op_args(dtype=dtype, device="cuda", extras=extras, backend=name, D=32)
    q, k, v, ek, ev = args[:5]
    p = _args.normalize(q, k, v, args[5], args[6], args[7], args[8], args[9], ek, ev)
    reason = backends.get(name).check(q, k, v, p, ek, ev)
    if reason is not None:
        pytest.skip(f"{name} declines: {reason}")
    _opcheck_both(args)


@pytest.mark.gpu
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_autocast_cuda(compiled):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = torch.Generator(device="cuda").manual_seed(5)
    q, k, v = (torch.randn(2, 10, 12, 2, 64, device="cuda", generator=g).requires_grad_()
               for _ in range(3))

    def f(q, k, v):
        return fastna.na2d(q, k, v, 5, dilation=(1, 2))

    torch._dynamo.reset()
    fn = torch.compile(f, fullgraph=True) if compiled else f
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = fn(q, k, v)
    assert out.dtype == torch.bfloat16
    p = _args.normalize(q, k, v, 5, 1, (1, 2))
    ref = reference.attention(*(t.detach().bfloat16().double() for t in (q, k, v)), p)
    assert _rel(out, ref) < GPU_TOL[torch.bfloat16]
    (gq,) = torch.autograd.grad(out.float().sum(), q)
    assert gq.dtype == torch.float32 and torch.isfinite(gq).all()


@pytest.mark.gpu
def test_compiled_naive_lse_output_without_lse_gradient():
    """lse returned from a compiled region but not differentiated: AOTAutograd passes a zero
    tangent for it, which must not trip the naive backend's lse error."""
    _need("naive")
    q = torch.randn(1, 16, 2, 32, device="cuda", requires_grad=True)

    def f(q):
        return fastna.na1d(q, q, q, 3, backend="naive", return_lse=True)

    torch._dynamo.reset()
    out, lse = torch.compile(f, fullgraph=True, backend="aot_eager")(q)
    (g,) = torch.autograd.grad(out.sum(), q)
    assert torch.isfinite(g).all()
    out, lse = f(q)
    with pytest.raises(RuntimeError, match="lse"):
        lse.sum().backward()
