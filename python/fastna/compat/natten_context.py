"""NATTEN 0.17's module-level switches and capability probes (`natten.*`, `natten.context`).

Every name keeps 0.17.4's signature, default, validation and rejections (the deterministic
mode refuses the auto-tuner and KV parallelism with RuntimeError; a bad memory preference
is a ValueError). What each switch does here:

- use_fused_na / use_fna: honoured. The compat nn modules (NeighborhoodAttention1D/2D/3D)
  then take the fused path (na*d, which runs fastna.neighborhood_attention), as 0.17's did.
  The functional ops never read it, as in 0.17.
- use_gemm_na: honoured. Off, the unfused compat ops run fastna's reference (pure PyTorch)
  backend instead of letting fastna pick its CUDA GEMM kernels.
- use_tf32_in_gemm_na: honoured through torch's own switch,
  torch.backends.cuda.matmul.allow_tf32, which is what decides whether fastna's GEMM and fused
  kernels may compute float32 in TF32. Reading it reads torch's switch; so the default is
  torch's (off), where 0.17's GEMM kernels defaulted to TF32.
- use_autotuner, use_kv_parallelism_in_fused_na, set_memory_usage_preference,
  use_deterministic_algorithms, use_tiled_na: recorded and reported back, no effect on the
  numbers: fastna picks its kernels, tiles and backward parallelism itself and has no
  auto-tuner. fastna's kernels do not read NATTEN's deterministic flag.

The probes answer for fastna: has_cuda() is whether torch sees a CUDA device (every fastna
build runs CUDA tensors, through kernels or the reference backend); has_gemm() whether fastna's
GEMM-based unfused kernels are built and usable; has_fna() / has_fused_na() whether a fused
kernel backend ("fused" or "hopper") is; half and bfloat16 follow 0.17's compute-capability
rules (any device / 8.0+).
"""
from __future__ import annotations

import dataclasses
import logging
from enum import Enum
from typing import Optional

import torch

__all__ = [
    "use_fused_na", "use_fna", "is_fused_na_enabled", "is_fna_enabled",
    "use_kv_parallelism_in_fused_na", "is_kv_parallelism_in_fused_na_enabled",
    "use_deterministic_algorithms", "are_deterministic_algorithms_enabled",
    "MemoryUsagePreference", "set_memory_usage_preference", "get_memory_usage_preference",
    "is_memory_usage_default", "is_memory_usage_strict", "is_memory_usage_unrestricted",
    "use_autotuner", "disable_autotuner", "is_autotuner_enabled",
    "is_autotuner_enabled_for_forward", "is_autotuner_enabled_for_backward",
    "is_autotuner_thorough_for_forward", "is_autotuner_thorough_for_backward",
    "has_cuda", "has_half", "has_bfloat", "has_gemm", "has_fna", "has_fused_na",
    "has_tf32_gemm", "has_fp32_gemm", "has_fp64_gemm",
    "use_tf32_in_gemm_na", "is_tf32_in_gemm_na_enabled", "use_tiled_na", "is_tiled_na_enabled",
    "use_gemm_na", "is_gemm_na_enabled",
    "enable_tf32", "disable_tf32", "enable_gemm_na", "disable_gemm_na", "enable_tiled_na",
    "disable_tiled_na",
]

logger = logging.getLogger("natten.context")


class MemoryUsagePreference(Enum):
    Default = 0
    Strict = 1
    Unrestricted = 2


@dataclasses.dataclass
class NattenState:
    """Every switch's value; 0.17.4's defaults (its libnatten had GEMM and tiled kernels on;
    KV parallelism is on by default since 0.17.2)."""
    fused_na: bool = False
    kv_parallel: bool = True
    deterministic: bool = False
    memory_preference: MemoryUsagePreference = MemoryUsagePreference.Default
    autotune_forward: bool = False
    autotune_backward: bool = False
    thorough_forward: bool = False
    thorough_backward: bool = False
    warmup_steps_forward: int = 5
    warmup_steps_backward: int = 5
    steps_forward: int = 5
    steps_backward: int = 5
    gemm_na: bool = True
    tiled_na: bool = True


