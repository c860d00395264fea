"""fastna.neighborhood_attention_varlen (reference backend) against one
fastna.neighborhood_attention call per sample: random mixes of 1-8 samples, 1D/2D/3D, shared and
per-sample parameters, every causal combination, GQA and Dv != D, gradients, and the errors."""
import itertools
import random

import pytest
import torch

import fastna
from numerics import rel_error as _rel, random_window_params as _sample_params


def _pack(rng, rank, count, H, Hkv, D, Dv, per_sample):
    shapes = [tuple(rng.randint(3, 9 if rank < 3 else 5) for _ in range(rank)) for _ in range(count)]
    if per_sample:
        params = [_sample_params(rng, s) for s in shapes]
    else:   # one set valid for every sample: the smallest shape bounds it
        smallest = tuple(min(s[a] for s in shapes) for a in range(rank))
        params = [_sample_params(rng, smallest)] * count
    total = sum(torch.Size(s).numel() for s in shapes)
    g = torch.Generator().manual_seed(rng.randint(0, 2**31))
    q = torch.randn(total, H, D, generator=g, dtype=torch.float64)
    k = torch.randn(total, Hkv, D, generator=g, dtype=torch.float64)
    v = torch.randn(total, Hkv, Dv, generator=g, dtype=torch.float64)
    return shapes, params, q, k, v


def _per_sample_calls(q, k, v, shapes, params):
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


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_matches_one_call_per_sample(rank, per_sample, seed):
    rng = random.Random(1000 * rank + 10 * seed + per_sample)
    count = rng.randint(1, 8)
    H, Hkv = rng.choice([(2, 2), (4, 2), (3, 1)])
    D, Dv = rng.choice([(8, 8), (8, 5)])
    shapes, params, q, k, v = _pack(rng, rank, count, H, Hkv, D, Dv, per_sample)
    spatial = torch.tensor(shapes) if seed % 2 else shapes
    if per_sample:
        args = [list(x) for x in zip(*params)]
    else:
        args = list(params[0])
    out, lse = fastna.neighborhood_attention_varlen(q, k, v, spatial, *args, return_lse=True)
    want_out, want_lse = _per_sample_calls(q, k, v, shapes, params)
    assert out.shape == (q.shape[0], H, Dv) and lse.shape == (q.shape[0], H)
    assert _rel(out, want_out) < 1e-12 and _rel(lse, want_lse) < 1e-12


@pytest.mark.parametrize("causal", list(itertools.product([False, True], repeat=2)))
def test_every_causal_combination_and_gradients(causal):
    rng = random.Random(hash(causal) & 0xffff)
    shapes = [(5, 7), (6, 4), (3, 9)]
    params = [((3, 3), (1, 2), (1, 1), causal), ((2, 3), (2, 1), (2, 1), causal),
              ((3, 2), (1, 1), (1, 3), causal)]
    total = sum(torch.Size(s).numel() for s in shapes)
    g = torch.Generator().manual_seed(rng.randint(0, 2**31))
    leaves = [torch.randn(total, 2, 6, generator=g, dtype=torch.float64, requires_grad=True)
              for _ in range(3)]
    out = fastna.neighborhood_attention_varlen(*leaves, shapes, *[list(x) for x in zip(*params)])
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, leaves, grad)
    want_out, _ = _per_sample_calls(*leaves, shapes, params)
    want = torch.autograd.grad(want_out, leaves, grad)
    assert _rel(out, want_out) < 1e-12
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-12


def test_half_precision_keeps_the_dtype():
    q = torch.randn(6 * 6 + 4 * 8, 2, 16, dtype=torch.bfloat16)
    out = fastna.neighborhood_attention_varlen(q, q, q, [(6, 6), (4, 8)], 3)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape


def test_compile_traces_it():
    shapes = [(5, 6), (4, 4)]
    q = torch.randn(46, 2, 8)
    fn = torch.compile(lambda q: fastna.neighborhood_attention_varlen(q, q, q, shapes, 3),
                       backend="eager", fullgraph=True)
    torch._dynamo.reset()
    try:
        got = fn(q)
    finally:
        torch._dynamo.reset()
    want = fastna.neighborhood_attention_varlen(q, q, q, shapes, 3)
    assert _rel(got, want) < 1e-6


Q = torch.randn(5 * 5 + 3 * 4, 2, 8)


@pytest.mark.parametrize("exc,match,call", [
    (ValueError, r"has 37 tokens but spatial_shapes \[\(5, 5\), \(3, 3\)\] sum to 34",
     lambda: fastna.neighborhood_attention_varlen(Q, Q, Q, [(5, 5), (3, 3)], 3)),
    (ValueError, r"sample 1 \(spatial shape \(3, 4\)\): kernel_size \* dilation",
     lambda: fastna.neighborhood_attention_varlen(Q, Q, Q, [(5, 5), (3, 4)], 5)),
    (ValueError, r"kernel_size as a list gives one entry per sample: expected 2 entries",
     lambda: fastna.neighborhood_attention_varlen(Q, Q, Q, [(5, 5), (3, 4)], [3, 3, 3])),
    (ValueError, "same rank",
     lambda: fastna.neighborhood_attention_varlen(Q, Q, Q, [(5, 5), (12,)], 3)),
    (ValueError, r"spatial_shapes\[1\] must be 1 to 3 positive ints",
     lambda: fastna.neighborhood_attention_varlen(Q, Q, Q, [(5, 5), (3, 0)], 3)),
    (ValueError, "packed \\[total_tokens, heads, dim\\]",
     lambda: fastna.neighborhood_attention_varlen(Q[None], Q[None], Q[None], [(5, 5), (3, 4)], 3)),
    (ValueError, r"sample 0 \(spatial shape \(5, 5\)\): stride must satisfy",
     lambda: fastna.neighborhood_attention_varlen(Q, Q, Q, [(5, 5), (3, 4)], 3, stride=[4, 1])),
    (NotImplementedError, "backend='fused' has no variable-size",
     lambda: fastna.neighborhood_attention_varlen(Q, Q, Q, [(5, 5), (3, 4)], 3, backend="fused")),
    (TypeError, "return_lse must be a bool",
     lambda: fastna.neighborhood_attention_varlen(Q, Q, Q, [(5, 5), (3, 4)], 3, return_lse=1)),
    (ValueError, "integer tensor",
     lambda: fastna.neighborhood_attention_varlen(Q, Q, Q, torch.ones(2, 2), 3)),
])
def test_bad_input_names_the_sample(exc, match, call):
    with pytest.raises(exc, match=match):
        call()
