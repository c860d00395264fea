"""Several problems in one launch: the grouped kernels (kernel table ops fused_fwd_grouped /
fused_bwd_grouped, sm80 family) -- one forward launch and three backward launches whatever the
number of problems.

A layout says how one call splits into problems: `VarlenLayout` makes one batch-1 problem per
sample of a packed variable-size batch (fastna.neighborhood_attention_varlen).  Each problem
gets its own views of the call's tensors and its own contiguous lse rows; nothing is copied per
problem.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from .. import _ext, _table
from ._base import alloc
from ._layout import fit, launch_params, on_device, packed_arg, stream, tensor_arg

FWD, BWD = "fused_fwd_grouped", "fused_bwd_grouped"
TILE = "default"


class VarlenLayout:
    """Problem i = sample i of a packed batch: rows [start, start + n) of q / k / v / out as
    [1, *shape, H, D], its lse rows [start, start + n) of the packed [total, H]."""

    def __init__(self, samples: Sequence):
        self.samples = tuple(samples)
        self.rank = self.samples[0].params.rank

    def params(self) -> List[dict]:
        return [launch_params(s.params, *s.tensors, TILE) for s in self.samples]

    def views(self, t: torch.Tensor) -> List[torch.Tensor]:
        return [t[s.start:s.start + s.tokens].view(1, *s.shape, *t.shape[1:]) for s in self.samples]

    def lse_rows(self, lse: torch.Tensor) -> List[torch.Tensor]:
        return [lse[s.start:s.start + s.tokens].view(1, s.tokens, lse.shape[-1]) for s in self.samples]


def unavailable(query, key, value, rank: int, needs_backward: bool) -> Optional[str]:
    """Why the grouped kernels cannot run problems of these tensors, or None."""
    if not query.is_cuda:
        return "the grouped kernels run on CUDA tensors"
    if query.dtype not in (torch.float16, torch.bfloat16):
        return f"the grouped kernels take float16 / bfloat16, not {query.dtype}"
    if value.shape[-1] != query.shape[-1]:
        return f"the grouped kernels need Dv == D (got D={query.shape[-1]}, Dv={value.shape[-1]})"
    for op in (FWD, BWD) if needs_backward else (FWD,):
        why = _table.unavailable("fused", op, TILE)
        if why:
            return why
        dims = _table.tiles_by_head_dim(op, rank, query.dtype, query.device)
        if query.shape[-1] not in dims:
            return (f"no {op} instance for rank {rank}, {query.dtype}, head dim "
                    f"{query.shape[-1]} (built: {sorted(dims)})")
    return None


class _Grouped(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, layout):
        q, k, v = (fit(t) for t in (q, k, v))
        pds = layout.params()
        out = alloc(q.shape, q.dtype, q.device)
        lse = alloc(q.shape[:-1], torch.float32, q.device)
        problems = [(pd, tensor_arg(qi), tensor_arg(ki), tensor_arg(vi), tensor_arg(oi), packed_arg(li))
                    for pd, qi, ki, vi, oi, li in zip(pds, layout.views(q), layout.views(k),
                                                     layout.views(v), layout.views(out),
                                                     layout.lse_rows(lse))]
        with on_device(q.device):
            _ext.load().fused_grouped_forward(problems, stream(q.device))
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.layout, ctx.pds = layout, pds
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        layout = ctx.layout
        dout = torch.zeros_like(out) if dout is None else fit(dout.to(out.dtype))
        dlse_rows = ([None] * len(ctx.pds) if dlse is None
                     else layout.lse_rows(dlse.to(torch.float32).contiguous()))
        dq = alloc(q.shape, q.dtype, q.device)
        dk = alloc(k.shape, k.dtype, k.device)
        dv = alloc(v.shape, v.dtype, v.device)
        problems = [
            (pd, tensor_arg(qi), tensor_arg(ki), tensor_arg(vi), tensor_arg(oi), tensor_arg(gi),
             packed_arg(li), None if di is None else packed_arg(di), tensor_arg(dqi),
             tensor_arg(dki), tensor_arg(dvi))
            for pd, qi, ki, vi, oi, gi, li, di, dqi, dki, dvi in zip(
                ctx.pds, layout.views(q), layout.views(k), layout.views(v), layout.views(out),
                layout.views(dout), layout.lse_rows(lse), dlse_rows, layout.views(dq),
                layout.views(dk), layout.views(dv))]
        with on_device(q.device):
            _ext.load().fused_grouped_backward(problems, stream(q.device))
        return dq, dk, dv, None


def attention(query, key, value, layout):
    """(out like query, lse fp32 like query without its head dim) of the problems `layout`
    splits the call into, through the grouped kernels."""
    return _Grouped.apply(query, key, value, layout)