STATE = NattenState()


def snapshot() -> NattenState:
    """A copy of every switch (torch's TF32 flag excluded), for restore()."""
    return dataclasses.replace(STATE)


def restore(saved: NattenState) -> None:
    for field in dataclasses.fields(NattenState):
        setattr(STATE, field.name, getattr(saved, field.name))


def reset() -> None:
    restore(NattenState())


# ------------------------------------------------------------------------- fused NA switches

def use_kv_parallelism_in_fused_na(mode: bool = True):
    if not mode:
        STATE.kv_parallel = False
        return
    if torch.are_deterministic_algorithms_enabled():
        logger.warning("KV parallelism in fused NA is non-deterministic and PyTorch's "
                       "deterministic mode is on: ignoring use_kv_parallelism_in_fused_na")
        return
    if STATE.deterministic:
        raise RuntimeError("NATTEN's deterministic mode is on (use_deterministic_algorithms); "
                           "KV parallelism in fused NA is non-deterministic and cannot be "
                           "enabled with it")
    STATE.kv_parallel = True


def is_kv_parallelism_in_fused_na_enabled() -> bool:
    return STATE.kv_parallel


def use_fused_na(mode: bool = True, kv_parallel: bool = True):
    if not mode:
        STATE.fused_na = False
        use_kv_parallelism_in_fused_na(False)
        return
    use_kv_parallelism_in_fused_na(kv_parallel)
    STATE.fused_na = True


def is_fused_na_enabled() -> bool:
    return STATE.fused_na


use_fna = use_fused_na
is_fna_enabled = is_fused_na_enabled


def use_deterministic_algorithms(mode: bool = True):
    STATE.deterministic = bool(mode)
    if mode:
        logger.warning("NATTEN's deterministic mode refuses the auto-tuner and KV parallelism; "
                       "fastna's kernels do not read this flag")


def are_deterministic_algorithms_enabled() -> bool:
    return STATE.deterministic


# --------------------------------------------------------------------------- memory preference

_PREFERENCES = {"default": MemoryUsagePreference.Default,
                "strict": MemoryUsagePreference.Strict,
                "unrestricted": MemoryUsagePreference.Unrestricted}


def set_memory_usage_preference(pref: str = "default"):
    if pref not in _PREFERENCES:
        raise ValueError(f"set_memory_usage_preference: pref={pref!r}; allowed: 'default', "
                         f"'strict', 'unrestricted'")
    STATE.memory_preference = _PREFERENCES[pref]


def get_memory_usage_preference() -> MemoryUsagePreference:
    return STATE.memory_preference


def is_memory_usage_default() -> bool:
    return STATE.memory_preference == MemoryUsagePreference.Default


def is_memory_usage_strict() -> bool:
    return STATE.memory_preference == MemoryUsagePreference.Strict


def is_memory_usage_unrestricted() -> bool:
    return STATE.memory_preference == MemoryUsagePreference.Unrestricted


# --------------------------------------------------------------------------------- auto-tuner

def _set_flag(field: str, name: str, value, kind: type, refuse_if_deterministic: bool = False):
    if value is None:
        return
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"use_autotuner: {name} must be {kind.__name__} or None, got "
                         f"{value!r} of type {type(value).__name__}")
    if refuse_if_deterministic and value and STATE.deterministic:
        raise RuntimeError(f"NATTEN's deterministic mode is on (use_deterministic_algorithms); "
                           f"the auto-tuner ({name}) is non-deterministic and cannot be enabled")
    setattr(STATE, field, value)


