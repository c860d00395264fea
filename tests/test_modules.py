"""NeighborhoodAttention1D/2D/3D: outputs equal a manual qkv -> NA -> proj, the RPB path equals a
brute-force qk + rpb -> softmax -> av, parameters carry NATTEN's names and shapes, and bad
arguments fail with errors that name them."""
import itertools
import math

import pytest
import torch

from fastna import reference
from fastna._args import normalize
from fastna.index_math import window
from fastna.modules import (NeighborhoodAttention1D, NeighborhoodAttention2D,
                            NeighborhoodAttention3D, NeighborhoodAttentionND)

MODULES = {1: NeighborhoodAttention1D, 2: NeighborhoodAttention2D, 3: NeighborhoodAttention3D}


def manual_fused(m, x):
    """qkv -> reference NA (docs/SEMANTICS.md section 5) -> proj, written out by hand."""
    B, spatial, C = x.shape[0], x.shape[1:-1], x.shape[-1]
    qkv = torch.nn.functional.linear(x, m.qkv.weight, m.qkv.bias)
    qkv = qkv.reshape(B, *spatial, 3, m.num_heads, C // m.num_heads)
    q, k, v = (qkv.select(-3, i) for i in range(3))
    params = normalize(q, k, v, m.kernel_size, m.stride, m.dilation, m.is_causal, m.scale)
    out = reference.attention(q, k, v, params).reshape(B, *spatial, C)
    return torch.nn.functional.linear(out, m.proj.weight, m.proj.bias)


def brute_neighbors(shape, kernel, dilation, causal):
    """Per flat query: flat key indices of its window slots (row-major) and RPB offsets, from
    fastna.index_math.window (group-local coordinates), or None for causal slots past the end."""
    coords = list(itertools.product(*[range(L) for L in shape]))
    flat = {c: n for n, c in enumerate(coords)}
    table = []
    for qc in coords:
        wins = [window(L, K, 1, d, c, i) for L, K, d, c, i in
                zip(shape, kernel, dilation, causal, qc)]
        slots = []
        for ks in itertools.product(*[range(K) for K in kernel]):
            kc, rel, ok = [], [], True
            for a, (st, en) in enumerate(wins):
                jl = st + ks[a]
                ok &= jl < en
                g, d = qc[a] % dilation[a], dilation[a]
                kc.append(jl * d + g)
                rel.append(jl - qc[a] // d + kernel[a] - 1)
            slots.append((flat[tuple(kc)], tuple(rel)) if ok else None)
        table.append(slots)
    return table


def manual_rpb(m, x):
    """qkv -> (q*scale).k + rpb -> softmax -> av -> proj, by brute force."""
    B, spatial, C = x.shape[0], tuple(x.shape[1:-1]), x.shape[-1]
    H, D = m.num_heads, C // m.num_heads
    qkv = torch.nn.functional.linear(x, m.qkv.weight, m.qkv.bias).reshape(B, -1, 3, H, D)
    q, k, v = qkv[:, :, 0] * m.scale, qkv[:, :, 1], qkv[:, :, 2]
    table = brute_neighbors(spatial, m.kernel_size, m.dilation, m.is_causal)
    out = torch.zeros(B, len(table), H, D, dtype=x.dtype)
    for n, slots in enumerate(table):
        keys = [s[0] for s in slots if s is not None]
        logits = torch.einsum("bhd,bkhd->bhk", q[:, n], k[:, keys])
        if m.rpb is not None:
            bias = torch.stack([m.rpb[(slice(None),) + s[1]] for s in slots if s is not None], -1)
            logits = logits + bias
        out[:, n] = torch.einsum("bhk,bkhd->bhd", logits.softmax(-1), v[:, keys])
    out = out.reshape(B, *spatial, C)
    return torch.nn.functional.linear(out, m.proj.weight, m.proj.bias)


FUSED_CASES = [
    (1, (13,), dict(kernel_size=5)),
    (1, (16,), dict(kernel_size=4, stride=2, dilation=2, is_causal=True)),
    (2, (7, 9), dict(kernel_size=3)),
    (2, (8, 10), dict(kernel_size=(3, 4), stride=(1, 2), dilation=(2, 1), is_causal=(False, True))),
    (3, (4, 5, 6), dict(kernel_size=(2, 3, 3), dilation=(1, 1, 2), is_causal=(True, False, False))),
]


@pytest.mark.parametrize("rank,shape,kw", FUSED_CASES)
def test_fused_path_equals_manual(rank, shape, kw):
    torch.manual_seed(rank)
    m = MODULES[rank](16, 2, **kw).double().eval()
    assert m.uses_fused_path
    x = torch.randn(2, *shape, 16, dtype=torch.float64)
    torch.testing.assert_close(m(x), manual_fused(m, x))


@pytest.mark.parametrize("rank,shape,kw", [
    (1, (11,), dict(kernel_size=5, dilation=2)),
    (2, (6, 7), dict(kernel_size=3)),
    (2, (7, 8), dict(kernel_size=(3, 5), dilation=(2, 1))),
    (3, (3, 4, 5), dict(kernel_size=(3, 3, 3), dilation=(1, 1, 1))),
])
def test_rpb_path_equals_manual(rank, shape, kw):
    torch.manual_seed(10 + rank)
    m = MODULES[rank](8, 2, rel_pos_bias=True, **kw).double()
    with torch.no_grad():
        m.rpb.normal_()  # large enough to matter
    assert not m.uses_fused_path
    x = torch.randn(2, *shape, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), manual_rpb(m, x))


def test_rpb_gradient_flows():
    m = NeighborhoodAttention2D(8, 2, 3, rel_pos_bias=True)
    m(torch.randn(1, 5, 5, 8)).sum().backward()
    assert m.rpb.grad is not None and m.rpb.grad.abs().sum() > 0


@pytest.mark.parametrize("causal", [False, True])
def test_unfused_path_without_dropout_equals_fused(causal):
    """attn_drop > 0 in training switches to the legacy ops; with p forced to 0 the two agree."""
    torch.manual_seed(3)
    m = NeighborhoodAttention2D(16, 4, 3, dilation=2, is_causal=causal, attn_drop=0.1).double()
    x = torch.randn(2, 7, 8, 16, dtype=torch.float64)
    m.eval()
    assert m.uses_fused_path
    fused = m(x)
    m.train()
    assert not m.uses_fused_path
    m.attn_drop.p = 0.0
    torch.testing.assert_close(m(x), fused)


def test_attention_dropout_active_in_training():
    torch.manual_seed(4)
    m = NeighborhoodAttention1D(8, 2, 3, attn_drop=0.5)
    x = torch.randn(2, 9, 8)
    m.eval()
    ref = m(x)
    m.train()
    out = m(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, ref)


def test_small_input_is_padded_like_natten():
    """Inputs smaller than kernel*dilation are zero-padded to it, then cropped back."""
    torch.manual_seed(5)
    m = NeighborhoodAttention2D(8, 2, 7).double().eval()
    x = torch.randn(1, 4, 5, 8, dtype=torch.float64)
    out = m(x)
    assert out.shape == x.shape
    xp = torch.nn.functional.pad(x, (0, 0, 0, 2, 0, 3))
    torch.testing.assert_close(out, manual_fused(m, xp)[:, :4, :5])


def test_qk_scale_and_backend_pass_through():
    torch.manual_seed(6)
    m = NeighborhoodAttention2D(8, 2, 3, qk_scale=0.3, backend="reference").double()
    assert m.scale == 0.3
    x = torch.randn(1, 5, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), manual_fused(m, x))
    m.backend = "no-such-backend"
    with pytest.raises(ValueError, match="backend"):
        m(x)


