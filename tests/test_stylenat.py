"""StyleNAT generator: the authors' FFHQ-256 layout and size, forward, determinism, style mixing
and truncation, the attention layers against dense masked attention, the torch stand-ins for
the authors' CUDA ops, and loading the authors' state dict."""
import math

import pytest
import torch
import torch.nn.functional as F

import fastna.models as M
from fastna.models import stylenat as S
from fastna.models.stylenat_attention import (DenseAttentionRPB, HydraNeighborhoodAttention2D,
                                              split_heads)
from fastna.models.stylenat_layers import _blur_taps, sinusoidal_grid, upsample_blur

import bruteforce

# A small generator with the FFHQ-256 structure (every stage kind, two head groups, dilation
# up to 4) that runs in milliseconds on a CPU.
SMALL = dict(size=32, channels=(32, 32, 32, 32), style_dim=32, n_mlp=2, kernels=((7,),) * 3,
             dilations=((1,), (1, 2), (1, 4)))


def small(seed=0, **kw):
    torch.manual_seed(seed)
    return M.stylenat_ffhq256(**{**SMALL, **kw}).eval()


def official_ffhq256_state_shapes():
    """The authors' FFHQ-256 generator state dict (g_ema), key -> shape, as their generator
    defines it: 7 stages (4x4 .. 256x256) of 2 blocks, widths 512 x 5, 256, 128, heads
    max(C // 32, 4), full attention + rpb [H, 7, 7] at 4x4 and the two-group split-head layer
    (rpb0, rpb1 [H / 2, 13, 13]) from 8x8 on."""
    shapes = {}
    for i in range(1, 9):
        shapes[f"style.{i}.weight"] = (512, 512)
        shapes[f"style.{i}.bias"] = (512,)
    shapes["input.input"] = (1, 512, 4, 4)
    widths = [512, 512, 512, 512, 512, 256, 128]
    for s, c in enumerate(widths):
        h = max(c // 32, 4)
        for b in range(2):
            p = f"layers.{s}.blocks.{b}."
            for norm in ("norm1", "norm2"):
                shapes[p + norm + ".style.weight"] = (2 * c, 512)
                shapes[p + norm + ".style.bias"] = (2 * c,)
            shapes[p + "attn.qkv.weight"] = (3 * c, c)
            shapes[p + "attn.qkv.bias"] = (3 * c,)
            shapes[p + "attn.proj.weight"] = (c, c)
            shapes[p + "attn.proj.bias"] = (c,)
            if s == 0:
                shapes[p + "attn.rpb"] = (h, 7, 7)
                shapes[p + "attn.relative_position_index"] = (16, 16)
            else:
                shapes[p + "attn.rpb0"] = (h // 2, 13, 13)
                shapes[p + "attn.rpb1"] = (h // 2, 13, 13)
            shapes[p + "mlp.fc1.weight"] = (4 * c, c)
            shapes[p + "mlp.fc1.bias"] = (4 * c,)
            shapes[p + "mlp.fc2.weight"] = (c, 4 * c)
            shapes[p + "mlp.fc2.bias"] = (c,)
        last = s == len(widths) - 1
        out = c if last else widths[s + 1]
        if not last:
            p = f"layers.{s}.upsample."
            shapes[p + "norm.weight"] = (c,)
            shapes[p + "norm.bias"] = (c,)
            shapes[p + "reduction.weight"] = (out, c)
            shapes[p + "alpha"] = (1,)
            shapes[p + "sin_pos_embed._float_tensor"] = (1,)
            shapes[f"to_rgbs.{s}.upsample.kernel"] = (4, 4)
        shapes[f"to_rgbs.{s}.conv.weight"] = (3, out, 1, 1)
        shapes[f"to_rgbs.{s}.conv.bias"] = (3,)
        shapes[f"to_rgbs.{s}.bias"] = (1, 3, 1, 1)
    return shapes


OFFICIAL_BUFFERS = ("relative_position_index", "_float_tensor", "upsample.kernel")


def test_ffhq256_parameter_count_and_layout():
    with torch.device("meta"):
        g = M.stylenat_ffhq256()
    n = sum(p.numel() for p in g.parameters())
    official = official_ffhq256_state_shapes()
    counted = sum(math.prod(v) for k, v in official.items() if not k.endswith(OFFICIAL_BUFFERS))
    # The authors' README: 48.92M; their layout counted here: 48,921,000.
    assert counted == 48_921_000
    assert abs(n / S.OFFICIAL_FFHQ256_PARAMS - 1) < 0.02, n
    assert n == counted
    mine = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    theirs = {k: v for k, v in official.items() if not k.endswith(OFFICIAL_BUFFERS)}
    assert mine == theirs
    assert g.n_latent == 14
    heads = [[grp for grp in blk.attn.groups] for st in g.layers[1:] for blk in st.blocks[:1]]
    assert heads == [[(8, 7, 1), (8, 7, 1)], [(8, 7, 1), (8, 7, 2)], [(8, 7, 1), (8, 7, 4)],
                     [(8, 7, 1), (8, 7, 8)], [(4, 7, 1), (4, 7, 16)], [(2, 7, 1), (2, 7, 32)]]
    assert isinstance(g.layers[0].blocks[0].attn, DenseAttentionRPB)


def test_forward_shape_finite_and_deterministic():
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    g1, g2 = small(seed=3), small(seed=3)
    with torch.no_grad():
        a, b = g1(z), g2(z)
    assert a.shape == (2, 3, 32, 32) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    with torch.no_grad():
        assert not torch.equal(a, small(seed=4)(z))
        # Each sample is generated independently of the rest of the batch.
        assert torch.allclose(g1(z[1:]), a[1:], atol=1e-5)


def test_full_resolution_structure_at_narrow_width():
    """Every FFHQ-256 stage, 4x4 to 256x256 with dilation up to 32, at width 16 (the full
    widths take tens of seconds on a CPU: the gpu test below runs them)."""
    torch.manual_seed(0)
    g = M.stylenat_ffhq256(channels=(16,) * 7, style_dim=32, n_mlp=2).eval()
    with torch.no_grad():
        img = g(torch.randn(1, 32))
    assert img.shape == (1, 3, 256, 256) and torch.isfinite(img).all()


@pytest.mark.gpu
def test_ffhq256_full_forward_gpu():
    torch.manual_seed(0)
    g = M.stylenat_ffhq256().eval()
    z = torch.randn(2, 512)
    with torch.no_grad():
        ref = g(z[:1])
        g.cuda()
        img = g(z.cuda())
    assert img.shape == (2, 3, 256, 256) and torch.isfinite(img).all()
    scale = ref.abs().max()
    # TF32 convolutions (cuDNN default) stay far below the 1e-2 a wrong layer would exceed.
    torch.testing.assert_close(img[:1].cpu() / scale, ref / scale, atol=1e-2, rtol=0)


def test_forward_batch_one_with_gradients():
    g = small()
    img = g(torch.randn(1, 32))
    assert img.shape == (1, 3, 32, 32)
    img.square().mean().backward()
    rpb = g.layers[2].blocks[0].attn.rpb1
    assert rpb.grad is not None and torch.isfinite(rpb.grad).all() and rpb.grad.abs().sum() > 0
    assert g.style[1].weight.grad.abs().sum() > 0


def test_style_mixing_and_truncation():
    g = small()
    z1, z2 = torch.randn(2, 3, 32).unbind(0)
    with torch.no_grad():
        only1, only2 = g(z1), g(z2)
        assert torch.allclose(g(z1, mix_z=z2, inject_index=g.n_latent), only1, atol=1e-6)
        assert torch.allclose(g(z1, mix_z=z2, inject_index=0), only2, atol=1e-6)
        img, lat = g(z1, mix_z=z2, inject_index=3, return_latents=True)
        w1, w2 = g.mapping(z1), g.mapping(z2)
        assert torch.allclose(lat[:, :3], w1[:, None].expand(-1, 3, -1))
        assert torch.allclose(lat[:, 3:], w2[:, None].expand(-1, g.n_latent - 3, -1))
        assert torch.allclose(g(lat, input_is_latent=True), img, atol=1e-6)
        w_avg = g.mean_latent(64, generator=torch.Generator().manual_seed(0))
        assert w_avg.shape == (1, 32)
        flat = g(z1, truncation=0.0, truncation_latent=w_avg)
        assert torch.allclose(flat, flat[:1].expand_as(flat), atol=1e-6)  # every z -> w_avg
        half = g(z1, truncation=0.5, truncation_latent=w_avg)
        assert torch.allclose(half, g(w_avg + 0.5 * (w1 - w_avg), input_is_latent=True),
                              atol=1e-6)


def test_bad_inputs_name_the_argument():
    g = small()
    with pytest.raises(ValueError, match="z must be"):
        g(torch.randn(2, 31))
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        g([0.0] * 32)
    with pytest.raises(ValueError, match="truncation_latent"):
        g(torch.randn(1, 32), truncation=0.7)
    with pytest.raises(ValueError, match="inject_index"):
        g(torch.randn(1, 32), mix_z=torch.randn(1, 32), inject_index=99)
    with pytest.raises(ValueError, match="input_is_latent"):
        g(torch.randn(1, g.n_latent, 32))
    with pytest.raises(ValueError, match="dilation 8 exceeds"):
        M.stylenat_ffhq256(**{**SMALL, "dilations": ((1,), (1, 2), (1, 8))})
    with pytest.raises(ValueError, match="kernels needs one entry per stage"):
        M.stylenat_ffhq256(**{**SMALL, "kernels": ((7,),)})


def _dense_na_reference(q, k, v, groups, rpbs, scale):
    """Dense attention over every key with -inf outside each query's neighborhood (the
    independent brute-force neighbor predicate) plus the rpb entry at key - query in
    dilation-group units. q, k, v [B, X, Y, H, D] float64."""
    B, X, Y, H, D = q.shape
    out = torch.empty_like(q)
    h0 = 0
    for (heads, kernel, dil), rpb in zip(groups, rpbs):
        bias = torch.full((heads, X * Y, X * Y), float("-inf"), dtype=q.dtype)
        for qi in range(X):
            for qj in range(Y):
                for ki, kj in bruteforce.neighbors((X, Y), (kernel,) * 2, (1, 1), (dil,) * 2,
                                                   (False, False), (qi, qj)):
                    r = ki // dil - qi // dil + kernel - 1
                    c = kj // dil - qj // dil + kernel - 1
                    bias[:, qi * Y + qj, ki * Y + kj] = rpb[:, r, c]
        hs = slice(h0, h0 + heads)
        qs, ks, vs = (t[..., hs, :].reshape(B, X * Y, heads, D).transpose(1, 2)
                      for t in (q, k, v))
        p = ((qs @ ks.transpose(-1, -2)) * scale + bias).softmax(-1)
        out[..., hs, :] = (p @ vs).transpose(1, 2).reshape(B, X, Y, heads, D)
        h0 += heads
    return out


@pytest.mark.parametrize("kernels,dilations,heads,shape", [
    ((3,), (1, 2), 4, (9, 11)),
    ((3, 5), (2, 1), 5, (10, 8)),      # uneven split: 2 + 3 heads
    ((3,), (1, 1), 4, (6, 7)),         # equal windows merge into one call
    ((5,), (1, 2, 3), 6, (15, 16)),
])
def test_hydra_attention_matches_dense_masked(kernels, dilations, heads, shape):
    torch.manual_seed(0)
    dim = heads * 4
    layer = HydraNeighborhoodAttention2D(dim, heads, kernels, dilations).double()
    x = torch.randn(2, *shape, dim, dtype=torch.float64)
    B, X, Y, _ = x.shape
    q, k, v = layer.qkv(x).reshape(B, X, Y, 3, heads, 4).unbind(3)
    ref = _dense_na_reference(q, k, v, layer.groups, layer.rpbs(), layer.scale)
    ref = layer.proj(ref.reshape(B, X, Y, dim))
    torch.testing.assert_close(layer(x), ref)
    assert [g[0] for g in layer.groups] == split_heads(heads, len(layer.groups))


def test_hydra_attention_without_bias_runs_fastna():
    torch.manual_seed(0)
    layer = HydraNeighborhoodAttention2D(16, 4, (3,), (1, 2), rel_pos_bias=False).double()
    assert layer.rpbs() == [None, None] and not any("rpb" in k for k in layer.state_dict())
    x = torch.randn(1, 8, 9, 16, dtype=torch.float64)
    q, k, v = layer.qkv(x).reshape(1, 8, 9, 3, 4, 4).unbind(3)
    zeros = [torch.zeros(2, 5, 5, dtype=torch.float64)] * 2
    ref = layer.proj(_dense_na_reference(q, k, v, layer.groups, zeros, layer.scale)
                     .reshape(1, 8, 9, 16))
    torch.testing.assert_close(layer(x), ref)


def test_dense_attention_rpb_matches_reference_and_authors_index():
    torch.manual_seed(0)
    layer = DenseAttentionRPB(24, 3, 4).double()
    x = torch.randn(2, 4, 4, 24, dtype=torch.float64)
    q, k, v = layer.qkv(x).reshape(2, 4, 4, 3, 3, 8).unbind(3)
    # A 4-wide window on a 4x4 map is every key; its bias table is [H, 7, 7] at key - query.
    bias = torch.zeros(3, 16, 16, dtype=torch.float64)
    for i in range(16):
        for j in range(16):
            bias[:, i, j] = layer.rpb[:, j // 4 - i // 4 + 3, j % 4 - i % 4 + 3]
    qs, ks, vs = (t.reshape(2, 16, 3, 8).transpose(1, 2) for t in (q, k, v))
    p = ((qs @ ks.transpose(-1, -2)) * layer.scale + bias).softmax(-1)
    ref = layer.proj((p @ vs).transpose(1, 2).reshape(2, 4, 4, 24))
    torch.testing.assert_close(layer(x), ref)
    # The authors build the same table index as query - key per axis, shifted by K - 1, row
    # axis times 2K - 1, then flip both matrix axes; that flip turns it into key - query.
    yy, xx = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    coords = torch.stack([yy.flatten(), xx.flatten()])
    rel = coords[:, :, None] - coords[:, None, :] + 3
    theirs = (rel[0] * 7 + rel[1]).flip(0).flip(1)
    assert torch.equal(layer.bias_index, theirs)
    with pytest.raises(ValueError, match="4x4"):
        layer(torch.randn(1, 8, 8, 24, dtype=torch.float64))


def test_upsample_blur_is_upfirdn():
    """upfirdn2d(up=2, pad=(2, 1)) by its definition: zeros after every sample, pad, then a
    true convolution (flipped taps) with the 4x4 filter."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    taps = torch.rand(4, 4, dtype=torch.float64)  # asymmetric: catches a flip or shift
    up = torch.zeros(2, 3, 10, 12, dtype=torch.float64)
    up[..., ::2, ::2] = x
    up = F.pad(up, (2, 1, 2, 1))
    ref = F.conv2d(up, taps.flip(0, 1).expand(3, 1, 4, 4), groups=3)
    torch.testing.assert_close(upsample_blur(x, taps), ref)
    blur = _blur_taps()
    assert torch.allclose(blur.sum(), torch.tensor(4.0))
    const = upsample_blur(torch.ones(1, 1, 6, 6), blur)
    assert torch.allclose(const[..., 2:-2, 2:-2], torch.ones(1, 1, 8, 8))


def test_sinusoidal_grid():
    grid = sinusoidal_grid(3, 5, 16)  # 8 channels per axis: 4 sin + 4 cos
    assert grid.shape == (16, 3, 5)
    freq = [10000 ** (-i / 3) for i in range(4)]
    for c in range(4):
        for r in range(3):
            for col in range(5):
                assert math.isclose(grid[c, r, col], math.sin((col + 1) * freq[c]),
                                    abs_tol=1e-5)
                assert math.isclose(grid[4 + c, r, col], math.cos((col + 1) * freq[c]),
                                    abs_tol=1e-5)
                assert math.isclose(grid[8 + c, r, col], math.sin((r + 1) * freq[c]),
                                    abs_tol=1e-5)
    with pytest.raises(ValueError, match="channels=6"):
        sinusoidal_grid(2, 2, 6)


def test_load_official_state_dict():
    source = small(seed=1)
    official = dict(source.state_dict())
    # What the authors' file also holds, in their names: DDP prefix-free g_ema with buffers,
    # and the newer Hydra layer's rpb.<g> naming for one block.
    official["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16)
    official["layers.0.upsample.sin_pos_embed._float_tensor"] = torch.zeros(1)
    official["to_rgbs.0.upsample.kernel"] = torch.zeros(4, 4)
    p = "layers.2.blocks.1.attn."
    official[p + "rpb.0"] = official.pop(p + "rpb0")
    official[p + "rpb.1"] = official.pop(p + "rpb1")
    target = small(seed=2)
    z = torch.randn(2, 32)
    with torch.no_grad():
        assert not torch.allclose(target(z), source(z))
        S.load_official_state_dict(target, {"g_ema": official, "d": {}})
        torch.testing.assert_close(target(z), source(z))
        ddp = {"module." + k: v for k, v in official.items()}
        M.load_official_state_dict(small(seed=5), ddp)
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        S.load_official_state_dict(target, [1, 2])


def test_profile_preset_is_the_last_stage_dilated_group():
    from fastna import presets
    with torch.device("meta"):
        g = M.stylenat_ffhq256()
    attn = g.layers[-1].blocks[0].attn
    heads, kernel, dilation = attn.groups[-1]
    p = presets.get_preset("stylenat")
    assert p.shape == (g.size, g.size) and p.kernel == (kernel,) * 2
    assert p.dilation == (dilation,) * 2 and p.heads == heads and p.dim == attn.head_dim
