"""NAT / DiNAT classifiers: published sizes, forward, state-dict names and round trip."""
import io

import pytest
import torch

import fastna.models as M
from fastna.modules import NeighborhoodAttention2D

ALL = ["nat_mini", "nat_tiny", "nat_small", "nat_base",
       "dinat_mini", "dinat_tiny", "dinat_small", "dinat_base", "dinat_large"]


def build_meta(name, **kw):
    with torch.device("meta"):
        return M.create(name, **kw)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry():
    assert M.list_models() == sorted(ALL)
    for name in ALL:
        assert getattr(M, name).__name__ == name
    with pytest.raises(ValueError, match="unknown model"):
        M.create("nat_huge")


@pytest.mark.parametrize("name", ALL)
def test_param_count_matches_paper(name):
    n = n_params(build_meta(name))
    published = M.PUBLISHED_PARAMS[name]
    assert abs(n / published - 1) < 0.02, (name, n, published)


def test_architecture_details():
    m = build_meta("dinat_tiny")
    dil = [[blk.attn.dilation for blk in lvl.blocks] for lvl in m.levels]
    assert dil[0] == [(1, 1), (8, 8), (1, 1)]
    assert dil[1] == [(1, 1), (4, 4)] * 2
    assert dil[2] == [(1, 1), (2, 2)] * 9
    assert dil[3] == [(1, 1)] * 5
    # dilated windows fit the 224x224 feature maps (56, 28, 14, 7)
    for lvl, side in zip(m.levels, (56, 28, 14, 7)):
        for blk in lvl.blocks:
            assert blk.attn.kernel_size == (7, 7)
            assert all(k * d <= side for k, d in zip(blk.attn.kernel_size, blk.attn.dilation))
    nat = build_meta("nat_tiny")
    assert all(blk.attn.dilation == (1, 1) for lvl in nat.levels for blk in lvl.blocks)
    assert [lvl.blocks[0].attn.num_heads for lvl in nat.levels] == [2, 4, 8, 16]
    assert [len(lvl.blocks) for lvl in nat.levels] == [3, 4, 18, 5]
    # layer scale where the papers use it
    assert build_meta("nat_small").levels[0].blocks[0].layer_scale
    assert build_meta("dinat_base").levels[0].blocks[0].layer_scale
    assert not build_meta("nat_mini").levels[0].blocks[0].layer_scale


def test_state_dict_names_follow_reference_implementation():
    sd = build_meta("nat_small").state_dict()
    expect = {
        "patch_embed.proj.0.weight": (48, 3, 3, 3), "patch_embed.proj.0.bias": (48,),
        "patch_embed.proj.1.weight": (96, 48, 3, 3), "patch_embed.norm.weight": (96,),
        "levels.0.blocks.0.norm1.weight": (96,),
        "levels.0.blocks.0.attn.qkv.weight": (288, 96),
        "levels.0.blocks.0.attn.rpb": (3, 13, 13),
        "levels.0.blocks.0.attn.proj.bias": (96,),
        "levels.0.blocks.0.mlp.fc1.weight": (192, 96),
        "levels.0.blocks.0.mlp.fc2.weight": (96, 192),
        "levels.0.blocks.0.gamma1": (96,), "levels.0.blocks.0.gamma2": (96,),
        "levels.0.downsample.reduction.weight": (192, 96, 3, 3),
        "levels.0.downsample.norm.bias": (192,),
        "levels.3.blocks.4.attn.rpb": (24, 13, 13),
        "norm.weight": (768,), "head.weight": (1000, 768), "head.bias": (1000,),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert "levels.3.downsample.reduction.weight" not in sd
    assert not any(k.endswith("downsample") for k in sd)


def test_nat_mini_forward():
    torch.manual_seed(0)
    m = M.nat_mini().eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 1000) and torch.isfinite(y).all()


def tiny(**kw):
    cfg = dict(embed_dim=16, mlp_ratio=2, depths=[2, 1], num_heads=[1, 2],
               dilations=[[1, 2], [1]], kernel_size=3, num_classes=10)
    cfg.update(kw)
    return M.DiNAT(**cfg)


def test_state_dict_round_trip():
    """A full model's state dict loads strictly into a fresh one (built on meta: no init cost)."""
    torch.manual_seed(1)
    a = M.dinat_mini(num_classes=10)
    sd = a.state_dict()
    b = build_meta("dinat_mini", num_classes=10)
    b.load_state_dict(sd, assign=True)  # strict: same names, same shapes
    sb = b.state_dict()
    assert list(sd) == list(sb)
    assert all(torch.equal(sd[k], sb[k]) for k in sd)


def test_state_dict_round_trip_same_outputs():
    torch.manual_seed(1)
    a = tiny().eval()
    torch.manual_seed(2)
    b = tiny().eval()
    x = torch.randn(1, 3, 32, 32)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
        b.load_state_dict(torch.load(buf, weights_only=True))
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_training_step_and_backend_pass_through():
    torch.manual_seed(3)
    m = tiny(backend="reference", rel_pos_bias=False, drop_path_rate=0.1, attn_drop_rate=0.1)
    attn = [x for x in m.modules() if isinstance(x, NeighborhoodAttention2D)]
    assert len(attn) == 3 and all(a.backend == "reference" and a.rpb is None for a in attn)
    m.train()
    loss = torch.nn.functional.cross_entropy(m(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2]))
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    m.set_backend(None)
    assert all(a.backend is None for a in attn)
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_model_kwargs_override_config():
    m = build_meta("nat_mini", num_classes=0, in_chans=1, rel_pos_bias=False)
    assert isinstance(m.head, torch.nn.Identity)
    assert m.patch_embed.proj[0].weight.shape[1] == 1
    assert all(a.rpb is None for a in m.attention_modules())
    with pytest.raises(ValueError, match="dilations"):
        M.NAT(embed_dim=16, mlp_ratio=2, depths=[2], num_heads=[1], dilations=[[1]])
