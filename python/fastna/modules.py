"""Neighborhood-attention layers: ``NeighborhoodAttention1D/2D/3D``, and (defined in
:mod:`fastna.modules_hydra`) ``HydraNeighborhoodAttention1D/2D/3D``, whose head groups have
their own kernel sizes and dilations.

Inputs are channels-last ``[B, *spatial, C]``. The parameters are named like NATTEN's modules
(``qkv``, ``proj`` and, with ``rel_pos_bias=True``, ``rpb`` of shape ``[heads, 2K_1-1, ...]``),
so state dicts trained with NATTEN load as they are.

Two execution paths:

- fused: no relative positional bias and no active attention dropout (``attn_drop == 0`` or
  eval mode) -> :func:`fastna.neighborhood_attention` (the best available backend, or the one
  named by ``backend=``).
- unfused: with RPB, or attention dropout while training -> the legacy ops of
  :mod:`fastna.ops_unfused`: ``qk`` (query pre-scaled, + RPB) -> softmax -> dropout -> ``av``.

Inputs smaller than ``kernel_size * dilation`` on an axis are zero-padded up to it and the output
is cropped back, as NATTEN's modules (<= 0.17) do, so that small images run through models built
for larger ones.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._args import per_axis_bools, per_axis_ints

__all__ = ["NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D",
           "NeighborhoodAttentionND", "HydraNeighborhoodAttention1D",
           "HydraNeighborhoodAttention2D", "HydraNeighborhoodAttention3D",
           "HydraNeighborhoodAttentionND"]


def _positive_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r} of type "
                        f"{type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _common_args(cls, rank, embed_dim, dim, num_heads, window_name, window):
    """The arguments every attention module checks alike: (rank, embed_dim, num_heads, the name
    the caller used for the channels -- dim= or embed_dim=, which errors repeat)."""
    if rank is None:
        rank = cls.rank
    elif cls.rank and rank != cls.rank:
        raise ValueError(f"rank={rank!r} contradicts {cls.__name__} (rank {cls.rank})")
    if rank not in (1, 2, 3):
        raise ValueError(f"rank must be 1, 2 or 3, got {rank!r}")
    channels_arg = "embed_dim"
    if dim is not None:
        if embed_dim is not None and embed_dim != dim:
            raise ValueError(f"embed_dim={embed_dim!r} and dim={dim!r} disagree; pass one")
        embed_dim, channels_arg = dim, "dim"
    if embed_dim is None:
        raise TypeError("missing required argument embed_dim (or dim)")
    if num_heads is None:
        raise TypeError("missing required argument num_heads")
    if window is None:
        raise TypeError(f"missing required argument {window_name}")
    embed_dim = _positive_int(channels_arg, embed_dim)
    num_heads = _positive_int("num_heads", num_heads)
    if embed_dim % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide {channels_arg}={embed_dim}")
    return rank, embed_dim, num_heads, channels_arg


def _common_options(head_dim, qkv_bias, rel_pos_bias, qk_scale, attn_drop, proj_drop, backend):
    """(softmax scale, attn_drop, proj_drop) after the option checks every attention module
    shares."""
    for name, value in (("qkv_bias", qkv_bias), ("rel_pos_bias", rel_pos_bias)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {value!r}")
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a str or None, got {backend!r}")
    if qk_scale is None:
        scale = head_dim ** -0.5
    else:
        if isinstance(qk_scale, bool) or not isinstance(qk_scale, numbers.Real) \
                or not math.isfinite(qk_scale) or qk_scale <= 0:
            raise ValueError(f"qk_scale must be a positive finite number or None, "
                             f"got {qk_scale!r}")
        scale = float(qk_scale)
    return scale, _probability("attn_drop", attn_drop), _probability("proj_drop", proj_drop)


def _probability(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1), got {value!r} of type "
                        f"{type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def _unfused_ops(rank: int):
    """(qk, av) of fastna.ops_unfused for this rank (heads-last legacy ops)."""
    try:
        from . import ops_unfused
    except ImportError as e:  # pragma: no cover - depends on the build of the package
        raise NotImplementedError(
            "relative positional bias / attention dropout need fastna.ops_unfused, which "
            f"could not be imported: {e}") from e
    qk = getattr(ops_unfused, f"na{rank}d_qk", None)
    av = getattr(ops_unfused, f"na{rank}d_av", None)
    if qk is None or av is None:  # pragma: no cover
        raise NotImplementedError(f"fastna.ops_unfused has no na{rank}d_qk / na{rank}d_av")
    return qk, av


def _check_context_parallel(rank, shard_axis, process_group, mode, rel_pos_bias, attn_drop):
    if shard_axis is None:
        if process_group is not None:
            raise ValueError("process_group is given without shard_axis: pass the spatial axis "
                             "the input is sharded along (shard_axis=0, ...)")
        return
    from .distributed import MODES
    from .distributed._api import check_shard_axis
    check_shard_axis(shard_axis, rank)
    if mode not in MODES:
        raise ValueError(f"context_parallel_mode must be one of {MODES}, got {mode!r}")
    if rel_pos_bias or attn_drop > 0:
        what = "rel_pos_bias=True" if rel_pos_bias else f"attn_drop={attn_drop}"
        raise ValueError(f"{what} runs the unfused ops, which have no context-parallel form; "
                         f"shard_axis={shard_axis} needs rel_pos_bias=False and attn_drop=0")


def _rpb_table(heads, kernel, factory) -> nn.Parameter:
    """A relative positional bias table [heads, 2K_1-1, ...], initialised as NATTEN's."""
    table = nn.Parameter(torch.zeros(heads, *(2 * k - 1 for k in kernel), **factory))
    if table.device.type != "meta":
        nn.init.trunc_normal_(table, std=0.02, a=-2.0, b=2.0)
    return table


