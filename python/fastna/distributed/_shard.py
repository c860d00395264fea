"""shard / gather: a full tensor to this rank's slab along a spatial axis, and the slabs back to
the full tensor. Tensors are [B, *spatial, ...] (attention operands [B, *spatial, H, D] or module
inputs [B, *spatial, C]): spatial axis a is tensor dim 1 + a."""
from __future__ import annotations

import numbers
from typing import Optional, Sequence

import torch

from . import _comm
from ._api import agree
from ._plan import even_lengths

__all__ = ["shard", "gather"]

_MAX_DIMS = 8


def _is_count(n) -> bool:
    return isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0


def _dim(tensor, shard_axis, what: str) -> int:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what}: tensor must be a torch.Tensor, got {type(tensor).__name__}")
    ok = isinstance(shard_axis, numbers.Integral) and not isinstance(shard_axis, bool)
    if not ok or not 0 <= shard_axis < tensor.dim() - 2:
        raise ValueError(f"{what}: shard_axis must be an int in [0, {max(tensor.dim() - 2, 0)}) "
                         f"(a spatial axis of a [B, *spatial, ...] tensor of shape "
                         f"{tuple(tensor.shape)}), got {shard_axis!r}")
    return 1 + int(shard_axis)


def shard(tensor: torch.Tensor, shard_axis: int, group=None,
          lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
    """This rank's slab of `tensor` (the full tensor, the same on every rank) along spatial axis
    `shard_axis`: rows sum(lengths[:r]) .. + lengths[r] for rank r of `group` (default: the
    world). lengths: one row count per rank (0 allowed) summing to the axis' length; default a
    near-even split (the first ranks get one row more). A view; no communication."""
    what = "fastna.distributed.shard"
    grp = _comm.resolve_group(group)
    dim = _dim(tensor, shard_axis, what)
    L = tensor.shape[dim]
    if lengths is None:
        lengths = even_lengths(L, grp.size)
    else:
        given = list(lengths) if isinstance(lengths, (list, tuple)) else None
        if given is None or len(given) != grp.size or \
                not all(_is_count(n) for n in given) or sum(given) != L:
            raise ValueError(f"{what}: lengths must hold {grp.size} non-negative ints (one per "
                             f"rank) summing to the axis' length {L}, got {lengths!r}")
        lengths = [int(n) for n in given]
    start = sum(lengths[:grp.rank])
    return tensor.narrow(dim, start, lengths[grp.rank])


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, dim, lengths, grp):
        ctx.args = (dim, lengths, grp)
        longest = max(lengths)
        shape = list(t.shape)
        shape[dim] = longest
        padded = t.new_zeros(shape)
        padded.narrow(dim, 0, t.shape[dim]).copy_(t)
        flat = _comm.all_gather_flat(padded, grp, "gather").reshape(grp.size, *shape)
        return torch.cat([flat[r].narrow(dim, 0, n) for r, n in enumerate(lengths)], dim)

    @staticmethod
    def backward(ctx, grad):
        # every rank's loss may read every slab: my slab's gradient is the sum over ranks
        dim, lengths, grp = ctx.args
        total = _comm.all_reduce_sum(grad, grp, "gather backward")
        return total.narrow(dim, sum(lengths[:grp.rank]), lengths[grp.rank]), None, None, None


def gather(tensor: torch.Tensor, shard_axis: int, group=None) -> torch.Tensor:
    """The full tensor: every rank's slab along spatial axis `shard_axis`, in rank order of
    `group` (default: the world); slabs may differ in length (exchanged). Differentiable: the
    gradient of a slab is the sum of every rank's gradient of its rows."""
    what = "fastna.distributed.gather"
    grp = _comm.resolve_group(group)
    device = tensor.device if isinstance(tensor, torch.Tensor) else torch.device("cpu")
    try:
        dim = _dim(tensor, shard_axis, what)
        if tensor.dim() > _MAX_DIMS:
            raise ValueError(f"{what}: at most {_MAX_DIMS} dims, got shape {tuple(tensor.shape)}")
        shape = [x if i != dim else -1 for i, x in enumerate(tensor.shape)]
        shape += [-2] * (_MAX_DIMS - len(shape))
        fields = [("shard_axis", shard_axis), ("number of dims", tensor.dim())]
        fields += [(f"extent of dim {i} (not gathered)", x) for i, x in enumerate(shape)]
        fields.append(("dtype itemsize", tensor.element_size()))
        length, error = tensor.shape[dim], None
    except (ValueError, TypeError) as e:
        fields, length, error = (), 0, e
    lengths = agree(length, fields, error, 2 + 3 + _MAX_DIMS, device, grp, what)
    return _Gather.apply(tensor, dim, lengths, grp)
