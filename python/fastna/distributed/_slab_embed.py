"""Slab implementation "embedded": the offset-slab contract (fastna.distributed._slab) on fastna's
own kernels, without a new kernel. Where every query of the slab has its whole neighborhood in
the kv slab, the problem is an ordinary neighborhood attention on a tensor holding global rows
[e0, e1) of each axis (fastna.distributed._embed says which rows, and checks that their windows
are the global ones): the query rows go to their rows in it, the kv slab to its rows, zeros
fill the rest; fastna.neighborhood_attention(return_lse=True, backend=None) runs it, and the
query rows of its output and logsumexp are the answer. The filler query rows are computed and
dropped (the cost: E - n query rows per axis for n queries); in the backward their output
gradient is zero, so they add nothing to dK / dV. The gradients are autograd's through that
call, so forward and backward are those of the kernels fastna already proves.

Where no embedding exists -- a neighborhood cut by the kv slab (partial parts) -- the reference
runs. backend=None takes this implementation on CUDA tensors; on the CPU it runs when named
(backend="embedded"), which is how the CPU tests run the code CUDA takes.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .._api import explain as _explain
from .._api import neighborhood_attention as _attention
from .._args import NAParams
from . import _embed, _slab

__all__ = ["NAME", "attention", "forward", "backward", "whole", "describe"]

NAME = "embedded"
Boxes = Tuple[Tuple[int, int], ...]


def _spatial(t: torch.Tensor, rank: int) -> Tuple[int, ...]:
    return tuple(t.shape[1:rank + 1])


def _boxes(q, k, params: NAParams, q_offset, kv_offset) -> Optional[Boxes]:
    rank = params.rank
    if q.numel() == 0 or k.numel() == 0:
        return None
    return _embed.embedding(params, q_offset, _spatial(q, rank), kv_offset, _spatial(k, rank))


def _pad(t: torch.Tensor, offset: Sequence[int], boxes: Boxes) -> torch.Tensor:
    """t (rows [offset, offset + n) of each axis) zero-padded to rows [e0, e1)."""
    rank = len(boxes)
    amounts = []
    for a in reversed(range(rank)):
        e0, e1 = boxes[a]
        amounts += [offset[a] - e0, e1 - offset[a] - t.shape[1 + a]]
    if not any(amounts):
        return t
    return F.pad(t, [0, 0, 0, 0] + amounts)


def _crop(t: torch.Tensor, offset: Sequence[int], shape: Sequence[int], boxes: Boxes):
    for a, (e0, _) in enumerate(boxes):
        t = t.narrow(1 + a, offset[a] - e0, shape[a])
    return t


def attention(q, k, v, params: NAParams, q_offset, kv_offset, boxes: Boxes):
    """(out, lse) of the query slab through the ordinary problem on rows `boxes`;
    differentiable in q, k, v (lse is not meant to be)."""
    qe, ke, ve = _pad(q, q_offset, boxes), _pad(k, kv_offset, boxes), _pad(v, kv_offset, boxes)
    # halo mode computes in its inputs' dtype whatever the implementation (no autocast)
    with torch.autocast(q.device.type, enabled=False):
        out, lse = _attention(qe, ke, ve, params.kernel, params.stride, params.dilation,
                              params.causal, params.scale, return_lse=True)
    shape = _spatial(q, params.rank)
    return _crop(out, q_offset, shape, boxes), _crop(lse, q_offset, shape, boxes)


def forward(q, k, v, params: NAParams, q_offset, kv_offset, partial: bool = False):
    """The contract's forward: embedded where every neighborhood lies in the kv slab (partial
    or not), the reference otherwise (which also raises for partial=False)."""
    _slab.check_slabs(q, k, v, params, q_offset, kv_offset)
    boxes = _boxes(q, k, params, q_offset, kv_offset)
    if boxes is None:
        return _slab.reference_forward(q, k, v, params, q_offset, kv_offset, partial)
    with torch.no_grad():
        return attention(q, k, v, params, q_offset, kv_offset, boxes)


def backward(dout, q, k, v, out, lse, params: NAParams, q_offset, kv_offset):
    """The contract's backward. Embedded (the forward recomputed under autograd; the given out
    and lse are then this call's own, as the kv slab holds every neighbor), else the
    reference's."""
    _slab.check_slabs(q, k, v, params, q_offset, kv_offset)
    boxes = _boxes(q, k, params, q_offset, kv_offset)
    if boxes is None:
        return _slab.reference_backward(dout, q, k, v, out, lse, params, q_offset, kv_offset)
    return _GraphPart(q, k, v, params, q_offset, kv_offset, boxes, True).grads(dout)


class _GraphPart:
    """The embedded call, its autograd graph kept (keep_graph) for grads()."""

    def __init__(self, q, k, v, params, q_offset, kv_offset, boxes, keep_graph: bool):
        with torch.set_grad_enabled(keep_graph):
            self.leaves = tuple(t.detach().requires_grad_(keep_graph) for t in (q, k, v))
            out, lse = attention(*self.leaves, params, q_offset, kv_offset, boxes)
        self.graph_out = out
        self.out, self.lse = out.detach(), lse.detach()
        self.boxes = boxes

    def grads(self, dout):
        return torch.autograd.grad(self.graph_out, self.leaves, dout)


class _ReferencePart:
    def __init__(self, q, k, v, params, q_offset, kv_offset):
        self.args = (q, k, v)
        self.where = (params, q_offset, kv_offset)
        self.out, self.lse = _slab.reference_forward(q, k, v, params, q_offset, kv_offset)
        self.boxes = None

    def grads(self, dout):
        return _slab.reference_backward(dout, *self.args, self.out, self.lse, *self.where)


def whole(q, k, v, params: NAParams, q_offset, kv_offset, keep_graph: bool):
    """A query slab whose neighborhoods all lie in its kv slab: a part (out, lse, grads(dout)),
    embedded where an embedding exists, the reference otherwise."""
    boxes = _boxes(q, k, params, q_offset, kv_offset)
    if boxes is None:
        return _ReferencePart(q, k, v, params, q_offset, kv_offset)
    return _GraphPart(q, k, v, params, q_offset, kv_offset, boxes, keep_graph)


def _placeholder(t: torch.Tensor, rows: Sequence[Tuple[int, int]]) -> torch.Tensor:
    shape = list(t.shape)
    for a, (e0, e1) in enumerate(rows):
        shape[1 + a] = e1 - e0
    return t.new_zeros(()).expand(shape)


def describe(q, k, v, params: NAParams, q_offset, kv_offset) -> str:
    """What `whole` runs for these slabs (only their shapes, dtype and device are read)."""
    boxes = _boxes(q, k, params, q_offset, kv_offset)
    if boxes is None:
        return ("reference (pure PyTorch): no ordinary problem reproduces these queries' global "
                "windows")
    nq = math.prod(_spatial(q, params.rank))
    ne = math.prod(e1 - e0 for e0, e1 in boxes)
    qe, ke, ve = (_placeholder(t, boxes) for t in (q, k, v))
    runs = _explain(qe, ke, ve, params.kernel, params.stride, params.dilation, params.causal,
                    params.scale, return_lse=True).splitlines()[0].removeprefix("runs: ")
    rows = ", ".join(f"[{e0}, {e1})" for e0, e1 in boxes)
    return (f"embedded: fastna.neighborhood_attention on global rows {rows} ({ne} query "
            f"positions for {nq} queries, {ne - nq} computed and dropped), {runs}")


_slab.register(NAME, lambda device: True, forward, backward, first=True,
               default=lambda device: device.type == "cuda", whole=whole, describe=describe)
