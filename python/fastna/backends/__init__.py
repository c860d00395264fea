"""The backends: one registry (backends/_registry.py) of the attention backends and the unfused
ops' backends, each a thin module behind the protocols of backends/_protocol.py.

    reference  plain PyTorch (attention and unfused ops)
    naive      naive CUDA kernels
    gemm       GEMM-based CUDA kernels (attention and unfused ops)
    fused      sm80-class fused kernels (and the small-window tile)
    hopper     the sm90a fused forward / backward

Which one runs a call, with which kernel and tile: fastna._policy.
"""
from __future__ import annotations

from typing import List

from . import fused, gemm, gemm_unfused, hopper, naive, reference
from .. import _registry
from .._protocol import AttentionBackend, Choice, Reason, UnfusedBackend
from .._registry import KNOWN, get, register, unregister

__all__ = ["KNOWN", "AttentionBackend", "Choice", "Reason", "UnfusedBackend",
           "available_backends", "get", "register", "select", "unregister"]

for _mod in (hopper, fused, gemm, naive, reference):
    _registry.register(_mod, None)
for _impl in (gemm_unfused.GemmBackend, reference.unfused):
    _registry.register(_impl, None, kind="unfused")


def available_backends() -> List[str]:
    """Names of the attention backends that run on this build and machine, fastest first."""
    return _registry.available()


def select(name, query, key, value, params, additional_keys=None, additional_values=None):
    """The backend module that runs a validated call (fastna._policy.select)."""
    from .. import _policy
    return _policy.select(name, query, key, value, params, additional_keys, additional_values)
