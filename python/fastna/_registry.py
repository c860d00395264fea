"""The one backend registry, for fastna.neighborhood_attention ("attention") and for the
unfused ops ("unfused": na*d_qk / na*d_av): name -> implementation per kind, and one order.

The order (fastest first) is what backend=None tries; fastna._policy documents it.  Changing
the registry clears every cached dispatch plan (fastna._ext.clear_caches).
"""
from __future__ import annotations

from typing import Dict, List, Optional

from . import _ext
from ._protocol import Choice, no_aux, op_forward_via_forward

# Every name users may pass; those without an implementation are planned but not built.
KNOWN = ("reference", "naive", "gemm", "fused", "hopper")
KNOWN_UNFUSED = ("reference", "gemm")
_KNOWN = {"attention": KNOWN, "unfused": KNOWN_UNFUSED}
# backend=None's order per kind (fastest first; fastna._policy step 1).
_ORDER: Dict[str, List[str]] = {"attention": ["hopper", "fused", "gemm", "naive", "reference"],
                                "unfused": ["gemm", "reference"]}
_IMPLS: Dict[str, Dict[str, object]] = {kind: {} for kind in _ORDER}


class _Minimal:
    """An attention backend registered with only name, available(), check() and forward()
    (and optionally check_auto()): the protocol's other members take their defaults -- no
    kernel choice, not routed through the custom ops, backward by autograd of forward()."""

    via_custom_op = False
    aux_shape = staticmethod(no_aux)

    def __init__(self, impl):
        self.impl = impl
        self.name = impl.name

    def __getattr__(self, attr):          # available, check, check_auto, ...
        return getattr(self.impl, attr)

    def choose(self, query, key, value, params, notes=None):
        return Choice(self.name)

    def forward(self, query, key, value, params, additional_keys=None,
                additional_values=None, return_lse=False, choice=None):
        return self.impl.forward(query, key, value, params, additional_keys,
                                 additional_values, return_lse=return_lse)

    def op_forward(self, q, k, v, ek, ev, params):
        return op_forward_via_forward(self.forward, q, k, v, ek, ev, params)

    def op_backward(self, *args):
        return None


def register(impl, priority: Optional[int] = 0, kind: str = "attention") -> None:
    """Add (or replace) `impl` as backend impl.name of `kind`; priority 0 = tried first,
    None = keep the name's place in the order (the end for a new name)."""
    if kind not in _ORDER:
        raise ValueError(f"kind must be one of {tuple(_ORDER)}, got {kind!r}")
    if kind == "attention" and not hasattr(impl, "choose"):
        impl = _Minimal(impl)
    _IMPLS[kind][impl.name] = impl
    names = _ORDER[kind]
    if priority is None:
        if impl.name not in names:
            names.append(impl.name)
    else:
        if impl.name in names:
            names.remove(impl.name)
        names.insert(priority, impl.name)
    _ext.clear_caches()


def unregister(name: str, kind: str = "attention") -> None:
    _IMPLS[kind].pop(name, None)
    if name not in _KNOWN[kind] and name in _ORDER[kind]:
        _ORDER[kind].remove(name)
    _ext.clear_caches()


def order(kind: str = "attention") -> List[str]:
    """Names with an implementation of `kind`, in backend=None's order."""
    return [n for n in _ORDER[kind] if n in _IMPLS[kind]]


def known(kind: str = "attention") -> List[str]:
    return list(dict.fromkeys(list(_KNOWN[kind]) + list(_IMPLS[kind])))


def available(kind: str = "attention") -> List[str]:
    return [n for n in order(kind) if _IMPLS[kind][n].available()]


def lookup(name: str, kind: str = "attention"):
    """The implementation, or None when `name` has none of this kind."""
    return _IMPLS[kind].get(name)


def get(name, kind: str = "attention"):
    """The implementation of a user-named backend; raises the user-facing errors."""
    what = "" if kind == "attention" else " for the unfused ops"
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str or None, got {name!r} of type "
                        f"{type(name).__name__}")
    if name not in known(kind):
        raise ValueError(f"unknown backend={name!r}{what}; known backends: "
                         f"{', '.join(known(kind))}")
    impl = _IMPLS[kind].get(name)
    if impl is None or (kind == "unfused" and not impl.available()):
        raise NotImplementedError(f"backend {name!r}{what} is not available in this build "
                                  f"(not implemented yet); available: "
                                  f"{', '.join(available(kind))}")
    return impl
