"""fastna.neighborhood_attention_varlen on CPU against one fastna.neighborhood_attention call
(backend="reference") per sample: its per-shape path (backend=None: one call per group of samples
with equal shape and parameters, gathered and scattered) on random mixes of 1-8 samples with
repeated shapes, 1D/2D/3D, shared and per-sample parameters, every causal combination, GQA,
Dv != D, return_lse, gradients, float64 / float32, non-contiguous inputs; its per-sample
reference path; one launch per group on the faked fused kernels; torch.compile; the errors."""
import itertools
import random

import pytest
import torch

import fastna
from fastna import varlen
from numerics import rel_error as _rel, random_window_params as _window_params

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def _mix(rng, rank, count, per_sample):
    """count samples drawn from 1-3 shapes (so groups repeat and interleave) and their window
    parameters: per_sample draws 1-2 parameter sets per shape, else one set for all."""
    hi = 9 if rank < 3 else 5
    pool = [tuple(rng.randint(3, hi) for _ in range(rank)) for _ in range(rng.randint(1, 3))]
    shapes = [rng.choice(pool) for _ in range(count)]
    if per_sample:
        sets = {s: [_window_params(rng, s) for _ in range(rng.randint(1, 2))] for s in pool}
        params = [rng.choice(sets[s]) for s in shapes]
    else:   # one set valid for every sample: the smallest shape bounds it
        smallest = tuple(min(s[a] for s in shapes) for a in range(rank))
        params = [_window_params(rng, smallest)] * count
    return shapes, params


def _packed(shapes, H, Hkv, D, Dv, dtype, seed):
    total = sum(torch.Size(s).numel() for s in shapes)
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(total, h, d, generator=g, dtype=torch.float64).to(dtype)
            .requires_grad_() for h, d in ((H, D), (Hkv, D), (Hkv, Dv))]


def _per_sample_calls(q, k, v, shapes, params):
    """The oracle: one fastna.neighborhood_attention(backend="reference") call per sample."""
    outs, lses, start = [], [], 0
    for shape, (kernel, stride, dilation, causal) in zip(shapes, params):
        n = torch.Size(shape).numel()
        sq, sk, sv = (t[start:start + n].reshape(1, *shape, *t.shape[1:]) for t in (q, k, v))
        out, lse = fastna.neighborhood_attention(sq, sk, sv, kernel, stride, dilation, causal,
                                                 return_lse=True, backend="reference")
        outs.append(out.reshape(n, *out.shape[-2:]))
        lses.append(lse.reshape(n, lse.shape[-1]))
        start += n
    return torch.cat(outs), torch.cat(lses)


def _args(params, per_sample):
    return [list(x) for x in zip(*params)] if per_sample else list(params[0])


def _check(got, want, leaves, tol, grads=True):
    """Values of (out, lse) and, with grads, the gradients of both into leaves."""
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert _rel(a, b) < tol, _rel(a, b)
    if not grads:
        return
    g = torch.Generator().manual_seed(7)
    tangents = [torch.randn(w.shape, generator=g, dtype=torch.float64).to(w.dtype) for w in want]
    for a, b in zip(torch.autograd.grad(got, leaves, tangents),
                    torch.autograd.grad(want, leaves, tangents)):
        assert _rel(a, b) < tol, _rel(a, b)


# ----------------------------------------------------------------------------- per-shape path

@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("seed", range(2))
def test_per_shape_path_matches_one_call_per_sample(rank, per_sample, dtype, seed):
    rng = random.Random(1000 * rank + 10 * seed + per_sample + 100 * (dtype == torch.float32))
    shapes, params = _mix(rng, rank, rng.randint(1, 8), per_sample)
    H, Hkv = rng.choice([(2, 2), (4, 2), (3, 1)])
    D, Dv = rng.choice([(8, 8), (8, 5)])
    leaves = _packed(shapes, H, Hkv, D, Dv, dtype, rng.randint(0, 2**31))
    spatial = torch.tensor(shapes) if seed % 2 else shapes
    args = _args(params, per_sample)
    p = varlen.plan(*leaves, spatial, *args)
    assert len(p.groups) == len(set(zip(shapes, params)))
    got = fastna.neighborhood_attention_varlen(*leaves, spatial, *args, return_lse=True)
    want = _per_sample_calls(*leaves, shapes, params)
    _check(got, want, leaves, TOL[dtype])
    # the oracle path of the varlen API itself: one group per sample, same values
    assert len(varlen.plan(*leaves, spatial, *args, backend="reference").groups) == len(shapes)
    ref = fastna.neighborhood_attention_varlen(*leaves, spatial, *args, return_lse=True,
                                               backend="reference")
    _check(ref, want, leaves, TOL[dtype], grads=False)