def use_autotuner(forward_pass: Optional[bool] = None, backward_pass: Optional[bool] = None,
                  thorough_mode_forward: Optional[bool] = None,
                  thorough_mode_backward: Optional[bool] = None,
                  warmup_steps_forward: Optional[int] = None,
                  warmup_steps_backward: Optional[int] = None,
                  steps_forward: Optional[int] = None, steps_backward: Optional[int] = None):
    if forward_pass is not None and backward_pass is not None and not forward_pass \
            and not backward_pass:
        STATE.autotune_forward = STATE.autotune_backward = False
        return
    if (forward_pass or backward_pass) and torch.are_deterministic_algorithms_enabled():
        logger.warning("the NATTEN auto-tuner is non-deterministic and PyTorch's deterministic "
                       "mode is on: use_autotuner ignored")
        return
    _set_flag("autotune_forward", "forward_pass", forward_pass, bool, True)
    _set_flag("autotune_backward", "backward_pass", backward_pass, bool, True)
    _set_flag("thorough_forward", "thorough_mode_forward", thorough_mode_forward, bool)
    _set_flag("thorough_backward", "thorough_mode_backward", thorough_mode_backward, bool)
    _set_flag("warmup_steps_forward", "warmup_steps_forward", warmup_steps_forward, int)
    _set_flag("warmup_steps_backward", "warmup_steps_backward", warmup_steps_backward, int)
    _set_flag("steps_forward", "steps_forward", steps_forward, int)
    _set_flag("steps_backward", "steps_backward", steps_backward, int)


def disable_autotuner():
    STATE.autotune_forward = STATE.autotune_backward = False
    STATE.thorough_forward = STATE.thorough_backward = False


def is_autotuner_enabled() -> bool:
    return STATE.autotune_forward or STATE.autotune_backward


def is_autotuner_enabled_for_forward() -> bool:
    return STATE.autotune_forward


def is_autotuner_enabled_for_backward() -> bool:
    return STATE.autotune_backward


def is_autotuner_thorough_for_forward() -> bool:
    return STATE.thorough_forward


def is_autotuner_thorough_for_backward() -> bool:
    return STATE.thorough_backward


# --------------------------------------------------------------------------------- the probes

def _capability(device_index) -> tuple:
    return torch.cuda.get_device_capability(device_index)


def has_cuda() -> bool:
    return torch.cuda.is_available()


def has_half(device_index=None) -> bool:
    return has_cuda()


def has_bfloat(device_index=None) -> bool:
    return has_cuda() and _capability(device_index) >= (8, 0)


def has_gemm(device_index=None) -> bool:
    from .. import ops_unfused
    return has_cuda() and any(b != "reference" for b in ops_unfused.available_backends())


def has_fna(device_index=None) -> bool:
    from .. import available_backends
    return has_cuda() and any(b in ("fused", "hopper") for b in available_backends())


has_fused_na = has_fna


def has_tf32_gemm(device_index=None) -> bool:
    return has_gemm(device_index) and _capability(device_index) >= (8, 0)


has_fp32_gemm = has_tf32_gemm


def has_fp64_gemm(device_index=None) -> bool:
    # fastna's GEMM kernels take float16, bfloat16 and float32 (float64 runs on the reference).
    return False


# --------------------------------------------------------------------- unfused kernel switches

def use_tf32_in_gemm_na(mode: bool = True):
    torch.backends.cuda.matmul.allow_tf32 = bool(mode)


def is_tf32_in_gemm_na_enabled() -> bool:
    return bool(torch.backends.cuda.matmul.allow_tf32)


def use_tiled_na(mode: bool = True):
    STATE.tiled_na = bool(mode)


def is_tiled_na_enabled() -> bool:
    return STATE.tiled_na


def use_gemm_na(mode: bool = True):
    STATE.gemm_na = bool(mode)


def is_gemm_na_enabled() -> bool:
    return STATE.gemm_na


# 0.17 kept these older names (slated for deprecation, without a warning).
def enable_tf32() -> bool:
    use_tf32_in_gemm_na(True)
    return is_tf32_in_gemm_na_enabled()


def disable_tf32() -> bool:
    use_tf32_in_gemm_na(False)
    return is_tf32_in_gemm_na_enabled()


def enable_gemm_na() -> bool:
    use_gemm_na(True)
    return is_gemm_na_enabled()


def disable_gemm_na() -> bool:
    use_gemm_na(False)
    return is_gemm_na_enabled()


def enable_tiled_na() -> bool:
    use_tiled_na(True)
    return is_tiled_na_enabled()


def disable_tiled_na() -> bool:
    use_tiled_na(False)
    return is_tiled_na_enabled()
