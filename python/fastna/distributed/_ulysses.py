"""mode="ulysses": an all-to-all turns the space-sharded slabs into head-sharded full tensors
(rank r gets heads [r H/P, (r+1) H/P) of the whole spatial extent), the unchanged
fastna.neighborhood_attention runs on them (any backend), and the inverse all-to-all returns
each rank its own slab of every head. Needs H and H_kv divisible by the group size; slabs may
be uneven. The two all-to-alls are each other's adjoint, so each one's backward is the other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch

from . import _comm

__all__ = ["UlyssesSetup", "space_to_heads", "heads_to_space"]


@dataclass(frozen=True)
class UlyssesSetup:
    dim: int                     # tensor dim of the shard axis (1 + shard_axis)
    lengths: Tuple[int, ...]     # slab length of every rank
    group: _comm.Group


def _to_heads(x: torch.Tensor, s: UlyssesSetup) -> torch.Tensor:
    """[B, *local, H, D] -> [B, *global, H / P, D]."""
    P, me, dim = s.group.size, s.group.rank, s.dim
    hc = x.shape[-2] // P
    send = torch.cat([x.narrow(-2, p * hc, hc).reshape(-1) for p in range(P)])
    row = math.prod(x.shape[:dim]) * math.prod(x.shape[dim + 1:-2]) * hc * x.shape[-1]
    recv = [row * n for n in s.lengths]
    flat = _comm.all_to_all_flat(send, [row * s.lengths[me]] * P, recv, s.group, "ulysses")
    shape = list(x.shape)
    shape[-2] = hc
    pieces = []
    for n, part in zip(s.lengths, flat.split(recv)):
        shape[dim] = n
        pieces.append(part.reshape(shape))
    return torch.cat(pieces, dim)


def _to_space(y: torch.Tensor, s: UlyssesSetup) -> torch.Tensor:
    """[B, *global, H / P, D] -> [B, *local, H, D]."""
    P, me, dim = s.group.size, s.group.rank, s.dim
    starts = [sum(s.lengths[:r]) for r in range(P)]
    send = torch.cat([y.narrow(dim, a, n).reshape(-1) for a, n in zip(starts, s.lengths)])
    row = math.prod(y.shape[:dim]) * math.prod(y.shape[dim + 1:])
    flat = _comm.all_to_all_flat(send, [row * n for n in s.lengths], [row * s.lengths[me]] * P,
                                 s.group, "ulysses")
    shape = list(y.shape)
    shape[dim] = s.lengths[me]
    if not s.lengths[me]:
        shape[-2] *= P
        return y.new_zeros(shape)
    return torch.cat([part.reshape(shape) for part in flat.split(row * s.lengths[me])], -2)


class _Move(torch.autograd.Function):
    """x moved by `there` (_to_heads or _to_space); its gradient moves back by `back`."""

    @staticmethod
    def forward(ctx, x, setup, there, back):
        ctx.setup, ctx.back = setup, back
        return there(x, setup)

    @staticmethod
    def backward(ctx, grad):
        return ctx.back(grad.contiguous(), ctx.setup), None, None, None


def space_to_heads(x: torch.Tensor, setup: UlyssesSetup) -> torch.Tensor:
    return _Move.apply(x, setup, _to_heads, _to_space)


def heads_to_space(y: torch.Tensor, setup: UlyssesSetup) -> torch.Tensor:
    return _Move.apply(y, setup, _to_space, _to_heads)
