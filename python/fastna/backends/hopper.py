"""Backend "hopper": the sm90a fused forward (include/fastna/hopper: wgmma, a warp-specialized
producer streaming K/V boxes into a multi-stage ring, two consumer warpgroups), compiled as
tile "hopper" of op fused_fwd, with the sm90a backward as tile "hopper" of fused_bwd.

Everything around the kernel is the fused family's (backends/_fused_family.py): head-dim
padding, Dv != D, additional KV tokens, layouts; tile and backward choice: fastna._policy (the
small-window tile where it takes the problem, else "hopper"; backward "hopper" where it takes
the problem, else the sm80-class "default" -- same results, only slower).

backend=None tries this backend first; it declines (so "fused" runs) where no "hopper" tile
runs on the device (compute capability 9.0 with an sm_90a build), for head dims without a
Hopper instance, and for float32 (backend "fused" runs float32 in TF32).
"""
from __future__ import annotations

import torch

from .. import _table
from . import _fused_family
from ._base import Reason

name = "hopper"
via_custom_op = True
TILE = "hopper"
DTYPES = (torch.float16, torch.bfloat16)


def available() -> bool:
    """A "hopper" fused_fwd instance that runs on the current CUDA device."""
    return _table.runnable_here(_fused_family.FWD, TILE)


def check(query, key, value, params, additional_keys=None, additional_values=None):
    why = _fused_family.unavailable(name, TILE)
    if why is not None:
        return why
    if query.dtype not in DTYPES:
        # (the fused backend also takes float32, on TF32 tensor cores; this kernel does not)
        return Reason(f"it supports float16 and bfloat16, got {query.dtype} (backend='fused' "
                      f"runs float32 on TF32 tensor cores, backend='naive' in full float32)",
                      TypeError)
    dims = _fused_family.head_dims(query, params)
    hopper_dims = sorted(d for d, tiles in dims.items() if TILE in tiles)
    if not hopper_dims and query.device.type == "cuda":
        return Reason(f"no sm90a Hopper kernel runs here for rank {params.rank}, {query.dtype} "
                      f"(needs a build with FASTNA_CUDA_ARCHS including 90a and a compute "
                      f"capability 9.0 GPU)")
    D, Dv = query.shape[-1], value.shape[-1]
    P = _table.padded_head_dim(D, Dv, dims)
    if P is not None and P not in hopper_dims:
        what = f"head dim {D}" if D == Dv else f"head dims D={D}, Dv={Dv}"
        return Reason(f"{what} runs at the compiled head dim {P}, which has no Hopper kernel "
                      f"(Hopper head dims: {', '.join(map(str, hopper_dims)) or 'none'})")
    return _fused_family.check(TILE, query, key, value, params)


_members = _fused_family.Members(name, TILE)
choose, forward = _members.choose, _members.forward
op_forward, aux_shape, op_backward = _members.op_forward, _members.aux_shape, _members.op_backward
