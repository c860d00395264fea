"""NAT and DiNAT hierarchical image classifiers built on fastna's NeighborhoodAttention2D.

NAT: "Neighborhood Attention Transformer" (Hassani et al., CVPR 2023).
DiNAT: "Dilated Neighborhood Attention Transformer" (Hassani & Shi, 2022): NAT whose layers
alternate between plain and dilated neighborhood attention.

Layout: a convolutional tokenizer (two 3x3 stride-2 convolutions, then LayerNorm) brings the
image to 1/4 resolution; four levels of pre-norm NA blocks (NA + MLP, optional layer scale,
stochastic depth) follow, with a 3x3 stride-2 convolution (+ LayerNorm) doubling the channels
between levels; then LayerNorm, global average pooling and a linear head. Tensors are
channels-last [B, H, W, C] inside the network.

Parameter names follow the authors' reference implementation so their checkpoints load:
patch_embed.proj.{0,1}, patch_embed.norm, levels.i.blocks.j.{norm1,attn.{qkv,proj,rpb},norm2,
mlp.{fc1,fc2},gamma1,gamma2}, levels.i.downsample.{reduction,norm}, norm, head.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..modules import NeighborhoodAttention2D

__all__ = ["NAT", "DiNAT", "NATLayer", "NATBlock", "ConvTokenizer", "ConvDownsampler", "Mlp",
           "DropPath"]


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f"p={self.p}"


class ConvTokenizer(nn.Module):
    """Image [B, C_in, H, W] -> tokens [B, H/4, W/4, C] (two overlapping 3x3 stride-2 convs)."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 64):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1),
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    """[B, H, W, C] -> [B, H/2, W/2, 2C]: 3x3 stride-2 conv (no bias), then LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x):
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class NATLayer(nn.Module):
    """Pre-norm transformer block: x + NA(LN(x)), then x + MLP(LN(x)), with optional layer scale."""

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 7, dilation: int = 1,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale: Optional[float] = None, rel_pos_bias: bool = True,
                 backend: Optional[str] = None):
        super().__init__()
        self.dim = dim
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighborhoodAttention2D(dim, num_heads, kernel_size, dilation=dilation,
                                            qkv_bias=qkv_bias, qk_scale=qk_scale,
                                            attn_drop=attn_drop, proj_drop=drop,
                                            rel_pos_bias=rel_pos_bias, backend=backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x):
        a = self.attn(self.norm1(x))
        if self.layer_scale:
            a = self.gamma1 * a
        x = x + self.drop_path(a)
        m = self.mlp(self.norm2(x))
        if self.layer_scale:
            m = self.gamma2 * m
        return x + self.drop_path(m)


class NATBlock(nn.Module):
    """One level: `depth` NATLayers (dilation per layer), then an optional downsampler."""

    def __init__(self, dim: int, depth: int, num_heads: int, kernel_size: int,
                 dilations: Optional[Sequence[int]] = None, downsample: bool = True,
                 drop_path: Sequence[float] = (), **layer_kw):
        super().__init__()
        dilations = list(dilations) if dilations is not None else [1] * depth
        if len(dilations) != depth:
            raise ValueError(f"need one dilation per layer: depth={depth}, dilations={dilations}")
        drop_path = list(drop_path) or [0.0] * depth
        self.dim, self.depth = dim, depth
        self.blocks = nn.ModuleList([
            NATLayer(dim, num_heads, kernel_size, dilation=dilations[i],
                     drop_path=drop_path[i], **layer_kw)
            for i in range(depth)])
        self.downsample = ConvDownsampler(dim) if downsample else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class NAT(nn.Module):
    """Hierarchical neighborhood-attention classifier; DiNAT is this with `dilations`.

    Args:
        embed_dim: channels of level 0 (doubled at every level).
        mlp_ratio: MLP hidden size / channels.
        depths, num_heads: per level.
        dilations: per level, one dilation per layer (None: all 1, i.e. NAT).
        kernel_size: NA window (7 in the papers).
        layer_scale: initial value of the per-channel residual scales (None: no layer scale).
        rel_pos_bias: learn relative positional biases (the papers' models have them; False
            gives the fused path everywhere).
        backend: fastna backend for the fused attention path (None = best available).
    """

    def __init__(self, embed_dim: int, mlp_ratio: float, depths: Sequence[int],
                 num_heads: Sequence[int], dilations: Optional[Sequence[Sequence[int]]] = None,
                 drop_path_rate: float = 0.2, in_chans: int = 3, kernel_size: int = 7,
                 num_classes: int = 1000, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 layer_scale: Optional[float] = None, rel_pos_bias: bool = True,
                 backend: Optional[str] = None):
        super().__init__()
        if len(num_heads) != len(depths):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must have "
                             f"the same length")
        if dilations is not None and len(dilations) != len(depths):
            raise ValueError(f"dilations must have one list per level ({len(depths)}), got "
                             f"{len(dilations)}")
        self.num_classes = num_classes
        self.num_levels = len(depths)
        self.embed_dim = embed_dim
        self.num_features = int(embed_dim * 2 ** (self.num_levels - 1))
        self.mlp_ratio = mlp_ratio
        self.kernel_size = kernel_size
        self.patch_embed = ConvTokenizer(in_chans, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.levels = nn.ModuleList()
        for i, depth in enumerate(depths):
            lo = sum(depths[:i])
            self.levels.append(NATBlock(
                int(embed_dim * 2 ** i), depth, num_heads[i], kernel_size,
                dilations=None if dilations is None else dilations[i],
                downsample=i < self.num_levels - 1, drop_path=dpr[lo:lo + depth],
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                attn_drop=attn_drop_rate, layer_scale=layer_scale, rel_pos_bias=rel_pos_bias,
                backend=backend))
        self.norm = nn.LayerNorm(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            if m.weight.device.type != "meta":
                # The papers' trunc_normal_(std=.02) truncates at +-2 (100 sigma): a plain
                # normal draw is the same distribution, and much faster on CPU.
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            if m.weight.device.type != "meta":
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def no_weight_decay_keywords(self):
        return {"rpb"}

    def attention_modules(self):
        return [m for m in self.modules() if isinstance(m, NeighborhoodAttention2D)]

    def set_backend(self, backend: Optional[str]) -> "NAT":
        """Choose the fastna backend of every attention layer (fused path); returns self."""
        for m in self.attention_modules():
            m.backend = backend
        return self

    def forward_features(self, x):
        x = self.pos_drop(self.patch_embed(x))
        for level in self.levels:
            x = level(x)
        x = self.norm(x).flatten(1, 2)                   # [B, N, C]
        return self.avgpool(x.transpose(1, 2)).flatten(1)  # [B, C]

    def forward(self, x):
        return self.head(self.forward_features(x))


class DiNAT(NAT):
    """NAT with dilated neighborhood attention in every other layer (pass `dilations`)."""