class _AttentionModule(nn.Module):
    """What NeighborhoodAttentionND and the Hydra modules share around their attention call:
    the input check, the qkv projection of the input zero-padded up to the window span, and the
    output cropped back and projected."""

    rank: int = 0

    def _keep_common(self, rank, embed_dim, num_heads, is_causal, scale, backend, attn_drop):
        """The settings every attention module keeps (forward, extra_repr and users read them)."""
        self.rank = rank
        self.embed_dim = self.dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.is_causal = is_causal
        self.scale = scale
        self.backend = backend
        self.attn_drop_p = attn_drop

    def _make_output_layers(self, attn_drop, proj_drop, factory):
        # After qkv and the bias tables: seeded initialisation draws in NATTEN's order.
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(self.embed_dim, self.embed_dim, **factory)
        self.proj_drop = nn.Dropout(proj_drop)

    @property
    def uses_fused_path(self) -> bool:
        """Whether forward() currently runs fastna.neighborhood_attention (else the legacy ops)."""
        return self.rpb is None and (self.attn_drop_p == 0 or not self.training)

    def _check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != self.rank + 2 or x.shape[-1] != self.embed_dim:
            axes = ", ".join("XYZ"[:self.rank]) if self.rank > 1 else "L"
            raise ValueError(f"{type(self).__name__} expects input [B, {axes}, C={self.embed_dim}]"
                             f" ({self.rank + 2} dims), got shape {tuple(x.shape)}")

    def _project(self, x, need, keep_axis=None):
        """(q, k, v, crop) of input x: axes shorter than need[a] (the window span) are
        zero-padded at the end (not keep_axis); crop undoes it in _output."""
        self._check_input(x)
        rank = self.rank
        spatial = tuple(x.shape[1:rank + 1])
        pads = [max(0, n - L) for n, L in zip(need, spatial)]
        if keep_axis is not None:
            pads[keep_axis] = 0
        if any(pads):
            pad_arg = [0, 0]  # channels
            for p in reversed(pads):
                pad_arg += [0, p]
            x = F.pad(x, pad_arg)
        B = x.shape[0]
        padded = tuple(x.shape[1:rank + 1])
        qkv = self.qkv(x).reshape(B, *padded, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(rank + 1)
        return q, k, v, (B, padded, spatial, any(pads))

    def _output(self, out, crop):
        B, padded, spatial, was_padded = crop
        out = out.reshape(B, *padded, self.embed_dim)
        if was_padded:
            out = out[(slice(None),) + tuple(slice(0, L) for L in spatial)]
        return self.proj_drop(self.proj(out))


class NeighborhoodAttentionND(_AttentionModule):
    """Multi-head neighborhood self-attention over ``rank`` spatial axes.

    Args:
        embed_dim: channels C of the input ``[B, *spatial, C]`` (``dim=`` is accepted too).
        num_heads: number of heads; must divide embed_dim.
        kernel_size, stride, dilation: int or per-axis tuple (see docs/SEMANTICS.md sections 2-4).
        is_causal: bool or per-axis tuple.
        qkv_bias: bias of the qkv projection.
        qk_scale: softmax scale; default head_dim ** -0.5.
        attn_drop: dropout on the attention weights (training only; forces the unfused path).
        proj_drop: dropout after the output projection.
        rel_pos_bias: learn NATTEN's relative positional bias ``rpb`` ``[heads, 2K-1, ...]``
            (odd kernel sizes, non-causal, stride 1; forces the unfused path).
        backend: fastna backend for the fused path (None = best available).
        shard_axis, process_group, context_parallel_mode: context parallelism. With
            ``shard_axis`` (0-based spatial axis) the input is this rank's slab of that axis
            and attention runs through :func:`fastna.distributed.neighborhood_attention` over
            ``process_group`` (None = the world) in ``context_parallel_mode`` ("halo" or
            "ulysses"); the shard axis is not padded. Needs the fused path (no rpb, no
            attention dropout).
    """

    rank: int = 0

    def __init__(self, embed_dim: Optional[int] = None, num_heads: Optional[int] = None,
                 kernel_size=None, stride=1, dilation=1, is_causal=False, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, rel_pos_bias: bool = False, *, dim: Optional[int] = None,
                 backend: Optional[str] = None, rank: Optional[int] = None, device=None,
                 dtype=None, shard_axis: Optional[int] = None, process_group=None,
                 context_parallel_mode: str = "halo"):
        super().__init__()
        rank, embed_dim, num_heads, channels_arg = _common_args(
            type(self), rank, embed_dim, dim, num_heads, "kernel_size", kernel_size)
        kernel = per_axis_ints("kernel_size", kernel_size, rank)
        strides = per_axis_ints("stride", stride, rank)
        dil = per_axis_ints("dilation", dilation, rank)
        causal = per_axis_bools("is_causal", is_causal, rank)
        for a in range(rank):
            if kernel[a] < 2:
                raise ValueError(f"kernel_size must be >= 2 on every axis, got "
                                 f"kernel_size={kernel_size!r}")
            if dil[a] < 1:
                raise ValueError(f"dilation must be >= 1 on every axis, got dilation={dilation!r}")
            if not 1 <= strides[a] <= kernel[a]:
                raise ValueError(f"stride must satisfy 1 <= stride <= kernel_size on every axis, "
                                 f"got stride={stride!r} with kernel_size={kernel_size!r}")
        head_dim = embed_dim // num_heads
        scale, attn_drop, proj_drop = _common_options(head_dim, qkv_bias, rel_pos_bias, qk_scale,
                                                      attn_drop, proj_drop, backend)
        if rel_pos_bias:
            if any(k % 2 == 0 for k in kernel):
                raise ValueError(f"rel_pos_bias=True needs odd kernel sizes, got "
                                 f"kernel_size={kernel_size!r}")
            if any(causal):
                raise ValueError(f"rel_pos_bias=True is not defined for causal attention, got "
                                 f"is_causal={is_causal!r}")
        if (rel_pos_bias or attn_drop > 0) and any(s != 1 for s in strides):
            what = "rel_pos_bias=True" if rel_pos_bias else f"attn_drop={attn_drop}"
            raise ValueError(f"{what} runs the unfused (legacy) ops, which have no stride; got "
                             f"stride={stride!r}")
        _check_context_parallel(rank, shard_axis, process_group, context_parallel_mode,
                                rel_pos_bias, attn_drop)

        self._keep_common(rank, embed_dim, num_heads, causal, scale, backend, attn_drop)
        self.kernel_size = kernel
        self.stride = strides
        self.dilation = dil
        self.shard_axis = shard_axis
        self.process_group = process_group
        self.context_parallel_mode = context_parallel_mode

        fk = dict(device=device, dtype=dtype)
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=qkv_bias, **fk)
        if rel_pos_bias:
            self.rpb = _rpb_table(num_heads, kernel, fk)
        else:
            self.register_parameter("rpb", None)
        self._make_output_layers(attn_drop, proj_drop, fk)

    def extra_repr(self) -> str:
        return (f"rank={self.rank}, embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"head_dim={self.head_dim}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, dilation={self.dilation}, is_causal={self.is_causal}, "
                f"rel_pos_bias={self.rpb is not None}, backend={self.backend!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        need = [k * d for k, d in zip(self.kernel_size, self.dilation)]
        # a slab of the shard axis is not padded: the global length is checked by the call
        q, k, v, crop = self._project(x, need, keep_axis=self.shard_axis)
        if self.shard_axis is not None:
            from .distributed import neighborhood_attention as distributed_attention
            out = distributed_attention(q, k, v, self.kernel_size, self.stride, self.dilation,
                                        self.is_causal, self.scale, shard_axis=self.shard_axis,
                                        group=self.process_group,
                                        mode=self.context_parallel_mode, backend=self.backend)
        elif self.uses_fused_path:
            from ._api import neighborhood_attention
            out = neighborhood_attention(q, k, v, kernel_size=self.kernel_size,
                                         stride=self.stride, dilation=self.dilation,
                                         is_causal=self.is_causal, scale=self.scale,
                                         backend=self.backend)
        else:
            qk_op, av_op = _unfused_ops(self.rank)
            attn = qk_op(q * self.scale, k, self.kernel_size, self.dilation,
                         is_causal=self.is_causal, rpb=self.rpb)
            attn = self.attn_drop(attn.softmax(dim=-1))
            out = av_op(attn, v, self.kernel_size, self.dilation, is_causal=self.is_causal)
        return self._output(out, crop)

class NeighborhoodAttention1D(NeighborhoodAttentionND):
    """1D neighborhood attention on ``[B, L, C]``. See :class:`NeighborhoodAttentionND`."""
    rank = 1


class NeighborhoodAttention2D(NeighborhoodAttentionND):
    """2D neighborhood attention on ``[B, H, W, C]``. See :class:`NeighborhoodAttentionND`."""
    rank = 2


class NeighborhoodAttention3D(NeighborhoodAttentionND):
    """3D neighborhood attention on ``[B, D, H, W, C]``. See :class:`NeighborhoodAttentionND`."""
    rank = 3


# At the end: modules_hydra builds on the helpers above.
from .modules_hydra import (  # noqa: E402
    HydraNeighborhoodAttention1D, HydraNeighborhoodAttention2D, HydraNeighborhoodAttention3D,
    HydraNeighborhoodAttentionND)
