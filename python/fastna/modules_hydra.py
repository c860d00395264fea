"""Hydra neighborhood attention: ``HydraNeighborhoodAttention1D/2D/3D``, one layer whose heads
are split into groups, each group with its own kernel size and dilation (StyleNAT's "Hydra-NA":
e.g. half the heads see a dense 7x7 window, the other half a 7x7 window dilated by 8).

    attn = fastna.modules.HydraNeighborhoodAttention2D(dim=256, num_heads=8,
                                                      kernel_sizes=[7, 7], dilations=[1, 8],
                                                      rel_pos_bias=True)
    y = attn(x)                                         # x, y: [B, X, Y, 256]

Groups: kernel_sizes, dilations, strides and is_causal are each a value shared by every group
or a *list* with one entry per group (an entry: a value or a per-axis tuple); a list of length
1 is shared too.  The number of groups is the length of the longer lists (they must agree), or
len(head_groups).  Heads are split evenly, the last ``num_heads % groups`` groups taking one
more head each (StyleNAT's split), unless ``head_groups`` gives the head counts.  One qkv
projection for all heads (``qkv``: Linear(dim, 3 * dim), q/k/v then heads in order, so group
g owns the heads after those of groups 0..g-1), one softmax scale for all groups
(``head_dim ** -0.5`` unless qk_scale), one output projection ``proj``.

Relative positional bias (``rel_pos_bias=True``): one table per group, ``rpb.<g>`` of shape
``[heads of group g, 2K_1-1, ..., 2K_r-1]`` for that group's kernel (odd kernels, non-causal,
stride 1).  State dicts of StyleNAT's two-group layer, which names them ``rpb0`` / ``rpb1``,
load as they are (the names are mapped on load).

Execution: without bias and attention dropout, one call of
``fastna.neighborhood_attention(..., head_groups=...)`` (its per-head-group path); with them,
per group the unfused ops of :mod:`fastna.ops_unfused` (``qk`` with the group's bias ->
softmax -> dropout -> ``av``), the path NeighborhoodAttention2D takes for its bias; consecutive
groups with the same window run as one (their tables stacked).  Inputs
smaller than a group's ``kernel * dilation`` are zero-padded and cropped back, as in
:mod:`fastna.modules`.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from ._args import per_axis_bools, per_axis_ints
from .modules import (_AttentionModule, _common_args, _common_options, _positive_int, _rpb_table,
                      _unfused_ops)

__all__ = ["HydraNeighborhoodAttention1D", "HydraNeighborhoodAttention2D",
           "HydraNeighborhoodAttention3D", "HydraNeighborhoodAttentionND", "even_head_groups"]


def even_head_groups(num_heads: int, groups: int) -> Tuple[int, ...]:
    """num_heads split into `groups` counts as evenly as possible, the larger counts last."""
    base, extra = divmod(num_heads, groups)
    if base == 0:
        raise ValueError(f"num_heads={num_heads} cannot be split into {groups} head groups "
                         f"(each group needs at least one head)")
    return (base,) * (groups - extra) + (base + 1,) * extra


def _group_count(named: dict, head_groups) -> int:
    lengths = {name: len(v) for name, v in named.items() if isinstance(v, list)}
    for name, n in lengths.items():
        if n == 0:
            raise ValueError(f"{name} must not be an empty list")
    if head_groups is not None:
        count = len(head_groups)
        for name, n in lengths.items():
            if n not in (1, count):
                raise ValueError(f"{name} as a list gives one entry per head group: expected "
                                 f"{count} entries (len(head_groups)) or 1, got {named[name]!r}")
        return count
    counts = {n for n in lengths.values() if n != 1}
    if len(counts) > 1:
        raise ValueError("the per-group lists must have the same length (or length 1), got "
                         + ", ".join(f"{name}={named[name]!r}" for name in lengths))
    return counts.pop() if counts else 1


def _per_group(name: str, value, count: int, rank: int, per_axis) -> Tuple[tuple, ...]:
    """One per-axis tuple per group."""
    entries = value if isinstance(value, list) else [value]
    if len(entries) == 1:
        entries = entries * count
    return tuple(per_axis(f"{name}[{g}]", e, rank) for g, e in enumerate(entries))


class HydraNeighborhoodAttentionND(_AttentionModule):
    """Multi-head neighborhood self-attention whose head groups have their own windows (module
    docstring).

    Args:
        embed_dim: channels C of the input ``[B, *spatial, C]`` (``dim=`` is accepted too).
        num_heads: number of heads; must divide embed_dim.
        kernel_sizes, dilations, strides: a value (int or per-axis tuple) for every group, or
            a list with one per group.
        is_causal: bool or per-axis tuple for every group, or a list with one per group.
        head_groups: heads per group (sum num_heads); default: an even split, the remainder
            to the last groups.
        qkv_bias, qk_scale, attn_drop, proj_drop, backend, device, dtype: as
            :class:`fastna.NeighborhoodAttention2D`.
        rel_pos_bias: one learned bias table per group (``rpb.<g>``; forces the unfused path).
    """

    rank: int = 0

    def __init__(self, embed_dim: Optional[int] = None, num_heads: Optional[int] = None,
                 kernel_sizes=None, dilations=1, strides=1, is_causal=False,
                 head_groups=None, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, rel_pos_bias: bool = False,
                 *, dim: Optional[int] = None, backend: Optional[str] = None,
                 rank: Optional[int] = None, device=None, dtype=None):
        super().__init__()
        rank, embed_dim, num_heads, channels_arg = _common_args(
            type(self), rank, embed_dim, dim, num_heads, "kernel_sizes", kernel_sizes)
        if head_groups is not None:
            if not isinstance(head_groups, (list, tuple)) or not head_groups:
                raise TypeError(f"head_groups must be a non-empty list of head counts or None, "
                                f"got {head_groups!r}")
            head_groups = tuple(_positive_int(f"head_groups[{g}]", n)
                                for g, n in enumerate(head_groups))
            if sum(head_groups) != num_heads:
                raise ValueError(f"head_groups={list(head_groups)} must sum to "
                                 f"num_heads={num_heads}")
        named = {"kernel_sizes": kernel_sizes, "dilations": dilations, "strides": strides,
                 "is_causal": is_causal}
        count = _group_count(named, head_groups)
        if head_groups is None:
            head_groups = even_head_groups(num_heads, count)
        kernels = _per_group("kernel_sizes", kernel_sizes, count, rank, per_axis_ints)
        dils = _per_group("dilations", dilations, count, rank, per_axis_ints)
        strides_ = _per_group("strides", strides, count, rank, per_axis_ints)
        causal = _per_group("is_causal", is_causal, count, rank, per_axis_bools)
        for g in range(count):
            if any(k < 2 for k in kernels[g]):
                raise ValueError(f"kernel_sizes[{g}] must be >= 2 on every axis, got "
                                 f"{kernels[g]}")
            if any(d < 1 for d in dils[g]):
                raise ValueError(f"dilations[{g}] must be >= 1 on every axis, got {dils[g]}")
            if not all(1 <= s <= k for s, k in zip(strides_[g], kernels[g])):
                raise ValueError(f"strides[{g}] must satisfy 1 <= stride <= kernel_size on "
                                 f"every axis, got strides {strides_[g]} with kernel_sizes "
                                 f"{kernels[g]}")
        head_dim = embed_dim // num_heads
        scale, attn_drop, proj_drop = _common_options(head_dim, qkv_bias, rel_pos_bias, qk_scale,
                                                      attn_drop, proj_drop, backend)
        if rel_pos_bias or attn_drop > 0:
            what = "rel_pos_bias=True" if rel_pos_bias else f"attn_drop={attn_drop}"
            for g in range(count):
                if any(s != 1 for s in strides_[g]):
                    raise ValueError(f"{what} runs the unfused (legacy) ops, which have no "
                                     f"stride; got strides[{g}]={strides_[g]}")
        if rel_pos_bias:
            for g in range(count):
                if any(k % 2 == 0 for k in kernels[g]):
                    raise ValueError(f"rel_pos_bias=True needs odd kernel sizes, got "
                                     f"kernel_sizes[{g}]={kernels[g]}")
                if any(causal[g]):
                    raise ValueError(f"rel_pos_bias=True is not defined for causal attention, "
                                     f"got is_causal[{g}]={causal[g]}")

        self._keep_common(rank, embed_dim, num_heads, causal, scale, backend, attn_drop)
        self.head_groups = head_groups
        self.num_groups = count
        self.kernel_sizes = kernels
        self.dilations = dils
        self.strides = strides_

        fk = dict(device=device, dtype=dtype)
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=qkv_bias, **fk)
        if rel_pos_bias:
            self.rpb = nn.ParameterList(_rpb_table(n, kernel, fk)
                                        for n, kernel in zip(head_groups, kernels))
        else:
            self.rpb = None
        self._make_output_layers(attn_drop, proj_drop, fk)

    def extra_repr(self) -> str:
        return (f"rank={self.rank}, embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"head_dim={self.head_dim}, head_groups={self.head_groups}, "
                f"kernel_sizes={self.kernel_sizes}, dilations={self.dilations}, "
                f"strides={self.strides}, is_causal={self.is_causal}, "
                f"rel_pos_bias={self.rpb is not None}, backend={self.backend!r}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # StyleNAT's two-group layer names its bias tables rpb0 / rpb1, ours rpb.0 / rpb.1.
        for g in range(self.num_groups):
            legacy, ours = f"{prefix}rpb{g}", f"{prefix}rpb.{g}"
            if legacy in state_dict and ours not in state_dict:
                state_dict[ours] = state_dict.pop(legacy)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _unfused_runs(self) -> List[Tuple[int, int, List[int]]]:
        """(first head, end head, groups) of each run of consecutive groups with the same
        window: one qk / av call each (their bias tables stacked along the heads)."""
        runs: List[Tuple[int, int, List[int]]] = []
        start = 0
        for g, n in enumerate(self.head_groups):
            window = (self.kernel_sizes[g], self.dilations[g], self.is_causal[g])
            if runs:
                last = runs[-1][2][-1]
                if window == (self.kernel_sizes[last], self.dilations[last],
                              self.is_causal[last]):
                    runs[-1] = (runs[-1][0], start + n, runs[-1][2] + [g])
                    start += n
                    continue
            runs.append((start, start + n, [g]))
            start += n
        return runs

    def _unfused(self, q, k, v) -> torch.Tensor:
        """Per run of groups with one window: qk (+ their biases) -> softmax -> dropout -> av."""
        qk_op, av_op = _unfused_ops(self.rank)
        outs: List[torch.Tensor] = []
        for start, stop, groups in self._unfused_runs():
            heads = slice(start, stop)
            g = groups[0]
            kernel, dil, causal = self.kernel_sizes[g], self.dilations[g], self.is_causal[g]
            rpb = None
            if self.rpb is not None:
                tables = [self.rpb[i] for i in groups]
                rpb = tables[0] if len(tables) == 1 else torch.cat(tables)
            attn = qk_op(q[..., heads, :] * self.scale, k[..., heads, :], kernel, dil,
                         is_causal=causal, rpb=rpb)
            attn = self.attn_drop(attn.softmax(dim=-1))
            outs.append(av_op(attn, v[..., heads, :], kernel, dil, is_causal=causal))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        need = [max(k[a] * d[a] for k, d in zip(self.kernel_sizes, self.dilations))
                for a in range(self.rank)]
        q, k, v, crop = self._project(x, need)
        if self.uses_fused_path:
            from ._api import neighborhood_attention
            out = neighborhood_attention(q, k, v, kernel_size=list(self.kernel_sizes),
                                         stride=list(self.strides), dilation=list(self.dilations),
                                         is_causal=list(self.is_causal), scale=self.scale,
                                         backend=self.backend, head_groups=list(self.head_groups))
        else:
            out = self._unfused(q, k, v)
        return self._output(out, crop)

class HydraNeighborhoodAttention1D(HydraNeighborhoodAttentionND):
    """1D Hydra neighborhood attention on ``[B, L, C]``; see
    :class:`HydraNeighborhoodAttentionND`."""
    rank = 1


class HydraNeighborhoodAttention2D(HydraNeighborhoodAttentionND):
    """2D Hydra neighborhood attention on ``[B, X, Y, C]``; see
    :class:`HydraNeighborhoodAttentionND`."""
    rank = 2


class HydraNeighborhoodAttention3D(HydraNeighborhoodAttentionND):
    """3D Hydra neighborhood attention on ``[B, X, Y, Z, C]``; see
    :class:`HydraNeighborhoodAttentionND`."""
    rank = 3
