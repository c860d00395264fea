"""Access to the compiled module fastna._C, which may be absent (pure-Python use)."""
from __future__ import annotations

import functools
from typing import Optional

import torch

DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
# build_info() may spell dtypes the short way; accept both.
_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16",
            "float": "float32"}


@functools.lru_cache(maxsize=None)
def load():
    """The compiled module, or None when it is not built/importable."""
    try:
        from . import _C  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _C


def load_error() -> Optional[str]:
    try:
        from . import _C  # type: ignore[attr-defined]  # noqa: F401
    except ImportError as e:
        return str(e)
    return None


@functools.lru_cache(maxsize=None)
def build_info() -> Optional[dict]:
    C = load()
    return None if C is None else dict(C.build_info())


@functools.lru_cache(maxsize=None)
def _kernel_table() -> tuple:
    C = load()
    return () if C is None else tuple(C.kernel_table())


def kernel_table() -> list:
    """The compiled kernel instances (fastna._C.kernel_table(): one dict per instance with op,
    family, tile, rank, dtype, head_dim, arch, sm, qbox, kvbox, supports); [] without a module."""
    return list(_kernel_table())


def can_implement(op: str, params: dict) -> str:
    """"" when the compiled instance `params` names (params["tile"], rank, dtype, head dim, this
    device) can run the problem, else the reason (fastna._C.can_implement; a params dict the
    module rejects, e.g. a dtype it has no kernels for, is a reason too)."""
    C = load()
    if C is None:
        return f"compiled module missing: {load_error()}"
    try:
        return C.can_implement(op, params)
    except ValueError as e:
        return str(e)


def _dtype_name(name: str) -> str:
    name = str(name).lower().replace("torch.", "")
    return _ALIASES.get(name, name)


def instances(kernel: str):
    """(rank, dtype name, sm) triples compiled for `kernel`."""
    info = build_info()
    if not info or not info.get("cuda"):
        return []
    return [(int(r), _dtype_name(dt), int(sm)) for (kn, r, dt, sm) in info.get("instances", [])
            if kn == kernel]


def has_kernel(kernel: str) -> bool:
    return bool(instances(kernel))


def has_instance(kernel: str, rank: int, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether a `kernel` instance can run rank/dtype on `device` (largest sm <= device cc)."""
    name = DTYPE_NAMES.get(dtype)
    if name is None or device.type != "cuda":
        return False
    major, minor = torch.cuda.get_device_capability(device)
    cc = major * 10 + minor
    return any(r == rank and dt == name and sm <= cc for r, dt, sm in instances(kernel))
