"""StyleNAT: the style-based generator with Hydra neighborhood attention.

Walton, Hassani, Xu, Wang, Shi, "StyleNAT: Giving Each Head a New Perspective" (2022), built on
StyleSwin's generator. Layout (FFHQ-256):

- mapping network z -> w: PixelNorm, 8 equalized-lr linear layers (lr multiplier 0.01) with
  scaled leaky ReLU; w is broadcast to ``n_latent`` = 2 per stage (one per block);
- a learned 4x4x512 constant, then one stage per resolution 4, 8, ..., 256, each two
  transformer blocks (AdaIN -> attention -> residual, AdaIN -> MLP -> residual; each AdaIN
  styled by that block's w), then (except the last) bilinear 2x upsampling + LayerNorm +
  linear to the next width + a learned multiple of a 2D sinusoidal encoding;
- attention: full attention with relative positional bias at 4x4, Hydra neighborhood attention
  (kernel 7, two head groups: dilation 1 and the stage's dilation) from 8x8 on;
- a ToRGB per stage (1x1 conv) summing into a running image upsampled with the [1, 3, 3, 1]
  blur filter; the last ToRGB's output is the image (no tanh; trained weights give about
  [-1, 1]).

Module and parameter names are the authors' (``style.*``, ``input.input``,
``layers.i.blocks.j.{norm1.style, attn.{qkv, proj, rpb | rpb0, rpb1}, norm2.style,
mlp.{fc1, fc2}}``, ``layers.i.upsample.{norm, reduction, alpha}``,
``to_rgbs.i.{conv, bias}``), so their checkpoints' ``g_ema`` state dict loads with
:func:`load_official_state_dict`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .stylenat_attention import DenseAttentionRPB, HydraNeighborhoodAttention2D
from .stylenat_layers import (AdaptiveInstanceNorm, BilinearUpsample, ConstantInput,
                              MappingNetwork, ToRGB)

__all__ = ["StyleNATConfig", "StyleNATGenerator", "StyleNATBlock", "StyleNATStage",
           "FFHQ256", "OFFICIAL_FFHQ256_PARAMS", "stylenat_ffhq256", "load_official_state_dict",
           "official_to_fastna_keys"]

# The authors' README (SHI-Labs/StyleNAT, "Performance" table): 48.92M parameters for the
# FFHQ-256 generator. Their structure counted layer by layer gives 48,921,000, which this
# module has too (tests/test_stylenat.py counts it the same way).
OFFICIAL_FFHQ256_PARAMS = 48.92e6


@dataclass(frozen=True)
class StyleNATConfig:
    """Generator hyper-parameters (defaults: the authors' FFHQ-256 run).

    channels: width of each stage, 4x4 first; one stage per doubling up to ``size``.
    kernels, dilations: per stage from 8x8 on, one entry per head group (the 4x4 stage is full
        attention). A single kernel is repeated for every dilation.
    """
    size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    lr_mlp: float = 0.01
    channel_multiplier: int = 2
    mlp_ratio: float = 4.0
    min_heads: int = 4
    head_width: int = 32
    qkv_bias: bool = True
    qk_scale: Optional[float] = None
    kernels: Tuple[Tuple[int, ...], ...] = ((7,),) * 6
    dilations: Tuple[Tuple[int, ...], ...] = ((1,), (1, 2), (1, 4), (1, 8), (1, 16), (1, 32))
    channels: Optional[Tuple[int, ...]] = None

    def stage_channels(self) -> List[int]:
        """Channels per stage: 512 down to 32x32, then 256 * m, 128 * m, ... (the authors'
        table, m = channel_multiplier), unless ``channels`` is given."""
        n = self.num_stages
        if self.channels is not None:
            if len(self.channels) != n:
                raise ValueError(f"channels needs one entry per stage ({n} for size={self.size}),"
                                 f" got channels={self.channels}")
            return list(self.channels)
        m = self.channel_multiplier
        table = [512, 512, 512, 512, 256 * m, 128 * m, 64 * m, 32 * m, 16 * m]
        if n > len(table):
            raise ValueError(f"size={self.size} is larger than the channel table supports "
                             f"({2 ** (len(table) + 1)}); pass channels=")
        return table[:n]

    @property
    def num_stages(self) -> int:
        return int(math.log2(self.size)) - 1

    def stage_heads(self) -> List[int]:
        return [max(c // self.head_width, self.min_heads) for c in self.stage_channels()]

    def validate(self) -> None:
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two >= 8, got size={self.size}")
        n_na = self.num_stages - 1
        for name in ("kernels", "dilations"):
            if len(getattr(self, name)) != n_na:
                raise ValueError(f"{name} needs one entry per stage from 8x8 on ({n_na} for "
                                 f"size={self.size}), got {name}={getattr(self, name)}")
        for s, (ks, ds) in enumerate(zip(self.kernels, self.dilations)):
            side = 8 << s
            for k in ks:
                for d in ds:
                    if k * d > side:
                        raise ValueError(f"stage {side}x{side}: kernel {k} x dilation {d} "
                                         f"exceeds the feature map (kernels={self.kernels}, "
                                         f"dilations={self.dilations})")


FFHQ256 = StyleNATConfig()


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class StyleNATBlock(nn.Module):
    """x + Attn(AdaIN(x, w)), then x + MLP(AdaIN(x, w)); tokens [B, side*side, C]."""

    def __init__(self, dim: int, side: int, num_heads: int, style_dim: int, mlp_ratio: float,
                 kernels: Optional[Sequence[int]], dilations: Optional[Sequence[int]],
                 qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 backend: Optional[str] = None):
        super().__init__()
        self.side = side
        self.norm1 = AdaptiveInstanceNorm(dim, style_dim)
        if kernels is None:
            self.attn = DenseAttentionRPB(dim, num_heads, side, qkv_bias, qk_scale)
        else:
            # The authors' FFHQ checkpoints hold two bias groups wherever the stage lists one
            # dilation (their two-group split-head layer): keep two groups so they load.
            if len(kernels) == 1 and len(dilations) == 1:
                dilations = list(dilations) * 2
            self.attn = HydraNeighborhoodAttention2D(dim, num_heads, kernels, dilations,
                                                     qkv_bias, qk_scale, backend=backend)
        self.norm2 = AdaptiveInstanceNorm(dim, style_dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, style):
        B, N, C = x.shape
        a = self.attn(self.norm1(x, style).reshape(B, self.side, self.side, C))
        x = x + a.reshape(B, N, C)
        return x + self.mlp(self.norm2(x, style))


class StyleNATStage(nn.Module):
    """Two blocks at one resolution, each styled by its own w, then the upsampler (if any)."""

    def __init__(self, blocks: Sequence[StyleNATBlock], upsample: Optional[BilinearUpsample]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.upsample = upsample

    def forward(self, x, styles: Sequence[torch.Tensor]):
        for blk, w in zip(self.blocks, styles):
            x = blk(x, w)
        return x if self.upsample is None else self.upsample(x)


class StyleNATGenerator(nn.Module):
    """StyleNAT generator: ``G(z)`` with z ``[B, style_dim]`` -> images ``[B, 3, size, size]``.

    ``forward(z, truncation=1.0, truncation_latent=None, mix_z=None, inject_index=None,
    input_is_latent=False, return_latents=False)``:

    - truncation: ``w <- w_avg + truncation * (w - w_avg)`` with ``truncation_latent`` w_avg
      [style_dim] or [1, style_dim] (see :meth:`mean_latent`); 1 = off.
    - style mixing: with ``mix_z`` (a second batch of latents) the first ``inject_index``
      per-block styles come from z, the rest from mix_z (inject_index default: random).
    - input_is_latent: z (and mix_z) are already w (skip the mapping network); a
      ``[B, n_latent, style_dim]`` tensor gives every block its own w.
    - return_latents: also return the per-block styles ``[B, n_latent, style_dim]``.
    """

    def __init__(self, config: StyleNATConfig = FFHQ256, backend: Optional[str] = None):
        super().__init__()
        config.validate()
        self.config = config
        self.size = config.size
        self.style_dim = config.style_dim
        channels = config.stage_channels()
        heads = config.stage_heads()
        self.style = MappingNetwork(config.style_dim, config.n_mlp, config.lr_mlp)
        self.input = ConstantInput(channels[0])
        self.layers = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        n = config.num_stages
        for s in range(n):
            side = 4 << s
            last = s == n - 1
            kernels = None if s == 0 else config.kernels[s - 1]
            dilations = None if s == 0 else config.dilations[s - 1]
            blocks = [StyleNATBlock(channels[s], side, heads[s], config.style_dim,
                                    config.mlp_ratio, kernels, dilations, config.qkv_bias,
                                    config.qk_scale, backend)
                      for _ in range(2)]
            up = None if last else BilinearUpsample(side, channels[s], channels[s + 1])
            self.layers.append(StyleNATStage(blocks, up))
            self.to_rgbs.append(ToRGB(channels[s] if last else channels[s + 1],
                                      upsample=not last))
        self.n_latent = 2 * n
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        # The authors' initialization (EqualLinear keeps its own N(0, 1) draw).
        if m.__class__ is nn.Linear and m.weight.device.type != "meta":
            nn.init.normal_(m.weight, std=0.02)   # trunc_normal_(std=.02, +-2): 100 sigma
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d) and m.weight.device.type != "meta":
            nn.init.xavier_normal_(m.weight, gain=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def attention_modules(self) -> List[HydraNeighborhoodAttention2D]:
        return [m for m in self.modules() if isinstance(m, HydraNeighborhoodAttention2D)]

    def set_backend(self, backend: Optional[str]) -> "StyleNATGenerator":
        """fastna backend of the neighborhood-attention groups without a bias; returns self."""
        for m in self.attention_modules():
            m.backend = backend
        return self

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., style_dim] -> w [..., style_dim]."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: Optional[torch.Generator] = None):
        """Average w of n random z [1, style_dim]: the truncation center."""
        p = self.input.input
        z = torch.randn(n, self.style_dim, generator=generator, device=p.device, dtype=p.dtype)
        return self.mapping(z).mean(0, keepdim=True)

    def _check_latent(self, name: str, t) -> None:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() not in (2, 3) or t.shape[-1] != self.style_dim \
                or (t.dim() == 3 and t.shape[1] != self.n_latent):
            raise ValueError(f"{name} must be [B, {self.style_dim}] (or [B, {self.n_latent}, "
                             f"{self.style_dim}] with input_is_latent=True), got shape "
                             f"{tuple(t.shape)}")

    def _styles(self, z, truncation, truncation_latent, input_is_latent) -> torch.Tensor:
        """Per-block styles [B, n_latent, style_dim] of one latent batch."""
        if z.dim() == 3 and not input_is_latent:
            raise ValueError("per-block latents [B, n_latent, style_dim] need "
                             "input_is_latent=True")
        w = z if input_is_latent else self.mapping(z)
        if truncation != 1:
            if truncation_latent is None:
                raise ValueError(f"truncation={truncation} needs truncation_latent (e.g. "
                                 f"model.mean_latent())")
            center = truncation_latent.reshape(-1, self.style_dim)
            if w.dim() == 3:
                center = center.unsqueeze(1)
            w = center + truncation * (w - center)
        if w.dim() == 2:
            w = w.unsqueeze(1).expand(-1, self.n_latent, -1)
        return w

    def forward(self, z, truncation: float = 1.0,
                truncation_latent: Optional[torch.Tensor] = None,
                mix_z: Optional[torch.Tensor] = None, inject_index: Optional[int] = None,
                input_is_latent: bool = False, return_latents: bool = False):
        self._check_latent("z", z)
        latent = self._styles(z, truncation, truncation_latent, input_is_latent)
        if mix_z is not None:
            self._check_latent("mix_z", mix_z)
            if mix_z.shape[0] != z.shape[0]:
                raise ValueError(f"mix_z needs the batch of z ({z.shape[0]}), got shape "
                                 f"{tuple(mix_z.shape)}")
            if inject_index is None:
                inject_index = int(torch.randint(1, self.n_latent, ()))
            if not 0 <= inject_index <= self.n_latent:
                raise ValueError(f"inject_index must be in [0, {self.n_latent}], got "
                                 f"inject_index={inject_index}")
            other = self._styles(mix_z, truncation, truncation_latent, input_is_latent)
            latent = torch.cat([latent[:, :inject_index], other[:, inject_index:]], dim=1)
        image = self.synthesis(latent)
        return (image, latent) if return_latents else image

    def synthesis(self, latent: torch.Tensor) -> torch.Tensor:
        """Per-block styles [B, n_latent, style_dim] -> images [B, 3, size, size]."""
        B = latent.shape[0]
        x = self.input(B).flatten(2).transpose(1, 2)             # [B, 16, C]
        skip = None
        for s, (stage, to_rgb) in enumerate(zip(self.layers, self.to_rgbs)):
            x = stage(x, (latent[:, 2 * s], latent[:, 2 * s + 1]))
            side = math.isqrt(x.shape[1])
            skip = to_rgb(x.transpose(1, 2).reshape(B, -1, side, side), skip)
        return skip


def stylenat_ffhq256(backend: Optional[str] = None, **overrides) -> StyleNATGenerator:
    """The authors' FFHQ-256 StyleNAT generator (48.92M parameters), randomly initialized.

    Keyword arguments override fields of :class:`StyleNATConfig` (e.g. ``size=32,
    channels=(64, 64, 32, 32), kernels=..., dilations=...`` for a small test model).
    """
    return StyleNATGenerator(replace(FFHQ256, **overrides), backend=backend)


# The authors' buffers that fastna computes instead of storing.
_COMPUTED_BUFFERS = ("relative_position_index", "sin_pos_embed._float_tensor",
                     "upsample.kernel")


def official_to_fastna_keys(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The authors' generator state dict in fastna's names: drops the buffers fastna computes,
    a DistributedDataParallel ``module.`` prefix, and renames the newer Hydra layer's
    ``attn.rpb.<g>`` to ``attn.rpb<g>``. Everything else already has fastna's name."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.endswith(_COMPUTED_BUFFERS):
            continue
        parts = key.split(".")
        if len(parts) >= 2 and parts[-2] == "rpb" and parts[-1].isdigit():
            key = ".".join(parts[:-2] + [f"rpb{parts[-1]}"])
        out[key] = value
    return out


def load_official_state_dict(model: StyleNATGenerator, state_dict, strict: bool = True):
    """Load an authors' checkpoint into ``model``: the checkpoint dict itself (its ``g_ema``
    entry is taken) or a generator state dict. Returns load_state_dict's result."""
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    if "g_ema" in state_dict and isinstance(state_dict["g_ema"], dict):
        state_dict = state_dict["g_ema"]
    return model.load_state_dict(official_to_fastna_keys(state_dict), strict=strict)
