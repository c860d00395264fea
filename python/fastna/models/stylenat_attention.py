"""StyleNAT's attention layers: Hydra neighborhood attention and dense attention with RPB.

Hydra neighborhood attention splits the heads into groups, each with its own kernel size and
dilation (and its own relative positional bias), so that some heads look nearby and others far
away within one layer. The FFHQ-256 generator uses two groups per layer: dilation 1 and a
dilation that makes the 7x7 window span most of the feature map.

Parameter names and shapes are the authors' (checkpoints load as they are): ``qkv``, ``proj``
and one bias per head group, ``rpb0``, ``rpb1``, ... of shape ``[heads_in_group, 2K-1, 2K-1]``
(their two-group ``NeighborhoodAttentionSplitHead``, which the FFHQ checkpoints hold; their
newer ``HydraNeighborhoodAttention`` names them ``rpb.0``, ``rpb.1``, ...:
fastna.models.stylenat.load_official_state_dict renames those).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._api import neighborhood_attention

__all__ = ["HeadGroup", "split_heads", "hydra_attention", "HydraNeighborhoodAttention2D",
           "DenseAttentionRPB"]

# (number of heads, kernel size, dilation) of one head group, in head order.
HeadGroup = Tuple[int, int, int]


def split_heads(num_heads: int, num_groups: int) -> List[int]:
    """Heads per group: equal shares, the remainder one each to the last groups (the authors'
    rule)."""
    if not 1 <= num_groups <= num_heads:
        raise ValueError(f"need 1 <= number of head groups <= num_heads, got {num_groups} "
                         f"groups for num_heads={num_heads}")
    base, extra = divmod(num_heads, num_groups)
    return [base + (1 if g >= num_groups - extra else 0) for g in range(num_groups)]


def _merge_equal_windows(groups: Sequence[HeadGroup], rpbs):
    """Adjacent groups with the same window are one neighborhood-attention call (their biases
    stacked): the 8x8 stage's two dilation-1 groups run as one."""
    merged, merged_rpbs = [], []
    for g, rpb in zip(groups, rpbs):
        if merged and merged[-1][1:] == g[1:]:
            merged[-1] = (merged[-1][0] + g[0],) + g[1:]
            merged_rpbs[-1] = None if rpb is None else torch.cat([merged_rpbs[-1], rpb])
        else:
            merged.append(tuple(g))
            merged_rpbs.append(rpb)
    return merged, merged_rpbs


def hydra_attention(q, k, v, groups: Sequence[HeadGroup], rpbs: Sequence[Optional[torch.Tensor]],
                    scale: float, backend: Optional[str] = None) -> torch.Tensor:
    """2D neighborhood attention with a window per head group.

    q, k, v: [B, X, Y, H, D] (heads-last); groups: (heads, kernel size, dilation) per group,
    in head order, heads summing to H; rpbs: per group a bias [heads, 2K-1, 2K-1] or None.
    Returns [B, X, Y, H, D].

    The one place that runs the per-group windows: without biases one
    fastna.neighborhood_attention call with head_groups; with biases one call per group of
    equal windows, the biased ones with rpb= (the unfused qk + rpb -> softmax -> av path).
    """
    if all(r is None for r in rpbs):
        # One per-head-group call (fastna._heads: one launch where a backend takes head groups).
        return neighborhood_attention(q, k, v, kernel_size=[g[1] for g in groups],
                                      dilation=[g[2] for g in groups], scale=scale,
                                      backend=backend, head_groups=[g[0] for g in groups])
    groups, rpbs = _merge_equal_windows(groups, rpbs)
    outs, h0 = [], 0
    for (heads, kernel, dilation), rpb in zip(groups, rpbs):
        qg, kg, vg = (t[..., h0:h0 + heads, :] for t in (q, k, v))
        h0 += heads
        if rpb is None:
            outs.append(neighborhood_attention(qg, kg, vg, kernel_size=kernel, dilation=dilation,
                                               scale=scale, backend=backend))
            continue
        # the bias runs the unfused path (fastna._rpb): backend None picks its kernels
        outs.append(neighborhood_attention(qg, kg, vg, kernel_size=kernel, dilation=dilation,
                                           scale=scale, rpb=rpb))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-2)


