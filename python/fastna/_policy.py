"""Which kernel runs a call: the one place that picks backend, kernel family and tile.

The policy, in order (explain() reports each step for a call):

1. Backend.  backend="name" runs that backend, or raises the reason its check() gives.
   backend=None takes the first backend in the registry order -- hopper, fused, gemm, naive,
   reference (fastna/_registry.py) -- that is available, whose check() accepts the call and
   whose check_auto(), where it has one, agrees (float32 runs on TF32 tensor cores only while
   torch.backends.cuda.matmul.allow_tf32 is True).  The reference takes every call.
2. Head dim (fused family: backends "fused" and "hopper").  The kernel runs at the smallest
   compiled head dim P >= max(D, Dv) of the kernel table; q/k/v are zero-padded to it.
3. Forward tile (fused family, op fused_fwd).
   a. A tile named by the caller (backend's forward(tile=...)) runs as named (ValueError if
      not compiled); for backend fused, FASTNA_FUSED_TILE=<tile> likewise where compiled,
      else "default".  Neither takes the small-window tile in its place.
   b. Otherwise "small", the small-window kernel (one register tile per warp's queries and
      their whole key halo), wherever can_implement("fused_fwd", tile="small") accepts the
      problem, unless FASTNA_SMALL_WINDOW=0.
   c. Otherwise the backend's own tile: "hopper" for backend hopper; for backend fused
      "q16x8_kv4x8" where it is compiled for (rank, dtype, P) (faster on large 2D windows),
      else "default".
4. Backward tile (fused family, op fused_bwd): "hopper" for backend hopper where
   can_implement("fused_bwd", tile="hopper") accepts the problem, else "default".
5. Backward strategy of the fused family (backward_mode): the fused backward kernel where
   can_implement accepts it; else, with no gradient into lse, the naive backward where a
   naive_bwd instance runs and its workspace fits half the free memory; else the reference
   recomputation.  FASTNA_FUSED_BACKWARD=fused|naive|reference forces one (falling back in
   that order where it cannot run).

Steps 1-4 depend only on shapes, dtypes, devices, requires_grad, parameters, grad mode and
the knobs above, so fastna._dispatch caches them per call signature; step 5 runs when the
backward does (it depends on the gradients asked for and on free memory).
"""
from __future__ import annotations

import math
from typing import List, Optional

from . import _ext, _registry, _table
from ._protocol import Choice, Reason  # noqa: F401  (Choice: re-exported)
from ._table import FUSED_BWD, FUSED_FWD, NAIVE_BWD
SMALL_TILE = "small"
FAST_TILE = "q16x8_kv4x8"
BACKWARD_MODES = ("fused", "naive", "reference")


# ------------------------------------------------------------------------------ 1. backend

def _auto_ok(mod, *args) -> Optional[Reason]:
    auto = getattr(mod, "check_auto", None)
    return None if auto is None else auto(*args)


def select(name, query, key, value, params, additional_keys=None, additional_values=None,
           notes: Optional[List[str]] = None):
    """The backend to run a validated call; raises if an explicitly named one cannot.
    `notes`, when given, collects why backend=None passed over the others."""
    args = (query, key, value, params, additional_keys, additional_values)
    if name is not None:
        mod = _registry.get(name)
        reason = mod.check(*args)
        if reason is not None:
            raise (reason.error(name) if isinstance(reason, Reason)
                   else NotImplementedError(f"backend={name!r} cannot run this call: {reason}"))
        return mod
    for n in _registry.order():
        mod = _registry.lookup(n)
        why = mod.check(*args) or _auto_ok(mod, *args) or (
            None if mod.available() else "not available on this machine")
        if why is None:
            return mod
        if notes is not None:
            notes.append(f"{n}: {why}")
    return _registry.lookup("reference")


# ----------------------------------------------------------------- 2.-4. fused-family tiles

def _env_tile() -> str:
    return (_ext.getenv("FASTNA_FUSED_TILE") or "").strip()


def small_window_enabled() -> bool:
    return (_ext.getenv("FASTNA_SMALL_WINDOW") or "1").strip() not in ("0", "off", "false")


