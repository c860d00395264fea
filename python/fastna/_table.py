"""Queries over the compiled kernel table (fastna._ext.kernel_table) for one device.

The table is fixed for the process and the device's compute capability too, so each answer is
computed once per (op, rank, dtype, compute capability) and cached (fastna._ext.clear_caches
forgets them, for tests that fake the table).
"""
from __future__ import annotations

import functools
from typing import Dict, FrozenSet, Optional, Tuple

import torch

from . import _ext

# Ops of the table (the binding entry that runs an instance).
FUSED_FWD, FUSED_BWD = "fused_fwd", "fused_bwd"
NAIVE_FWD, NAIVE_BWD = "naive_fwd", "naive_bwd"
GEMM = "gemm_na"


def rows(op: str, rank: int, dtype: torch.dtype, device: torch.device) -> Tuple[dict, ...]:
    """The table rows of `op` for rank and dtype that run on `device` (() off CUDA)."""
    cc = _ext.device_cc(device)
    if cc is None:
        return ()
    return _rows(op, rank, _ext.DTYPE_NAMES.get(dtype, str(dtype)), cc)


@functools.lru_cache(maxsize=None)
def _rows(op: str, rank: int, dtype_name: str, cc: int) -> Tuple[dict, ...]:
    return tuple(r for r in _ext.kernel_table() if r["op"] == op and r["rank"] == rank
                 and r["dtype"] == dtype_name and _ext.runs_on(r, cc))


def tiles_by_head_dim(op: str, rank: int, dtype: torch.dtype,
                      device: torch.device) -> Dict[int, FrozenSet[str]]:
    """{head dim: tiles} of `op` runnable on `device` for rank and dtype."""
    found: Dict[int, set] = {}
    for r in rows(op, rank, dtype, device):
        found.setdefault(int(r["head_dim"]), set()).add(str(r["tile"]))
    return {d: frozenset(t) for d, t in found.items()}


def padded_head_dim(D: int, Dv: int, dims) -> Optional[int]:
    """The compiled head dim a kernel runs (D, Dv) at: the smallest one >= max(D, Dv)."""
    fits = [d for d in dims if d >= max(D, Dv)]
    return min(fits) if fits else None


def any_rows(op: str) -> bool:
    """Whether the build holds any instance of `op` (whatever device)."""
    return any(r["op"] == op for r in _ext.kernel_table())


def runnable_here(op: str, tile: Optional[str] = None) -> bool:
    """Whether an instance of `op` (of `tile`, when given) runs on the current CUDA device."""
    cc = _ext.device_cc()
    return cc is not None and any(
        r["op"] == op and (tile is None or r["tile"] == tile) and _ext.runs_on(r, cc)
        for r in _ext.kernel_table())


def unavailable(backend: str, op: str, tile: Optional[str] = None) -> Optional[str]:
    """Why `backend`, whose kernels are `op` instances (of `tile`, when given), cannot run on
    this machine at all -- no compiled module, none of its kernels built, no CUDA device, or
    none built for this device -- or None.  Every CUDA backend asks this first, so the same
    situation raises the same NotImplementedError whatever the backend and the tensors."""
    kind = f"{op} kernels" + (f" of tile {tile!r}" if tile else "")
    if _ext.load() is None:
        why = f"not available in this build (compiled module missing: {_ext.load_error()})"
    elif not any(r["op"] == op and (tile is None or r["tile"] == tile)
                 for r in _ext.kernel_table()):
        why = f"not available in this build (it has no {kind}; `python -m fastna info` lists them)"
    elif _ext.device_cc() is None:
        why = "not available on this machine (no CUDA device)"
    elif not runnable_here(op, tile):
        cc = _ext.device_cc()
        why = (f"not available on this machine (no {kind} built for compute capability "
               f"{cc // 10}.{cc % 10}; `python -m fastna info` lists the archs built)")
    else:
        return None
    return f"backend {backend!r} is {why}"


_ext.on_clear(_rows.cache_clear)
