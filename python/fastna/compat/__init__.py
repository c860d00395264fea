"""Compatibility layers for code written against other neighborhood-attention libraries.

`install_natten_shim()` makes `import natten` resolve to fastna's stand-in for NATTEN 0.17.4,
for code (HuggingFace transformers' DiNAT/NAT/OneFormer, SHI-Labs NAT/DiNAT and StyleNAT,
k-diffusion, ...) written against it. The shim's modules are served by:

    natten (package names), natten.context   natten_context  (switches and probes)
    natten.functional, natten.experimental    natten          (the ops)
    natten.NeighborhoodAttention{1,2,3}D,
    natten.na1d / na2d / na3d                 natten_modules  (the nn modules)
    natten.types, natten.utils[.log]          natten_args     (argument forms and rules)

Install it before importing such code: transformers decides whether natten exists once, when
`transformers.utils.import_utils` is first imported, through `importlib.util.find_spec("natten")`
and `importlib.metadata.version("natten")`; the shim answers both.

    import fastna.compat
    fastna.compat.install_natten_shim()
    from transformers import DinatModel   # now runs on fastna
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import pathlib
import re
import sys
import types
import warnings
from typing import Optional

__all__ = ["install_natten_shim", "uninstall_natten_shim", "natten_shim_installed",
           "NATTEN_SHIM_VERSION"]

# A PEP 440 local version: compares equal to 0.17.4 in release terms (so `>= 0.17` style checks
# pass) while telling anyone who prints it that this is not the real NATTEN.
NATTEN_SHIM_VERSION = "0.17.4+fastna"

_PACKAGE = "natten"
_MARK = "__fastna_shim__"
# Submodule of the shim -> (module of fastna.compat serving it, names it takes; None: its
# __all__). Packages (with submodules of their own) are listed in _SUBPACKAGES.
_SUBMODULES = {
    "functional": ("natten", None),
    "experimental": ("natten", ("na1d", "na2d", "na3d")),
    "context": ("natten_context", None),
    "types": ("natten_args", "TYPE_NAMES"),
    "utils": ("natten_args", "UTIL_NAMES"),
    "utils.log": ("natten_args", ("get_logger",)),
    "na1d": ("natten_modules", ("NeighborhoodAttention1D",)),
    "na2d": ("natten_modules", ("NeighborhoodAttention2D",)),
    "na3d": ("natten_modules", ("NeighborhoodAttention3D",)),
}
_SUBPACKAGES = ("utils",)
# What 0.17's `natten/__init__.py` holds besides its submodules.
_PACKAGE_NAMES = (("natten_context", None), ("natten_modules", None))


def _normalize_dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class _ShimDistribution(importlib.metadata.Distribution):
    """Installed-package metadata for the shim: just enough for version lookups."""

    _METADATA = (f"Metadata-Version: 2.1\nName: {_PACKAGE}\nVersion: {NATTEN_SHIM_VERSION}\n"
                 f"Summary: fastna's NATTEN 0.17 compatibility shim (fastna.compat)\n")

    def read_text(self, filename: str) -> Optional[str]:
        if filename in ("METADATA", "PKG-INFO"):
            return self._METADATA
        return None

    def locate_file(self, path) -> pathlib.Path:
        return pathlib.Path(__file__).parent / path


def _names(impl, names):
    if names is None:
        return list(impl.__all__)
    return list(getattr(impl, names)) if isinstance(names, str) else list(names)


def _copy(module: types.ModuleType, impl_name: str, names) -> None:
    impl = importlib.import_module(f"{__name__}.{impl_name}")
    exported = _names(impl, names)
    for name in exported:
        setattr(module, name, getattr(impl, name))
    module.__all__ = list(getattr(module, "__all__", [])) + exported
    module.__doc__ = module.__doc__ or impl.__doc__


def _populate_package(module: types.ModuleType) -> None:
    module.__version__ = NATTEN_SHIM_VERSION
    module.__doc__ = "fastna's stand-in for NATTEN 0.17 (see fastna.compat)."
    for impl_name, names in _PACKAGE_NAMES:
        _copy(module, impl_name, names)
    # Real NATTEN's __init__ imports its submodules, so `natten.functional`, `natten.context`
    # (which code probes with hasattr(natten, "context") to tell 0.17 from older releases),
    # ... work after a bare `import natten`. Importing binds each as an attribute.
    for sub in _SUBMODULES:
        importlib.import_module(f"{_PACKAGE}.{sub}")


class _NattenShimFinder(importlib.metadata.DistributionFinder, importlib.abc.Loader):
    """Meta-path finder/loader for `natten` and its submodules, and its package metadata."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == _PACKAGE:
            spec = importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            spec.submodule_search_locations = []
            return spec
        sub = fullname[len(_PACKAGE) + 1:] if fullname.startswith(_PACKAGE + ".") else None
        if sub in _SUBMODULES:
            spec = importlib.machinery.ModuleSpec(fullname, self, is_package=sub in _SUBPACKAGES)
            if sub in _SUBPACKAGES:
                spec.submodule_search_locations = []
            return spec
        return None

    def create_module(self, spec):
        return None  # default module creation

    def exec_module(self, module):
        setattr(module, _MARK, True)
        if module.__name__ == _PACKAGE:
            _populate_package(module)
        else:
            _copy(module, *_SUBMODULES[module.__name__[len(_PACKAGE) + 1:]])

    def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):
        name = getattr(context, "name", None)
        if name is None or _normalize_dist_name(name) == _PACKAGE:
            yield _ShimDistribution()


# One finder for the process, made at import: installing the shim only puts it on sys.meta_path.
_finder = _NattenShimFinder()


def natten_shim_installed() -> bool:
    return _finder in sys.meta_path


def install_natten_shim() -> types.ModuleType:
    """Register the fake `natten` package (module import + package metadata); idempotent.

    Returns the `natten` module. Raises RuntimeError if a real `natten` is already imported,
    since code that holds it would silently keep using it. A real natten installed on disk
    but not yet imported is shadowed while the shim is installed.
    """
    existing = sys.modules.get(_PACKAGE)
    if existing is not None and not getattr(existing, _MARK, False):
        raise RuntimeError(
            f"a real 'natten' module is already imported ({getattr(existing, '__file__', '?')}); "
            f"install_natten_shim() must run before anything imports natten")
    if _finder not in sys.meta_path:
        # First, so that the shim wins over an installed NATTEN and over path-based metadata.
        sys.meta_path.insert(0, _finder)
        importlib.invalidate_caches()
    iu = sys.modules.get("transformers.utils.import_utils")
    if iu is not None and getattr(iu, "_natten_available", True) is False:
        warnings.warn("transformers was imported before install_natten_shim(): it has already "
                      "decided that natten is unavailable, so its DiNAT/NAT models will still "
                      "refuse to run. Install the shim before importing transformers.",
                      RuntimeWarning, stacklevel=2)
    return importlib.import_module(_PACKAGE)


def uninstall_natten_shim() -> None:
    """Undo install_natten_shim(): drop the finder and the shim's modules; idempotent."""
    while _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    for name in [n for n in sys.modules if n == _PACKAGE or n.startswith(_PACKAGE + ".")]:
        if getattr(sys.modules[name], _MARK, False):
            del sys.modules[name]
    importlib.invalidate_caches()
