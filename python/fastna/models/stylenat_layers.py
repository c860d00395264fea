"""StyleGAN2-style building blocks of the StyleNAT generator, in plain PyTorch.

StyleNAT (Walton et al., "StyleNAT: Giving Each Head a New Perspective", 2022) builds on
StyleSwin's generator, which takes these pieces from StyleGAN2: an equalized-learning-rate
mapping network, adaptive instance norm, a skip-connected ToRGB path whose running image is
upsampled with the [1, 3, 3, 1] blur filter, and bilinear upsampling between stages with a 2D
sinusoidal positional encoding. The authors run the blur and the biased leaky ReLU as custom
CUDA ops (upfirdn2d, fused_bias_act); here they are ordinary torch ops with the same results.

Parameter and submodule names follow the authors' generator so their checkpoints load
(see fastna.models.stylenat.load_official_state_dict).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EqualLinear", "PixelNorm", "MappingNetwork", "AdaptiveInstanceNorm",
           "sinusoidal_grid", "BilinearUpsample", "upsample_blur", "ToRGB", "ConstantInput"]

# StyleGAN2's activation: leaky ReLU with slope 0.2, rescaled by sqrt(2) to keep unit variance.
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: the stored weight is N(0, 1 / lr_mul^2) and
    scaled by lr_mul / sqrt(in_dim) at run time, the bias by lr_mul. With ``activation`` the
    biased output goes through StyleGAN2's scaled leaky ReLU."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: bool = False):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        self.bias = nn.Parameter(torch.empty(out_dim)) if bias else None
        self.bias_init = float(bias_init)
        self.lr_mul = float(lr_mul)
        self.scale = self.lr_mul / math.sqrt(in_dim)
        self.activation = bool(activation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight.device.type == "meta":
            return
        with torch.no_grad():
            self.weight.normal_().div_(self.lr_mul)
            if self.bias is not None:
                self.bias.fill_(self.bias_init)

    def forward(self, x):
        bias = None if self.bias is None else self.bias * self.lr_mul
        if not self.activation:
            return F.linear(x, self.weight * self.scale, bias)
        out = F.linear(x, self.weight * self.scale)
        if bias is not None:
            out = out + bias
        return F.leaky_relu(out, LRELU_SLOPE) * LRELU_GAIN

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, out_dim={self.out_dim}, lr_mul={self.lr_mul}, "
                f"activation={self.activation}")


class PixelNorm(nn.Module):
    """Normalizes each latent vector to unit root-mean-square over its last axis."""

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + 1e-8)


class MappingNetwork(nn.Sequential):
    """z -> w: PixelNorm, then ``n_layers`` EqualLinear + scaled leaky ReLU (index 1..n, as
    the authors' ``style`` Sequential numbers them)."""

    def __init__(self, style_dim: int, n_layers: int, lr_mul: float):
        super().__init__(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mul,
                                                    activation=True)
                                        for _ in range(n_layers)])


class AdaptiveInstanceNorm(nn.Module):
    """Instance norm over the tokens of each channel, then ``gamma * x + beta`` with
    (gamma, beta) an EqualLinear of the style (zero-initialized bias, so no +1 on gamma:
    the authors' choice). Tokens-last input ``[B, N, C]``."""

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.channels = channels
        self.style = EqualLinear(style_dim, 2 * channels)

    def forward(self, x, style):
        gamma, beta = self.style(style).unsqueeze(1).chunk(2, dim=-1)  # [B, 1, C] each
        # InstanceNorm1d's statistics: biased variance over the tokens, eps 1e-5.
        x = F.instance_norm(x.transpose(1, 2), eps=1e-5).transpose(1, 2)
        return gamma * x + beta