# per rank: shapes with a group (samples 0 and 2) that sample 1 splits, and their
# (kernel, stride, dilation) -- the causal flags come from the test's parameters
CAUSAL_MIXES = {
    1: ([(9,), (7,), (9,), (6,)], [(3, 2, 2), (4, 1, 1), (3, 2, 2), (2, 1, 3)]),
    2: ([(5, 7), (6, 4), (5, 7), (3, 9)],
        [((3, 3), (1, 2), (1, 1)), ((2, 3), (2, 1), (2, 1)), ((3, 3), (1, 2), (1, 1)),
         ((3, 2), (1, 1), (1, 3))]),
    3: ([(3, 4, 5), (4, 3, 3), (3, 4, 5)],
        [((2, 3, 2), (1, 2, 1), (1, 1, 2)), ((3, 2, 2), (2, 1, 1), (1, 1, 1)),
         ((2, 3, 2), (1, 2, 1), (1, 1, 2))]),
}


@pytest.mark.parametrize("causal", [c for rank in (1, 2, 3)
                                    for c in itertools.product([False, True], repeat=rank)],
                         ids=lambda c: "".join("C" if x else "n" for x in c))
def test_every_causal_combination_and_gradients(causal):
    shapes, windows = CAUSAL_MIXES[len(causal)]
    params = [w + (causal,) for w in windows]
    leaves = _packed(shapes, 4, 2, 6, 6, torch.float64, seed=sum(causal))
    assert varlen.plan(*leaves, shapes, *_args(params, True)).gather is not None
    got = fastna.neighborhood_attention_varlen(*leaves, shapes, *_args(params, True),
                                               return_lse=True)
    _check(got, _per_sample_calls(*leaves, shapes, params), leaves, 1e-12)


def test_groups_in_packing_order_are_split_views():
    """Runs of equal samples in order need no gather: the rows stay in place."""
    shapes = [(4, 6), (4, 6), (5, 5), (5, 5), (5, 5)]
    params = [((3, 3), 1, 1, False)] * 5
    leaves = _packed(shapes, 2, 2, 8, 8, torch.float64, seed=3)
    p = varlen.plan(*leaves, shapes, 3)
    assert p.gather is None and p.scatter is None and len(p.groups) == 2
    got = fastna.neighborhood_attention_varlen(*leaves, shapes, 3, return_lse=True)
    _check(got, _per_sample_calls(*leaves, shapes, params), leaves, 1e-12)