class HydraNeighborhoodAttention2D(nn.Module):
    """Multi-head 2D neighborhood self-attention whose head groups have their own kernel size,
    dilation and relative positional bias. Input and output ``[B, X, Y, C]``.

    Args:
        dim: channels C.
        num_heads: heads (divides C); split between the groups by :func:`split_heads`.
        kernel_sizes, dilations: one entry per group (a single entry is repeated to the other
            list's length). Kernel sizes odd and >= 3 (the bias needs odd kernels).
        rel_pos_bias: learn a bias per group (the authors' model has them).
        backend: fastna backend of the groups without a bias (None = best available).
    """

    def __init__(self, dim: int, num_heads: int, kernel_sizes: Sequence[int],
                 dilations: Sequence[int] = (1,), qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, rel_pos_bias: bool = True,
                 backend: Optional[str] = None):
        super().__init__()
        kernel_sizes, dilations = list(kernel_sizes), list(dilations)
        if len(kernel_sizes) == 1:
            kernel_sizes = kernel_sizes * len(dilations)
        if len(dilations) == 1:
            dilations = dilations * len(kernel_sizes)
        if len(kernel_sizes) != len(dilations):
            raise ValueError(f"kernel_sizes={kernel_sizes} and dilations={dilations} need the "
                             f"same number of entries (or one)")
        for kernel in kernel_sizes:
            if kernel < 3 or kernel % 2 == 0:
                raise ValueError(f"kernel sizes must be odd and >= 3, got "
                                 f"kernel_sizes={kernel_sizes}")
        if any(d < 1 for d in dilations):
            raise ValueError(f"dilations must be >= 1, got dilations={dilations}")
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim ** -0.5
        heads = split_heads(num_heads, len(kernel_sizes))
        self.groups: List[HeadGroup] = list(zip(heads, kernel_sizes, dilations))
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_bias = bool(rel_pos_bias)
        for g, (h, kernel, _) in enumerate(self.groups):
            rpb = nn.Parameter(torch.zeros(h, 2 * kernel - 1, 2 * kernel - 1)) \
                if self.rel_pos_bias else None
            if rpb is not None and rpb.device.type != "meta":
                nn.init.trunc_normal_(rpb, std=0.02, a=-2.0, b=2.0)
            self.register_parameter(f"rpb{g}", rpb)

    def rpbs(self) -> List[Optional[torch.Tensor]]:
        return [getattr(self, f"rpb{g}") for g in range(len(self.groups))]

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, groups (heads, kernel, dilation)="
                f"{self.groups}, rel_pos_bias={self.rel_pos_bias}, backend={self.backend!r}")

    def forward(self, x):
        B, X, Y, C = x.shape
        qkv = self.qkv(x).reshape(B, X, Y, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(3)
        out = hydra_attention(q, k, v, self.groups, self.rpbs(), self.scale, self.backend)
        return self.proj(out.reshape(B, X, Y, C))


class DenseAttentionRPB(nn.Module):
    """Full self-attention over a ``size x size`` map with a relative positional bias
    ``rpb [heads, 2*size-1, 2*size-1]`` indexed by key minus query (NATTEN's convention): what
    neighborhood attention with a window as large as the map computes. Input ``[B, X, Y, C]``
    with X = Y = size. The authors' ``MHSARPB`` (4x4 stage); same parameter names."""

    def __init__(self, dim: int, num_heads: int, size: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.dim, self.num_heads, self.size = dim, num_heads, size
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * size - 1, 2 * size - 1))
        if self.rpb.device.type != "meta":
            nn.init.trunc_normal_(self.rpb, std=0.02, a=-2.0, b=2.0)
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        rows, cols = yy.flatten(), xx.flatten()
        # Flat index into rpb[h] of (key - query + size - 1) per axis: [N queries, N keys].
        index = (rows[None, :] - rows[:, None] + size - 1) * (2 * size - 1) \
            + (cols[None, :] - cols[:, None] + size - 1)
        self.register_buffer("bias_index", index, persistent=False)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, size={self.size}"

    def forward(self, x):
        B, X, Y, C = x.shape
        if (X, Y) != (self.size, self.size):
            raise ValueError(f"DenseAttentionRPB was built for a {self.size}x{self.size} map, "
                             f"got input of shape {tuple(x.shape)}")
        N = X * Y
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        bias = self.rpb.flatten(1)[:, self.bias_index]                   # [H, N, N]
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2],
                                             attn_mask=bias.to(qkv.dtype), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, X, Y, C))
