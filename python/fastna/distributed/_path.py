"""fastna.distributed.local_compute_path: what halo mode's local compute runs on one rank, as
text, without a process group (the plan is pure Python; only the tensors' shapes, dtype and
device are read)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import _args
from . import _halo, _halo_whole, _slab
from ._api import _meta, check_shard_axis
from ._plan import axis_plan

__all__ = ["local_compute_path"]


def _placeholder(t: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """A tensor like t with n rows along dim, holding no memory (only its shape is read)."""
    shape = list(t.shape)
    shape[dim] = n
    return t.new_zeros(()).expand(shape)


def _check_lengths(lengths, rank, n: int) -> None:
    if (not isinstance(lengths, (list, tuple)) or not lengths
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                       for x in lengths)):
        raise ValueError(f"lengths must be a non-empty list of every rank's slab length (ints "
                         f">= 0, rank order), got {lengths!r}")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < len(lengths):
        raise ValueError(f"rank must be an int in [0, {len(lengths)}), got {rank!r}")
    if lengths[rank] != n:
        raise ValueError(f"query holds {n} rows of the shard axis but lengths[{rank}] is "
                         f"{lengths[rank]}")


def local_compute_path(q, k, v, kernel_size, stride=1, dilation=1, is_causal=False,
                       scale: Optional[float] = None, shard_axis: int = 0,
                       lengths: Sequence[int] = (), rank: int = 0,
                       backend: Optional[str] = None) -> str:
    """What fastna.distributed.neighborhood_attention(q, k, v, ..., mode="halo",
    backend=backend) computes locally on rank `rank` of a group whose slabs along `shard_axis`
    have `lengths` (rank order; q, k, v are that rank's slabs): the offset-slab implementation
    and, per query segment (interior / border), the key rows it reads and how it runs them."""
    r = _args.normalize_rank(q, None)
    axis = check_shard_axis(shard_axis, r)
    dim = 1 + axis
    _check_lengths(lengths, rank, q.shape[dim])
    total = sum(lengths)
    params = _args.normalize(_meta(q, dim, total), _meta(k, dim, total), _meta(v, dim, total),
                             kernel_size, stride, dilation, is_causal, scale)
    impl = _slab.implementation(backend, q.device)
    plan = axis_plan(tuple(lengths), params.kernel[axis], params.stride[axis],
                     params.dilation[axis], params.causal[axis])
    s0, s1 = plan.owned(rank)
    lines = [f"halo mode, rank {rank} of {len(lengths)}: rows [{s0}, {s1}) of shard axis {axis} "
             f"(global length {total}); offset-slab implementation {impl.name!r}"
             + (" (backend=None's choice on " + q.device.type + ")" if backend is None else "")]
    if impl.whole is None:
        lines.append("  every query against its own rows while the halo flies, the border "
                     "queries against each peer's rows as they arrive, parts merged through the "
                     "logsumexp")
    if impl.whole is None:
        segments = plan.segments[rank]
        waits = "border: own rows while the halo flies, then each peer's rows"
    else:
        segments = _halo_whole.calls(_halo.HaloSetup(params, axis, plan, None, impl), rank)
        waits = "border: waits for its halo, then one call"
    for seg in segments:
        where = "interior: runs while the halo flies" if seg.local else waits
        line = f"  queries [{seg.q0}, {seg.q1}) ({where}), key rows [{seg.k0}, {seg.k1})"
        if impl.describe is not None:
            qs, ks, vs = (_placeholder(t, dim, n) for t, n in ((q, seg.q1 - seg.q0),
                                                              (k, seg.k1 - seg.k0),
                                                              (v, seg.k1 - seg.k0)))
            off = [0] * r
            koff = [0] * r
            off[axis], koff[axis] = seg.q0, seg.k0
            line += ": " + impl.describe(qs, ks, vs, params, tuple(off), tuple(koff))
        lines.append(line)
    return "\n".join(lines)