def fused_tile(own_tile: str, pd: dict, compiled, explicit: Optional[str] = None,
               notes: Optional[List[str]] = None) -> str:
    """Step 3: the fused_fwd tile for launch params pd (at the padded head dim);
    `compiled`: the tiles compiled for (rank, dtype, head dim) on this device; `own_tile`:
    the backend's tile ("hopper") or None (backend fused)."""
    if explicit is not None:
        if explicit not in compiled:
            raise ValueError(f"tile={explicit!r} is not compiled for rank {len(pd['length'])}, "
                             f"{pd['dtype']}, head dim {pd['dim']} (built: "
                             f"{', '.join(sorted(compiled)) or 'none'})")
        return explicit
    env = _env_tile() if own_tile is None else ""
    if env and env != "auto":
        return env if env in compiled else "default"
    if small_window_enabled():
        why = _ext.can_implement(FUSED_FWD, {**pd, "tile": SMALL_TILE})
        if not why:
            return SMALL_TILE
        if notes is not None:
            notes.append(f"tile {SMALL_TILE!r}: {why}")
    elif notes is not None:
        notes.append(f"tile {SMALL_TILE!r}: off (FASTNA_SMALL_WINDOW=0)")
    if own_tile is not None:
        return own_tile
    if FAST_TILE in compiled:
        return FAST_TILE
    if notes is not None:
        notes.append(f"tile {FAST_TILE!r}: not compiled for this rank, dtype and head dim")
    return "default"


def backward_tile(own_tile: Optional[str], pd: dict, notes: Optional[List[str]] = None) -> str:
    """Step 4: the fused_bwd tile for launch params pd."""
    if own_tile is not None:
        why = _ext.can_implement(FUSED_BWD, {**pd, "tile": own_tile})
        if not why:
            return own_tile
        if notes is not None:
            notes.append(f"fused_bwd tile {own_tile!r}: {why}")
    return "default"


# ------------------------------------------------------------- 5. fused-family backward

def forced_backward() -> str:
    forced = (_ext.getenv("FASTNA_FUSED_BACKWARD") or "").strip().lower()
    if forced in ("", "auto"):
        return ""
    if forced not in BACKWARD_MODES:
        raise ValueError(f"FASTNA_FUSED_BACKWARD={forced!r}: expected one of "
                         f"{', '.join(BACKWARD_MODES)} or auto")
    return forced


def fused_backward_runs(pd: dict) -> bool:
    """The fused backward kernel (pd["tile"]) takes this padded problem."""
    return pd["dim"] == pd["dim_v"] and not _ext.can_implement(FUSED_BWD, pd)


def backward_mode(q, params, fused_runs: bool, need_lse_grad: bool) -> str:
    """Step 5: "fused", "naive" or "reference" for the padded q (as the kernel got it);
    fused_runs: whether the fused backward kernel takes the problem (Choice.bwd_runs)."""
    forced = forced_backward()
    if forced == "reference":
        return "reference"
    if forced in ("", "fused") and fused_runs:
        return "fused"
    if need_lse_grad or not _table.rows(NAIVE_BWD, params.rank, q.dtype, q.device):
        return "reference"
    if forced == "naive":
        return "naive"
    B, H = q.shape[0], q.shape[-2]
    N = math.prod(q.shape[1:params.rank + 1])
    workspace = 4 * B * N * H * (2 * math.prod(params.kernel) + 1)
    return "naive" if workspace <= _ext.free_memory(q.device) // 2 else "reference"


# ------------------------------------------------------------------------------ explain

def choose(name, query, key, value, params, additional_keys=None, additional_values=None,
           notes: Optional[List[str]] = None) -> Choice:
    """Steps 1-4 for a validated call."""
    mod = select(name, query, key, value, params, additional_keys, additional_values, notes)
    return mod.choose(query, key, value, params, notes)


def explain(query, key, value, params, additional_keys=None, additional_values=None,
            backend=None) -> str:
    """A few lines: which backend, kernel and tile run this call, and why not the others."""
    notes: List[str] = []
    choice = choose(backend, query, key, value, params, additional_keys, additional_values,
                    notes)
    lines = [f"runs: {choice.describe()}"]
    lines += [f"  not taken: {n}" for n in notes]
    return "\n".join(lines)
