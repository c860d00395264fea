"""Backend registry: which backends exist, which are built, and which one runs a call."""
from __future__ import annotations

from typing import Dict, List

from . import fused, gemm, hopper, naive, reference
from ._base import Reason

# Every name users may pass; those without a module are planned but not built yet.
KNOWN = ("reference", "naive", "gemm", "fused", "hopper")
# Fastest first: backend=None takes the first one that supports the call.
_PRIORITY = ["hopper", "fused", "gemm", "naive", "reference"]
_MODULES: Dict[str, object] = {"reference": reference, "naive": naive, "gemm": gemm,
                               "fused": fused, "hopper": hopper}

__all__ = ["KNOWN", "Reason", "available_backends", "get", "register", "select"]


def register(module, priority: int = 0) -> None:
    """Add a backend module (name, available, check, forward; optional check_auto, a further
    condition for backend=None only); priority 0 = tried first."""
    _MODULES[module.name] = module
    if module.name in _PRIORITY:
        _PRIORITY.remove(module.name)
    _PRIORITY.insert(priority, module.name)


def unregister(name: str) -> None:
    _MODULES.pop(name, None)
    if name in _PRIORITY and name not in KNOWN:
        _PRIORITY.remove(name)


def available_backends() -> List[str]:
    return [n for n in _PRIORITY if n in _MODULES and _MODULES[n].available()]


def _known() -> List[str]:
    return list(dict.fromkeys(list(KNOWN) + list(_MODULES)))


def get(name):
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str or None, got {name!r} of type "
                        f"{type(name).__name__}")
    if name not in _known():
        raise ValueError(f"unknown backend={name!r}; known backends: {', '.join(_known())}")
    mod = _MODULES.get(name)
    if mod is None:
        raise NotImplementedError(f"backend {name!r} is not available in this build (not "
                                  f"implemented yet); available: {', '.join(available_backends())}")
    return mod


def _auto_ok(mod, *args) -> bool:
    """A backend's extra condition for automatic selection (check_auto, optional): e.g. the
    fused backend's float32, which computes in TF32, only while torch allows TF32 matmuls."""
    auto = getattr(mod, "check_auto", None)
    return auto is None or auto(*args) is None


def select(name, query, key, value, params, additional_keys=None, additional_values=None):
    """The backend module to run this call; raises if an explicitly named one cannot."""
    if name is not None:
        mod = get(name)
        reason = mod.check(query, key, value, params, additional_keys, additional_values)
        if reason is not None:
            raise (reason.error(name) if isinstance(reason, Reason)
                   else NotImplementedError(f"backend={name!r} cannot run this call: {reason}"))
        return mod
    for n in _PRIORITY:
        mod = _MODULES.get(n)
        if mod is not None and mod.available() and \
                mod.check(query, key, value, params, additional_keys, additional_values) is None \
                and _auto_ok(mod, query, key, value, params, additional_keys, additional_values):
            return mod
    return reference  # unreachable in practice: the reference takes everything
