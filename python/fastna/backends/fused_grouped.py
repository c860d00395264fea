"""The varlen kernels (kernel table ops fused_fwd_varlen / fused_bwd_varlen, sm80 family): a
packed batch of samples of different shapes and window parameters, one launch per kernel for the
whole batch (forward: one; backward: delta preprocess, dK/dV, dQ).

fastna.neighborhood_attention_varlen runs them for backend="fused", and for backend=None where
`unavailable` finds no reason against them.  Every sample is a batch-1 problem of its own; the
binding cuts its views out of the packed tensors, so nothing is copied per sample.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from .. import _ext, _table
from ._base import alloc
from ._layout import fit, launch_params, on_device, packed_arg, stream, tensor_arg

FWD, BWD = "fused_fwd_varlen", "fused_bwd_varlen"
TILE = "default"


def unavailable(query, key, value, samples, needs_backward: bool) -> Optional[str]:
    """Why the varlen kernels cannot run this packed call, or None."""
    if not query.is_cuda:
        return "the varlen kernels run on CUDA tensors"
    if query.dtype not in (torch.float16, torch.bfloat16):
        return f"the varlen kernels take float16 / bfloat16, not {query.dtype}"
    if value.shape[-1] != query.shape[-1]:
        return f"the varlen kernels need Dv == D (got D={query.shape[-1]}, Dv={value.shape[-1]})"
    rank = samples[0].params.rank
    for op in (FWD, BWD) if needs_backward else (FWD,):
        why = _table.unavailable("fused", op, TILE)
        if why:
            return why
        dims = _table.tiles_by_head_dim(op, rank, query.dtype, query.device)
        if query.shape[-1] not in dims:
            return (f"no {op} instance for rank {rank}, {query.dtype}, head dim "
                    f"{query.shape[-1]} (built: {sorted(dims)})")
    return None


def _sample_params(samples) -> List[dict]:
    return [launch_params(s.params, *s.tensors, TILE) for s in samples]


def _offsets(samples) -> List[int]:
    return [s.start for s in samples]


class _Varlen(torch.autograd.Function):
    """out, lse = varlen forward; gradients through the varlen backward kernels."""

    @staticmethod
    def forward(ctx, q, k, v, samples):
        q, k, v = (fit(t) for t in (q, k, v))
        pds, offsets = _sample_params(samples), _offsets(samples)
        out = alloc(q.shape, q.dtype, q.device)
        lse = alloc(q.shape[:-1], torch.float32, q.device)
        with on_device(q.device):
            _ext.load().fused_varlen_forward(pds, offsets, q.shape[0], tensor_arg(q), tensor_arg(k),
                                             tensor_arg(v), tensor_arg(out), packed_arg(lse),
                                             stream(q.device))
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.pds, ctx.offsets = pds, offsets
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dout = torch.zeros_like(out) if dout is None else dout.to(out.dtype)
        # out and dout share strides in the delta preprocess: both contiguous [total, H, D].
        dout = dout.contiguous()
        out_c = out.contiguous()
        dlse = None if dlse is None else dlse.to(torch.float32).contiguous()
        dq = alloc(q.shape, q.dtype, q.device)
        dk = alloc(k.shape, k.dtype, k.device)
        dv = alloc(v.shape, v.dtype, v.device)
        with on_device(q.device):
            _ext.load().fused_varlen_backward(
                ctx.pds, ctx.offsets, q.shape[0], tensor_arg(q), tensor_arg(k), tensor_arg(v),
                tensor_arg(out_c), tensor_arg(dout), packed_arg(lse),
                None if dlse is None else packed_arg(dlse), tensor_arg(dq), tensor_arg(dk),
                tensor_arg(dv), stream(q.device))
        return dq, dk, dv, None


def attention(query, key, value, samples: Sequence):
    """(out [total, H, D], lse [total, H] fp32) of a packed call through the varlen kernels;
    `samples` from fastna._args.normalize_varlen (each sample's views and parameters)."""
    return _Varlen.apply(query, key, value, tuple(samples))