NATTEN_SHAPES = [
    (NeighborhoodAttention1D, dict(kernel_size=7), {"rpb": (4, 13)}),
    (NeighborhoodAttention2D, dict(kernel_size=7), {"rpb": (4, 13, 13)}),
    (NeighborhoodAttention2D, dict(kernel_size=(3, 5)), {"rpb": (4, 5, 9)}),
    (NeighborhoodAttention3D, dict(kernel_size=3), {"rpb": (4, 5, 5, 5)}),
]


@pytest.mark.parametrize("cls,kw,rpb", NATTEN_SHAPES)
def test_state_dict_matches_natten(cls, kw, rpb):
    m = cls(64, 4, rel_pos_bias=True, **kw)
    expect = {"qkv.weight": (192, 64), "qkv.bias": (192,), "proj.weight": (64, 64),
              "proj.bias": (64,), **rpb}
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expect
    m2 = cls(64, 4, qkv_bias=False, **kw)
    assert set(m2.state_dict()) == {"qkv.weight", "proj.weight", "proj.bias"}
    # a NATTEN-trained state dict (same names) loads strictly
    cls(dim=64, num_heads=4, rel_pos_bias=True, **kw).load_state_dict(m.state_dict())


def test_rpb_init_is_small_and_truncated():
    m = NeighborhoodAttention2D(64, 4, 7, rel_pos_bias=True)
    assert m.rpb.abs().max() <= 2 and 0.01 < m.rpb.std() < 0.03


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(embed_dim=10, num_heads=3, kernel_size=3), ValueError, "num_heads"),
    (dict(embed_dim=0, num_heads=1, kernel_size=3), ValueError, "^embed_dim must be"),
    (dict(dim=0, num_heads=1, kernel_size=3), ValueError, "^dim must be a positive int, got 0"),
    (dict(dim=10, num_heads=3, kernel_size=3), ValueError, "must divide dim=10"),
    (dict(embed_dim=8, num_heads=2.0, kernel_size=3), TypeError, "num_heads"),
    (dict(embed_dim=8, num_heads=2, kernel_size=1), ValueError, "kernel_size"),
    (dict(embed_dim=8, num_heads=2, kernel_size=(3, 3, 3)), ValueError, "kernel_size"),
    (dict(embed_dim=8, num_heads=2, kernel_size=3, stride=4), ValueError, "stride"),
    (dict(embed_dim=8, num_heads=2, kernel_size=3, dilation=0), ValueError, "dilation"),
    (dict(embed_dim=8, num_heads=2, kernel_size=3, is_causal=1), TypeError, "is_causal"),
    (dict(embed_dim=8, num_heads=2, kernel_size=3, attn_drop=1.0), ValueError, "attn_drop"),
    (dict(embed_dim=8, num_heads=2, kernel_size=3, proj_drop=-0.1), ValueError, "proj_drop"),
    (dict(embed_dim=8, num_heads=2, kernel_size=3, qk_scale=-1.0), ValueError, "qk_scale"),
    (dict(embed_dim=8, num_heads=2, kernel_size=4, rel_pos_bias=True), ValueError, "odd"),
    (dict(embed_dim=8, num_heads=2, kernel_size=3, is_causal=True, rel_pos_bias=True),
     ValueError, "causal"),
    (dict(embed_dim=8, num_heads=2, kernel_size=3, stride=2, rel_pos_bias=True), ValueError,
     "stride"),
    (dict(embed_dim=8, num_heads=2, kernel_size=3, stride=2, attn_drop=0.1), ValueError,
     "stride"),
    (dict(embed_dim=8, dim=16, num_heads=2, kernel_size=3), ValueError, "dim"),
    (dict(num_heads=2, kernel_size=3), TypeError, "embed_dim"),
])
def test_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        NeighborhoodAttention2D(**kwargs)


def test_bad_inputs_and_rank():
    m = NeighborhoodAttention2D(8, 2, 3)
    with pytest.raises(ValueError, match="expects input"):
        m(torch.randn(1, 5, 8))
    with pytest.raises(ValueError, match="C=8"):
        m(torch.randn(1, 5, 5, 6))
    with pytest.raises(ValueError, match="rank"):
        NeighborhoodAttention2D(8, 2, 3, rank=3)
    nd = NeighborhoodAttentionND(8, 2, 3, rank=1)
    assert nd(torch.randn(1, 5, 8)).shape == (1, 5, 8)


def test_half_precision_runs():
    m = NeighborhoodAttention2D(16, 2, 3, rel_pos_bias=True).to(torch.bfloat16)
    out = m(torch.randn(1, 6, 6, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert math.isclose(NeighborhoodAttention2D(16, 2, 3).scale, 8 ** -0.5)