def _sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[n] integer positions -> [n, dim]: sin of position * frequency for half the channels,
    cos for the other half; frequencies 10000^(-i / (dim/2 - 1)) (tensor2tensor's spacing,
    which the authors' SPE uses)."""
    half = dim // 2
    step = math.log(10000.0) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -step)
    angles = positions.to(torch.float32).unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sinusoidal_grid(height: int, width: int, channels: int) -> torch.Tensor:
    """2D sinusoidal positional encoding [channels, height, width] (float32): the first half of
    the channels encodes the column (1-based), the second half the row, each with
    channels / 2 sinusoids."""
    if channels % 4:
        raise ValueError(f"channels must be a multiple of 4 for the 2D sinusoidal encoding, "
                         f"got channels={channels}")
    dim = channels // 2
    cols = _sinusoid(torch.arange(1, width + 1), dim).t()   # [dim, W]
    rows = _sinusoid(torch.arange(1, height + 1), dim).t()  # [dim, H]
    return torch.cat([cols.unsqueeze(1).expand(dim, height, width),
                      rows.unsqueeze(2).expand(dim, height, width)], dim=0)


class BilinearUpsample(nn.Module):
    """Between stages: [B, H*W, C] -> [B, 2H*2W, out_dim]. Bilinear 2x (align_corners=False),
    LayerNorm, a bias-free linear to out_dim, plus alpha times a 2D sinusoidal encoding (alpha
    learned, starts at 0)."""

    def __init__(self, resolution: int, dim: int, out_dim: int):
        super().__init__()
        self.resolution, self.dim, self.out_dim = resolution, dim, out_dim
        self.norm = nn.LayerNorm(dim)
        self.reduction = nn.Linear(dim, out_dim, bias=False)
        self.alpha = nn.Parameter(torch.zeros(1))
        side = 2 * resolution
        grid = sinusoidal_grid(side, side, out_dim)
        # [1, side*side, out_dim]: tokens row-major like the feature map.
        self.register_buffer("pos_encoding", grid.flatten(1).t().unsqueeze(0), persistent=False)

    def forward(self, x):
        B, N, C = x.shape
        side = self.resolution
        x = x.transpose(1, 2).reshape(B, C, side, side)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.reduction(self.norm(x.flatten(2).transpose(1, 2)))
        return x + self.alpha * self.pos_encoding.to(x.dtype)

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, dim={self.dim}, out_dim={self.out_dim}"


def _blur_taps() -> torch.Tensor:
    """StyleGAN2's [1, 3, 3, 1] filter, normalized, times 4 for the 2x zero-insertion upsample
    (so a constant image stays constant): [4, 4]."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(k, k) / k.sum() ** 2 * 4


def upsample_blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """2x upsample [B, C, H, W] -> [B, C, 2H, 2W]: insert zeros, pad (2, 1), convolve with the
    4x4 taps -- upfirdn2d(up=2, pad=(2, 1)) -- as one depthwise transposed convolution (stride
    2, padding 1 gives the same alignment, and both apply the taps as a true convolution)."""
    C = x.shape[1]
    weight = taps.to(x.dtype).expand(C, 1, *taps.shape)
    return F.conv_transpose2d(x, weight, stride=2, padding=1, groups=C)


class ToRGB(nn.Module):
    """Features [B, C, H, W] -> RGB: a 1x1 conv (with its own bias) plus a separate learned
    bias, added to the previous stage's RGB upsampled 2x with the blur filter."""

    def __init__(self, in_channels: int, upsample: bool):
        super().__init__()
        self.upsample = bool(upsample)
        self.conv = nn.Conv2d(in_channels, 3, kernel_size=1)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.register_buffer("blur_taps", _blur_taps(), persistent=False)

    def forward(self, x, skip=None):
        out = self.conv(x) + self.bias
        if skip is not None:
            if self.upsample:
                skip = upsample_blur(skip, self.blur_taps)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 starting feature map, repeated over the batch: [B, C, size, size]."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.empty(1, channels, size, size))
        if self.input.device.type != "meta":
            nn.init.normal_(self.input)

    def forward(self, batch: int):
        return self.input.expand(batch, -1, -1, -1)
