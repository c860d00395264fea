"""The calls of fastna._C's fused kernels: the only place the fused family touches the module
(CPU tests replace forward() and backward() here with the reference)."""
from __future__ import annotations

import torch

from .. import _ext
from ._base import alloc
from ._layout import fit, on_device, packed_arg, stream, tensor_arg

# fastna._C.FusedPlan per launch params dict: the instance is resolved and checked once per
# call signature (the dicts live in the cached dispatch plans, fastna._dispatch), so a launch
# pays only for its tensor arguments.  Keyed by id(pd); the value holds pd, so the id cannot be
# reused while the entry exists.
_MAX_PLANS = 4096
_plans: dict = {}
_ext.on_clear(_plans.clear)


def _plan(op, pd):
    hit = _plans.get(id(pd))
    if hit is not None and hit[0] is pd:
        return hit[1]
    plan = _ext.load().fused_plan(op, pd)
    if len(_plans) >= _MAX_PLANS:
        _plans.clear()
    _plans[id(pd)] = (pd, plan)
    return plan


def forward(q, k, v, params, pd):
    """One fused forward launch: (out [B, *S, H, P] in q.dtype, lse [B, *S, H] fp32).

    q/k/v are padded to the head dim P the tile runs at and meet _layout.aligned(); pd from
    _layout.launch_params, its "tile" the one the policy picked."""
    out = alloc(q.shape[:-1] + (v.shape[-1],), q.dtype, q.device)
    lse = alloc(q.shape[:-1], torch.float32, q.device)
    with on_device(q.device):
        _plan("fused_fwd", pd).forward(tensor_arg(q), tensor_arg(k), tensor_arg(v),
                                       tensor_arg(out), packed_arg(lse), stream(q.device))
    return out, lse


def backward(q, k, v, out, lse, pd, dout, dlse):
    """One fused backward launch: (dq, dk, dv) shaped like q, k, v.

    q/k/v/out at the padded head dim P; dout (None = zeros) like out; lse the forward's fp32
    [B, *S, H]; dlse None or like lse; pd["tile"] the fused_bwd tile."""
    dout = torch.zeros_like(out) if dout is None else fit(dout.to(out.dtype))
    lse = lse.to(torch.float32).contiguous()
    if dlse is not None:
        dlse = dlse.to(torch.float32).contiguous()
    dq = alloc(q.shape, q.dtype, q.device)
    dk = alloc(k.shape, k.dtype, k.device)
    dv = alloc(v.shape, v.dtype, v.device)
    delta = alloc(lse.shape, torch.float32, q.device)
    with on_device(q.device):
        _plan("fused_bwd", pd).backward(
            tensor_arg(q), tensor_arg(k), tensor_arg(v), tensor_arg(out), tensor_arg(dout),
            packed_arg(lse), None if dlse is None else packed_arg(dlse), tensor_arg(dq),
            tensor_arg(dk), tensor_arg(dv), stream(q.device), workspace=packed_arg(delta))
    return dq, dk, dv

