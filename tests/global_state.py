"""The process-wide state a test could change and leave behind: torch's flags, the
environment, fastna's (and the natten shim's) module attributes, and the random generators.

conftest.py snapshots it before every test and checks it after, so a leak fails the test that
caused it (naming what changed) instead of breaking an unrelated test later -- whatever pytest
version undoes (or fails to undo) a monkeypatch.  Everything is restored either way.
"""
from __future__ import annotations

import os
import random
import sys
import types

import torch

_MISSING = object()
# Environment variables torch sets itself the first time a feature is used (inductor's cache
# and triton cache dirs, lazy CUDA module loading): additions of these are not a test's leak.
_TORCH_SETS = ("TORCH", "_TORCH", "TRITON", "CUDA_MODULE_LOADING")


def _flag(obj, attr):
    return (lambda: getattr(obj, attr, _MISSING), lambda v: setattr(obj, attr, v))


def _torch_flags():
    """name -> (get, set) for every torch switch a test here might touch."""
    matmul = torch.backends.cuda.matmul
    cudnn = torch.backends.cudnn
    flags = {
        "torch.backends.cuda.matmul.allow_tf32": _flag(matmul, "allow_tf32"),
        "torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction":
            _flag(matmul, "allow_fp16_reduced_precision_reduction"),
        "torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction":
            _flag(matmul, "allow_bf16_reduced_precision_reduction"),
        "torch.backends.cudnn.allow_tf32": _flag(cudnn, "allow_tf32"),
        "torch.backends.cudnn.benchmark": _flag(cudnn, "benchmark"),
        "torch.backends.cudnn.deterministic": _flag(cudnn, "deterministic"),
        "torch.backends.cudnn.enabled": _flag(cudnn, "enabled"),
        "torch.get_float32_matmul_precision": (torch.get_float32_matmul_precision,
                                               torch.set_float32_matmul_precision),
        "torch.get_default_dtype": (torch.get_default_dtype, torch.set_default_dtype),
        "torch.are_deterministic_algorithms_enabled": (
            torch.are_deterministic_algorithms_enabled,
            lambda v: torch.use_deterministic_algorithms(v)),
        "torch.is_grad_enabled": (torch.is_grad_enabled, torch.set_grad_enabled),
        "torch.get_num_threads": (torch.get_num_threads, torch.set_num_threads),
    }
    return {k: v for k, v in flags.items() if v[0]() is not _MISSING}


def _watched_modules():
    return {name: mod for name, mod in list(sys.modules.items())
            if isinstance(mod, types.ModuleType) and
            (name.split(".")[0] in ("fastna", "natten"))}


def _is_dynamo_global(attr: str) -> bool:
    """torch.compile stores its own globals in the modules it traces (`__resume_at_84_30`,
    `__builtins_dict___29`, `__compiled_fn_3`, `___stack0`, ...) and torch._dynamo.reset()
    deletes them again on newer releases: neither is a test's leak.  Dunder names a module
    defines itself (`__all__`, `__doc__`) end in a double underscore; dynamo's never do."""
    return attr.startswith("__") and not attr.endswith("__")


def _short(value) -> str:
    return "unset" if value is _MISSING else f"{type(value).__name__} {value!r}"[:80]


class Snapshot:
    def __init__(self):
        self.flags = {name: get() for name, (get, _) in _torch_flags().items()}
        self.environ = dict(os.environ)
        self.modules = {name: dict(vars(mod)) for name, mod in _watched_modules().items()}
        self.meta_path = list(sys.meta_path)
        self.rng = (torch.get_rng_state(), random.getstate())

    def restore(self) -> list:
        """Put everything back; return a description of each leak found (RNG excluded:
        seeding is how tests make their inputs, and restoring it keeps them independent)."""
        leaks = []
        for name, (get, set_) in _torch_flags().items():
            old = self.flags.get(name, _MISSING)
            if old is not _MISSING and get() != old:
                leaks.append(f"{name}: {old!r} -> {get()!r}")
                set_(old)
        changed = sorted(k for k in set(os.environ) | set(self.environ)
                         if os.environ.get(k) != self.environ.get(k) and
                         k != "PYTEST_CURRENT_TEST" and          # pytest's own bookkeeping
                         not (k not in self.environ and k.startswith(_TORCH_SETS)))
        if changed:
            leaks.append(f"os.environ: {', '.join(changed)}")
            for k in changed:
                if k in self.environ:
                    os.environ[k] = self.environ[k]
                else:
                    del os.environ[k]
        for name, mod in _watched_modules().items():
            before = self.modules.get(name)
            if before is None:
                continue          # imported during the test: nothing to compare with
            now = vars(mod)
            for attr in set(now) | set(before):
                old, new = before.get(attr, _MISSING), now.get(attr, _MISSING)
                if old is new or _is_dynamo_global(attr):
                    continue
                if old is _MISSING:
                    # Added names are not checked: torch.compile stores its own globals in
                    # the modules it traces (guards' constants, resume functions), and
                    # importing a submodule adds it to its package.  A test's leak is a
                    # replaced or removed name.
                    continue
                leaks.append(f"{name}.{attr} ({_short(old)} -> {_short(new)})")
                setattr(mod, attr, old)
        if sys.meta_path != self.meta_path:          # import hooks (the natten shim's)
            leaks.append(f"sys.meta_path: {[type(f).__name__ for f in self.meta_path]} -> "
                         f"{[type(f).__name__ for f in sys.meta_path]}")
            sys.meta_path[:] = self.meta_path
        torch.set_rng_state(self.rng[0])
        random.setstate(self.rng[1])
        return leaks
