"""fastna.neighborhood_attention(..., rpb=...): NATTEN's relative positional bias on the public
calls, against a brute-force oracle written from docs/SEMANTICS.md (every query / key pair
tested with index_math's windows, the bias rpb[h, j' - i' + K - 1] per axis, group-local), in
float64: out, lse and the gradients of q, k, v and rpb; and the errors."""
import itertools
import random

import pytest
import torch

import fastna
from fastna.index_math import window
from numerics import rel_error


def _oracle(q, k, v, kernel, dilation, rpb, scale):
    B, *shape, H, D = q.shape
    Hkv = k.shape[-2]
    rank = len(shape)
    coords = list(itertools.product(*[range(n) for n in shape]))
    N = len(coords)
    logits = torch.full((B, H, N, N), float("-inf"), dtype=q.dtype)
    qf, kf, vf = q.reshape(B, N, H, D), k.reshape(B, N, Hkv, D), v.reshape(B, N, Hkv, -1)
    kq = kf[:, :, torch.arange(H) // (H // Hkv)]            # [B, N, H, D]
    vq = vf[:, :, torch.arange(H) // (H // Hkv)]
    dots = torch.einsum("bihd,bjhd->bhij", qf, kq) * scale
    for i, ci in enumerate(coords):
        for j, cj in enumerate(coords):
            idx, inside = [], True
            for a in range(rank):
                L, K, d = shape[a], kernel[a], dilation[a]
                if ci[a] % d != cj[a] % d:
                    inside = False
                    break
                s, e = window(L, K, 1, d, False, ci[a])
                if not s <= cj[a] // d < e:
                    inside = False
                    break
                idx.append(cj[a] // d - ci[a] // d + K - 1)
            if inside:
                logits[:, :, i, j] = dots[:, :, i, j] + rpb[(slice(None), *idx)]
    p = logits.softmax(-1)
    out = torch.einsum("bhij,bjhd->bihd", p, vq).reshape(B, *shape, H, -1)
    lse = torch.logsumexp(logits, -1).permute(0, 2, 1).reshape(B, *shape, H)
    return out, lse


@pytest.mark.parametrize("seed", range(6))
def test_rpb_matches_the_oracle_with_gradients(seed):
    rng = random.Random(seed)
    rank = 1 + seed % 2
    shape = tuple(rng.randint(5, 9) if rank == 2 else rng.randint(9, 20) for _ in range(rank))
    dilation = tuple(rng.choice([1, 2]) for _ in range(rank))
    kernel = tuple(rng.choice([k for k in (3, 5) if k * d <= n]) for n, d in zip(shape, dilation))
    Hkv = rng.choice([1, 2])
    H = Hkv * rng.choice([1, 2])
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(2, *shape, h, 8, generator=g, dtype=torch.float64) for h in (H, Hkv))
    v = torch.randn(2, *shape, Hkv, 6, generator=g, dtype=torch.float64)
    rpb = torch.randn(H, *(2 * kk - 1 for kk in kernel), generator=g, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, rpb)]
    out, lse = fastna.neighborhood_attention(*leaves[:3], kernel, dilation=dilation, rpb=leaves[3],
                                             return_lse=True)
    ref_leaves = [t.clone().requires_grad_() for t in (q, k, v, rpb)]
    rout, rlse = _oracle(*ref_leaves[:3], kernel, dilation, ref_leaves[3], 8 ** -0.5)
    assert rel_error(out, rout) < 1e-12 and rel_error(lse, rlse) < 1e-12
    dout, dlse = torch.randn_like(rout), torch.randn_like(rlse)
    got = torch.autograd.grad([out, lse], leaves, [dout, dlse])
    want = torch.autograd.grad([rout, rlse], ref_leaves, [dout, dlse])
    for name, a, b in zip(("q", "k", "v", "rpb"), got, want):
        assert rel_error(a, b) < 1e-10, name


def test_rpb_on_na2d_and_explain():
    q = torch.randn(1, 7, 8, 2, 4, dtype=torch.float64)
    rpb = torch.randn(2, 5, 9, dtype=torch.float64)
    out = fastna.na2d(q, q, q, (3, 5), rpb=rpb)
    want = fastna.neighborhood_attention(q, q, q, (3, 5), rpb=rpb, backend="reference")
    assert out.shape == q.shape and rel_error(out, want) < 1e-12
    text = fastna.explain(q, q, q, (3, 5), rpb=rpb)
    assert "relative positional bias: the unfused path" in text


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(kernel_size=3, stride=2), ValueError, "needs stride 1"),
    (dict(kernel_size=3, is_causal=True), ValueError, "non-causal"),
    (dict(kernel_size=4), ValueError, "odd kernel_size"),
    (dict(kernel_size=3, rpb_shape=(2, 3)), ValueError, "rpb must have shape"),
    (dict(kernel_size=3, backend="fused"), NotImplementedError, "backend='fused' cannot run a call with rpb"),
    (dict(kernel_size=3, head_groups=[1, 1]), NotImplementedError, "rpb with head_groups"),
])
def test_rpb_errors_name_the_argument(kwargs, error, text):
    q = torch.randn(1, 12, 2, 4)
    shape = kwargs.pop("rpb_shape", None)
    K = kwargs["kernel_size"]
    rpb = torch.randn(*(shape or (2, 2 * K - 1)))
    with pytest.raises(error, match=text):
        fastna.na1d(q, q, q, rpb=rpb, **kwargs)
