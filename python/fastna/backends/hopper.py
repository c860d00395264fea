"""The Hopper backend: the sm90a fused forward (include/fastna/hopper: wgmma, a
warp-specialized producer streaming K/V boxes into a multi-stage ring, two consumer
warpgroups of 64 query rows each; benchmarks/NOTES_hopper.md).

It is compiled as the fused forward's tile "hopper" (cmake/templates/hopper_fwd.cu.in; only in
sm_90a builds, for the head dims in both FASTNA_HOPPER_HEAD_DIMS (cmake/FastnaGenerator.cmake:
32, 64, 128; 256 also supported by the kernel) and FASTNA_HEAD_DIMS; head dim 32 runs two CTAs
per SM with 64-key boxes, for NAT/DiNAT's small windows), so everything around the kernel
is the fused backend's: argument checks, zero-padding of head dims the build lacks and of
Dv != D, additional KV tokens merged through the lse, and the backward: the fused backward on
the saved out / lse with tile "hopper", i.e. the sm90a backward (include/fastna/hopper/
backward.hpp, cmake/templates/hopper_bwd.cu.in: wgmma + TMA dK/dV and dQ kernels, deterministic)
where it is compiled and takes the problem, else (dilation, layouts no TMA map accepts, builds
without hopper_bwd) the sm80-class backward kernels -- same results, only slower.

backend=None tries this backend first; it declines (so "fused" runs) on devices other than
compute capability 9.0, in builds without sm_90a, for head dims without a Hopper instance, and
for float32 (TypeError when asked for explicitly; backend "fused" runs float32 in TF32).
"""
from __future__ import annotations

import functools

import torch

from . import fused
from ._base import Reason

name = "hopper"
TILE = "hopper"
DTYPES = (torch.float16, torch.bfloat16)
# Query box of the Hopper kernel (include/fastna/hopper/kernel_traits.hpp DefaultQBox).
fused._QBOX[TILE] = {1: (128,), 2: (16, 8), 3: (2, 8, 8)}


def _tiles_by_dim(rank, dtype, device):
    if device.type != "cuda" or not torch.cuda.is_available():
        return {}
    return fused._device_instances(rank, dtype, device)


def available() -> bool:
    """A hopper instance in the build and a compute capability 9.0 device to run it on."""
    if not torch.cuda.is_available():
        return False
    return _available_on(torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _available_on(index: int) -> bool:
    # backend=None asks this on every call; the answer is fixed per device.
    if torch.cuda.get_device_capability(index) != (9, 0):
        return False
    return any(tile == TILE for (_, _, _, tile, _, _) in fused.instances())


def check(query, key, value, params, additional_keys=None, additional_values=None):
    why = fused.check(query, key, value, params, additional_keys, additional_values)
    if why is not None:
        return Reason(why.replace("backend 'fused'", "backend 'hopper'"), why.exc)
    if query.dtype not in DTYPES:
        # (the fused backend also takes float32, on TF32 tensor cores; this kernel does not)
        return Reason(f"it supports float16 and bfloat16, got {query.dtype} (backend='fused' "
                      f"runs float32 on TF32 tensor cores, backend='naive' in full float32)",
                      TypeError)
    tiles = _tiles_by_dim(params.rank, query.dtype, query.device)
    hopper_dims = sorted(d for d, t in tiles.items() if TILE in t)
    if not hopper_dims:
        return Reason(f"no sm90a Hopper kernel runs here for rank {params.rank}, {query.dtype} "
                      f"(needs a build with FASTNA_CUDA_ARCHS including 90a and a compute "
                      f"capability 9.0 GPU; this one is "
                      f"{torch.cuda.get_device_capability(query.device)})")
    # The head dim the fused wrapper will run at (zero-padding): it must have a Hopper tile.
    D, Dv = query.shape[-1], value.shape[-1]
    P = fused._head_dim_for(D, Dv, tiles)
    if P not in hopper_dims:
        what = f"head dim {D}" if D == Dv else f"head dims D={D}, Dv={Dv}"
        return Reason(f"{what} runs at the compiled head dim {P}, which has no Hopper kernel "
                      f"(Hopper head dims: {', '.join(map(str, hopper_dims))})")
    if not fused._grid_ok(params, tuple(query.shape[1:params.rank + 1]), TILE):
        return Reason("too many query tiles for one grid (more than 2^31 - 1 CTAs)")
    return None


def forward(query, key, value, params, additional_keys=None, additional_values=None,
            return_lse=False):
    return fused.forward(query, key, value, params, additional_keys, additional_values,
                         return_lse=return_lse, tile=TILE)