def test_non_contiguous_inputs():
    """q / k / v as strided views (a fused qkv projection's columns, a transposed layout)."""
    shapes = [(6, 5), (4, 7), (6, 5)]
    params = [((3, 3), (1, 2), (1, 1), (True, False))] * 3
    total, g = sum(torch.Size(s).numel() for s in shapes), torch.Generator().manual_seed(4)
    qkv = torch.randn(total, 4, 3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v_t = torch.randn(2, total, 6, generator=g, dtype=torch.float64, requires_grad=True)
    q, k, v = qkv[:, :, 0], qkv[:, 0:4:2, 1], v_t.transpose(0, 1)
    assert not any(t.is_contiguous() for t in (q, k, v))
    got = fastna.neighborhood_attention_varlen(q, k, v, shapes, *params[0], return_lse=True)
    want = _per_sample_calls(q.contiguous(), k.contiguous(), v.contiguous(), shapes, params)
    _check(got, want, [qkv, v_t], 1e-12)


def test_half_precision_keeps_the_dtype():
    q = torch.randn(6 * 6 + 4 * 8 + 6 * 6, 2, 16, dtype=torch.bfloat16)
    out, lse = fastna.neighborhood_attention_varlen(q, q, q, [(6, 6), (4, 8), (6, 6)], 3,
                                                    return_lse=True)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape and lse.dtype == torch.float32
    want, _ = _per_sample_calls(q.double(), q.double(), q.double(), [(6, 6), (4, 8), (6, 6)],
                                [(3, 1, 1, False)] * 3)
    assert _rel(out, want) < 1e-2


def test_autocast_cpu():
    q = torch.randn(5 * 5 + 4 * 6 + 5 * 5, 2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fastna.neighborhood_attention_varlen(q, q, q, [(5, 5), (4, 6), (5, 5)], 3)
    assert out.dtype == torch.bfloat16


def test_explain_names_the_path_and_groups():
    shapes = [(5, 6), (4, 4), (5, 6)]
    q = torch.randn(5 * 6 * 2 + 16, 2, 8)
    text = varlen.explain_varlen(q, q, q, shapes, 3)
    assert text.startswith("per-shape path: 2 call(s) of fastna.neighborhood_attention for 3 "
                           "sample(s)") and "not a single varlen launch" in text
    assert "samples 0, 2 (spatial shape (5, 6))" in text and "runs: backend 'reference'" in text
    text = varlen.explain_varlen(q, q, q, shapes, 3, backend="reference")
    assert text.startswith("per-sample reference path: 3 call(s)")


# ------------------------------------------------------- one launch per group (faked kernels)

@pytest.mark.parametrize("backend", [None, "fused"])
def test_fused_backend_runs_one_launch_per_group(backend, set_tf32):
    """On the faked kernel table (launches = the reference on what the kernel gets): one
    forward and one backward launch per group, each with its group's batch.  (backend=None
    takes fused for float32 only while TF32 is allowed.)"""
    from fake_kernels import faked, rows_for
    set_tf32(True)
    shapes = [(6, 5), (4, 7), (6, 5), (6, 5), (4, 7), (3, 8)]
    params = [((3, 3), (1, 2), (1, 1), (False, True))] * 6
    leaves = _packed(shapes, 4, 2, 32, 32, torch.float32, seed=9)
    rows = rows_for("fused_fwd", {32: {"default"}}) + rows_for("fused_bwd", {32: {"default"}})
    with faked(rows) as table:
        got = fastna.neighborhood_attention_varlen(*leaves, shapes, *params[0],
                                                   return_lse=True, backend=backend)
        assert [c["q"].shape[:3] for c in table.forward_calls] == \
            [(3, 6, 5), (2, 4, 7), (1, 3, 8)]
        want = _per_sample_calls(*leaves, shapes, params)
        _check(got, want, leaves, 1e-5)
        assert len(table.backward_calls) == 3


# ----------------------------------------------------------------------------- torch.compile

class TinyVarlen(torch.nn.Module):
    """Packed tokens [total, C] -> qkv projection -> varlen attention -> output projection."""

    def __init__(self, shapes, dim=16, heads=2):
        super().__init__()
        self.shapes, self.heads = shapes, heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).reshape(x.shape[0], 3, self.heads, -1).unbind(1)
        out, lse = fastna.neighborhood_attention_varlen(
            q, k, v, self.shapes, [3, (3, 2), 3], dilation=[1, 1, (1, 2)],
            is_causal=(False, True), return_lse=True)
        return self.proj(out.reshape(x.shape)), lse


@pytest.fixture
def dynamo_reset():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compile_traces_it(dynamo_reset):
    """fullgraph=True, no graph break; aot_eager (AOTAutograd: forward and backward graphs)
    equals eager, outputs, lse and gradients."""
    from test_compile import _compare_compiled, _graph_breaks
    torch.manual_seed(0)
    shapes = [(5, 6), (4, 5), (5, 6)]    # samples 0 and 2: one group, gathered and scattered
    model = TinyVarlen(shapes)
    x = torch.randn(80, 16)
    assert _graph_breaks(model, x) == 0
    _compare_compiled(model, x, "aot_eager")


def test_tensor_shapes_under_compile(dynamo_reset):
    """A tensor's values do not exist while dynamo traces: a TypeError asking for a list
    under fullgraph=True; without it the call falls back to eager (a graph break)."""
    shapes = torch.tensor([[5, 6], [4, 4]])
    q = torch.randn(46, 2, 8)

    def f(q):
        return fastna.neighborhood_attention_varlen(q, q, q, shapes, 3)

    with pytest.raises(Exception) as info:
        torch.compile(f, backend="eager", fullgraph=True)(q)
    # dynamo wraps what the traced code raises as "Observed exception" under fullgraph=True;
    # newer releases append the original message (as in test_compile.py)
    text = str(info.value)
    assert "spatial_shapes as a tensor cannot be read while torch.compile traces" in text or \
        (type(info.value).__name__ == "Unsupported" and "Observed exception" in text), text
    torch._dynamo.reset()
    got = torch.compile(f, backend="eager")(q)
    assert _rel(got, f(q)) < 1e-6


# ----------------------------------------------------------------------------- errors

Q = torch.randn(5 * 5 + 3 * 4, 2, 8)
S = [(5, 5), (3, 4)]


def _call(*args, q=Q, k=Q, v=Q, **kw):
    return lambda: fastna.neighborhood_attention_varlen(q, k, v, *args, **kw)


@pytest.mark.parametrize("exc,match,call", [
    (ValueError, r"query has 37 tokens but spatial_shapes \[\(5, 5\), \(3, 3\)\] sum to 34 "
                 r"\(tokens per sample: \[25, 9\]\)", _call([(5, 5), (3, 3)], 3)),
    (ValueError, r"key has 36 tokens", _call(S, 3, k=Q[:36])),
    (ValueError, r"sample 1 \(spatial shape \(3, 4\)\): kernel_size \* dilation", _call(S, 5)),
    (ValueError, r"sample 0 \(spatial shape \(5, 5\)\): kernel_size \* dilation",
     _call(S, [3, 2], dilation=[2, 1])),
    (ValueError, r"kernel_size as a list gives one entry per sample: expected 2 entries",
     _call(S, [3, 3, 3])),
    (ValueError, r"is_causal as a list gives one entry per sample: expected 2 entries",
     _call(S, 3, is_causal=[True])),
    (ValueError, r"every sample must have the same rank: spatial_shapes\[1\] = \(12,\) has 1 "
                 r"axes but spatial_shapes\[0\] = \(5, 5\) has 2", _call([(5, 5), (12,)], 3)),
    (ValueError, r"sample 1 \(spatial shape \(3, 4\)\): kernel_size must be an int or a tuple "
                 r"of 2 ints", _call(S, [3, (2, 2, 2)])),
    (ValueError, r"spatial_shapes\[1\] \(sample 1\) must be a tuple of 1 to 3 positive ints, "
                 r"got \(3, 0\) \(axis 1: 0\)", _call([(5, 5), (3, 0)], 3)),
    (ValueError, r"spatial_shapes\[0\] \(sample 0\) .* got \(-5, -5\) \(axis 0: -5\)",
     _call([(-5, -5), (3, 4)], 3)),
    (TypeError, r"spatial_shapes\[1\] \(sample 1\) .* \(axis 0: 3.0 of type float\)",
     _call([(5, 5), (3.0, 4)], 3)),
    (ValueError, r"spatial_shapes\[1\] \(sample 1\) must be a tuple of 1 to 3 positive ints, "
                 r"got \(1, 1, 1, 1\)", _call([(5, 5), (1, 1, 1, 1)], 3)),
    (ValueError, r"spatial_shapes must be a non-empty list", _call([], 3)),
    (ValueError, "integer tensor", _call(torch.ones(2, 2), 3)),
    (ValueError, "integer tensor", _call(torch.ones(2, 2, dtype=torch.bool), 3)),
    (ValueError, "packed \\[total_tokens, heads, dim\\]", _call(S, 3, q=Q[None])),
    (TypeError, "value dtype torch.float64 does not match query dtype torch.float32",
     _call(S, 3, v=Q.double())),
    (ValueError, "key device meta does not match query device cpu",
     _call(S, 3, k=Q.to("meta"))),
    (TypeError, "key must be a floating-point tensor", _call(S, 3, k=Q.long())),
    (ValueError, r"sample 0 \(spatial shape \(5, 5\)\): query heads H=2 must be a positive "
                 r"multiple", _call(S, 3, k=torch.randn(37, 3, 8), v=torch.randn(37, 3, 8))),
    (ValueError, r"sample 0 \(spatial shape \(5, 5\)\): stride must satisfy",
     _call(S, 3, stride=[4, 1])),
    (ValueError, "unknown backend='nope'", _call(S, 3, backend="nope")),
    (TypeError, "backend must be a str or None", _call(S, 3, backend=1)),
    (TypeError, "return_lse must be a bool", _call(S, 3, return_lse=1)),
])
def test_bad_input_names_the_sample(exc, match, call):
    with pytest.raises(exc, match=match):
        call()


def test_backend_errors_name_the_group():
    """A named backend that cannot run a group says which samples it was."""
    from fake_kernels import faked, rows_for
    q = torch.randn(6 * 5 * 2 + 4 * 7, 2, 32)
    with faked(rows_for("fused_fwd", {32: {"default"}}),
               rule=lambda op, pd: "4x7 refused" if list(pd["length"]) == [4, 7] else ""):
        with pytest.raises(NotImplementedError,
                           match=r"sample 1 \(spatial shape \(4, 7\)\): backend='fused' "
                                 r"cannot run this call: .*4x7 refused"):
            fastna.neighborhood_attention_varlen(q, q, q, [(6, 5), (4, 7), (6, 5)], 3,
                                                 backend="fused")
