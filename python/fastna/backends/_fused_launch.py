"""The calls of fastna._C's fused kernels: the only place the fused family touches the module
(CPU tests replace forward() and backward() here with the reference)."""
from __future__ import annotations

import torch

from .. import _ext
from ._base import alloc
from ._layout import fit, on_device, packed_arg, stream, tensor_arg


def forward(q, k, v, params, pd):
    """One fused forward launch: (out [B, *S, H, P] in q.dtype, lse [B, *S, H] fp32).

    q/k/v are padded to the head dim P the tile runs at and meet _layout.aligned(); pd from
    _layout.launch_params, its "tile" the one the policy picked."""
    C = _ext.load()
    out = alloc(q.shape[:-1] + (v.shape[-1],), q.dtype, q.device)
    lse = alloc(q.shape[:-1], torch.float32, q.device)
    with on_device(q.device):
        C.fused_forward(pd, tensor_arg(q), tensor_arg(k), tensor_arg(v), tensor_arg(out),
                        (lse.data_ptr(), list(lse.stride())), stream(q.device))
    return out, lse


def backward(q, k, v, out, lse, pd, dout, dlse):
    """One fused backward launch: (dq, dk, dv) shaped like q, k, v.

    q/k/v/out at the padded head dim P; dout (None = zeros) like out; lse the forward's fp32
    [B, *S, H]; dlse None or like lse; pd["tile"] the fused_bwd tile."""
    C = _ext.load()
    dout = torch.zeros_like(out) if dout is None else fit(dout.to(out.dtype))
    lse = lse.to(torch.float32).contiguous()
    if dlse is not None:
        dlse = dlse.to(torch.float32).contiguous()
    dq = alloc(q.shape, q.dtype, q.device)
    dk = alloc(k.shape, k.dtype, k.device)
    dv = alloc(v.shape, v.dtype, v.device)
    delta = alloc(lse.shape, torch.float32, q.device)
    with on_device(q.device):
        C.fused_backward(pd, tensor_arg(q), tensor_arg(k), tensor_arg(v), tensor_arg(out),
                         tensor_arg(dout), packed_arg(lse),
                         None if dlse is None else packed_arg(dlse), tensor_arg(dq),
                         tensor_arg(dk), tensor_arg(dv), stream(q.device),
                         workspace=packed_arg(delta))
    return dq, dk, dv

