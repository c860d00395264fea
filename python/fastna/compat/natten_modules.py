"""NATTEN 0.17's nn modules: natten.NeighborhoodAttention1D / 2D / 3D.

Constructor arguments, attributes (num_heads, head_dim, scale, kernel_size, dilation,
is_causal, attn_drop_rate) and state_dict keys (qkv.weight, qkv.bias, rpb, proj.weight,
proj.bias) are 0.17.4's, so checkpoints trained with NATTEN 0.17 load strictly. Input is
heads-last [B, *spatial, C] with no padding: every axis must be at least kernel_size *
dilation long, as in 0.17 (fastna.NeighborhoodAttention*D pads instead).

forward follows 0.17: with natten.use_fused_na(True) it calls the fused na*d (scale and rpb
passed through; attention dropout is not applied there, and 0.17 logged an error about it,
as this does); otherwise it scales q, runs na*d_qk (+ rpb), softmax, attention dropout and
na*d_av.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn, Tensor
from torch.nn.init import trunc_normal_

from . import natten as F
from .natten_args import check_all_args
from .natten_context import is_fused_na_enabled

__all__ = ["NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D"]

logger = logging.getLogger("natten.modules")


class _NeighborhoodAttentionND(nn.Module):
    rank: int

    def __init__(self, dim: int, num_heads: int, kernel_size, dilation=1, is_causal=False,
                 rel_pos_bias: bool = False, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        name = type(self).__name__
        kernel, dil, causal = check_all_args(self.rank, kernel_size, dilation, is_causal)
        if rel_pos_bias and any(causal):
            raise NotImplementedError(f"{name}: rel_pos_bias=True with is_causal={causal} is not "
                                      f"defined in NATTEN 0.17")
        if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads < 1:
            raise ValueError(f"{name}: num_heads must be a positive int, got {num_heads!r}")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < num_heads:
            raise ValueError(f"{name}: dim must be an int >= num_heads={num_heads}, got {dim!r}")
        self.num_heads = num_heads
        # 0.17 floors dim // num_heads; a dim that heads do not divide fails in forward there
        # too (the qkv reshape), so it is refused here, earlier.
        if dim % num_heads:
            raise ValueError(f"{name}: dim={dim} must be divisible by num_heads={num_heads}")
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.kernel_size = kernel
        self.dilation = dil
        self.is_causal = causal
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, *(2 * k - 1 for k in kernel)))
            trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)
        self.attn_drop_rate = attn_drop
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        r = self.rank
        if x.dim() != r + 2:
            raise ValueError(f"{type(self).__name__} expected a rank-{r + 2} input "
                             f"[B, *spatial, C], got shape {tuple(x.shape)}")
        B, *spatial, C = x.shape
        qkv = self.qkv(x).reshape(B, *spatial, 3, self.num_heads, self.head_dim)
        if is_fused_na_enabled():
            if self.attn_drop_rate > 0:
                logger.error("fused neighborhood attention does not apply attention dropout "
                             "(attn_drop=%s is ignored on this path, as in NATTEN 0.17)",
                             self.attn_drop_rate)
            q, k, v = qkv.movedim(r + 1, 0)
            fused = getattr(F, f"na{r}d")
            out = fused(q, k, v, kernel_size=self.kernel_size, dilation=self.dilation,
                        is_causal=self.is_causal, rpb=self.rpb, scale=self.scale)
            out = out.reshape(B, *spatial, C)
        else:
            # [B, *S, 3, H, D] -> [3, B, H, *S, D]
            q, k, v = qkv.movedim(r + 1, 0).movedim(-2, 2)
            attn = getattr(F, f"na{r}d_qk")(q * self.scale, k, kernel_size=self.kernel_size,
                                            dilation=self.dilation, is_causal=self.is_causal,
                                            rpb=self.rpb)
            attn = self.attn_drop(attn.softmax(dim=-1))
            out = getattr(F, f"na{r}d_av")(attn, v, kernel_size=self.kernel_size,
                                           dilation=self.dilation, is_causal=self.is_causal)
            out = out.movedim(1, -2).reshape(B, *spatial, C)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, num_heads={self.num_heads}, "
                f"kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"is_causal={self.is_causal}, has_bias={self.rpb is not None}")


class NeighborhoodAttention1D(_NeighborhoodAttentionND):
    """NATTEN 0.17's 1D module: x [B, L, C]; rpb [num_heads, 2K-1]."""
    rank = 1


class NeighborhoodAttention2D(_NeighborhoodAttentionND):
    """NATTEN 0.17's 2D module: x [B, X, Y, C]; rpb [num_heads, 2Kx-1, 2Ky-1]."""
    rank = 2


class NeighborhoodAttention3D(_NeighborhoodAttentionND):
    """NATTEN 0.17's 3D module: x [B, X, Y, Z, C]; rpb [num_heads, 2Kx-1, 2Ky-1, 2Kz-1]."""
    rank = 3
