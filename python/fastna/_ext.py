"""Access to the compiled module fastna._C, which may be absent (pure-Python use).

Everything Python knows about the compiled kernels comes from two calls of the module:
kernel_table() (one row per compiled instance: op, family, tile, rank, dtype, head dim, arch,
query / KV boxes, supports) and can_implement(op, params) ("" or the reason the named instance
cannot run a problem).  Python keeps no second copy of tile shapes, head-dim lists or limits.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, List, Optional

import torch

DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
NO_KERNELS = "no CUDA kernels in this build"

# Caches derived from the table or the device (dispatch plans, runnable rows): cleared together
# by clear_caches(), which tests call after faking the table.
_CLEAR_HOOKS: List[Callable[[], None]] = []


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
def _table() -> tuple:
    C = load()
    if C is None or not hasattr(C, "kernel_table"):
        return ()
    return tuple(dict(row) for row in C.kernel_table())


def kernel_table() -> list:
    """One dict per compiled kernel instance ([] without the module or in a host-only build)."""
    return list(_table())


def can_implement(op: str, params: dict) -> str:
    """"" when the instance that params names (op, params["tile"], rank, dtype, head dim, the
    current device) can run the problem, else a one-line reason."""
    C = load()
    if C is None or not hasattr(C, "can_implement"):
        return NO_KERNELS
    try:
        return str(C.can_implement(op, params))
    except ValueError as e:  # params no instance could take (e.g. an empty batch): the reason
        return str(e)


def runs_on(row: dict, cc: int) -> bool:
    """Whether a table row's instance runs on compute capability cc: an "a"/"f" arch (90a)
    only on exactly its sm, others on every later one."""
    return row["sm"] == cc if str(row["arch"])[-1:] in ("a", "f") else row["sm"] <= cc


def device_cc(device: Optional[torch.device] = None) -> Optional[int]:
    """Compute capability (major * 10 + minor) of a CUDA device (None: the current one), or
    None for other devices and machines without CUDA."""
    if device is not None and device.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device() if device is None or device.index is None \
        else device.index
    return _cc_at(index)


@functools.lru_cache(maxsize=None)
def _cc_at(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return major * 10 + minor


def free_memory(device: torch.device) -> int:
    """Free bytes on a CUDA device (for workspace-size decisions)."""
    return torch.cuda.mem_get_info(device)[0]


# os.environ.get costs about a microsecond per call (it encodes the key); the mapping behind
# os.environ answers in nanoseconds and every os.environ assignment keeps it up to date.  The
# per-call path reads its knobs through getenv().
try:
    _ENV, _encode_key = os.environ._data, os.environ.encodekey
    _decode = os.environ.decodevalue
except AttributeError:  # pragma: no cover - another os.environ implementation
    _ENV, _encode_key, _decode = os.environ, str, str
_ENV_KEYS: dict = {}


def getenv(name: str) -> Optional[str]:
    """os.environ.get(name), fast."""
    key = _ENV_KEYS.get(name)
    if key is None:
        key = _ENV_KEYS[name] = _encode_key(name)
    value = _ENV.get(key)
    return None if value is None else _decode(value)


def on_clear(hook: Callable[[], None]) -> Callable[[], None]:
    """Register a cache to clear with clear_caches(); returns the hook."""
    _CLEAR_HOOKS.append(hook)
    return hook


def clear_caches() -> None:
    """Forget everything derived from the table, the device or the backend registry."""
    _table.cache_clear()
    for hook in _CLEAR_HOOKS:
        hook()
