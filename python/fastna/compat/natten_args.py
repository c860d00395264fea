"""NATTEN 0.17's argument forms and the rules its kernels enforced, for fastna.compat.

Serves the shim's `natten.types` (the type aliases), `natten.utils` (`check_all_args`,
`get_num_na_weights`, `log.get_logger`), and the checks every compat op runs before calling
fastna: where NATTEN 0.17.4 rejected a call, the compat layer rejects it too, with an exception
that names the argument and its value.

0.17.4's rules: kernel_size an int or a per-axis tuple/list of odd ints > 1 (even kernels came
in 0.17.5, and only for the fused ops); dilation an int >= 1 or per-axis tuple/list (None
means 1); is_causal a bool or per-axis tuple/list (None means False); on every axis
kernel_size * dilation <= the input's extent; relative positional bias only without causal
masking.
"""
from __future__ import annotations

import logging
import math
import numbers
from typing import Any, Sequence, Tuple, Union

TYPE_NAMES = (
    "Dimension1DType", "Dimension2DType", "Dimension3DType", "DimensionType",
    "Dimension1DTypeOrDed", "Dimension2DTypeOrDed", "Dimension3DTypeOrDed",
    "CausalArg1DType", "CausalArg2DType", "CausalArg3DType", "CausalArgType",
    "CausalArg1DTypeOrDed", "CausalArg2DTypeOrDed", "CausalArg3DTypeOrDed",
    "NoneType", "FnaForwardConfigType", "FnaBackwardConfigType",
)
UTIL_NAMES = ("check_kernel_size_arg", "check_dilation_arg", "check_causal_arg",
              "check_all_args", "get_num_na_weights")
__all__ = [*TYPE_NAMES, *UTIL_NAMES, "get_logger", "check_extent", "check_no_causal_rpb"]

Dimension1DType = Tuple[int]
Dimension2DType = Tuple[int, int]
Dimension3DType = Tuple[int, int, int]
DimensionType = Union[Dimension1DType, Dimension2DType, Dimension3DType]
Dimension1DTypeOrDed = Union[int, Dimension1DType]
Dimension2DTypeOrDed = Union[int, Dimension2DType]
Dimension3DTypeOrDed = Union[int, Dimension3DType]
CausalArg1DType = Tuple[bool]
CausalArg2DType = Tuple[bool, bool]
CausalArg3DType = Tuple[bool, bool, bool]
CausalArgType = Union[CausalArg1DType, CausalArg2DType, CausalArg3DType]
CausalArg1DTypeOrDed = Union[bool, CausalArg1DType]
CausalArg2DTypeOrDed = Union[bool, CausalArg2DType]
CausalArg3DTypeOrDed = Union[bool, CausalArg3DType]
NoneType = type(None)
# Tile shapes of 0.17's FNA kernels: accepted by nothing here, kept so annotations import.
FnaForwardConfigType = Tuple[DimensionType, DimensionType]
FnaBackwardConfigType = Tuple[DimensionType, DimensionType, DimensionType, bool]


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _per_axis(name: str, value, na_dim: int, ok, what: str) -> tuple:
    if ok(value):
        return (value,) * na_dim
    if isinstance(value, (tuple, list)) and len(value) == na_dim and all(ok(x) for x in value):
        return tuple(value)
    raise ValueError(f"invalid {name}={value!r} for {na_dim}D neighborhood attention: expected "
                     f"{what} or a tuple/list of {na_dim} of them")


def check_kernel_size_arg(na_dim: int, kernel_size: Any) -> tuple:
    kernel = tuple(int(k) for k in _per_axis("kernel_size", kernel_size, na_dim, _is_int,
                                             "an integer"))
    if any(k <= 1 or k % 2 == 0 for k in kernel):
        raise ValueError(f"kernel_size={kernel_size!r}: NATTEN 0.17 takes odd kernel sizes "
                         f"greater than 1 on every axis")
    return kernel


def check_dilation_arg(na_dim: int, dilation: Any) -> tuple:
    if dilation is None:
        return (1,) * na_dim
    dil = tuple(int(d) for d in _per_axis("dilation", dilation, na_dim, _is_int, "an integer"))
    if any(d < 1 for d in dil):
        raise ValueError(f"dilation={dilation!r}: every entry must be >= 1")
    return dil


def check_causal_arg(na_dim: int, is_causal: Any) -> tuple:
    if is_causal is None:
        return (False,) * na_dim
    return tuple(bool(c) for c in _per_axis("is_causal", is_causal, na_dim,
                                             lambda c: isinstance(c, bool), "a bool"))


def check_all_args(na_dim: int, kernel_size: Any, dilation: Any, is_causal: Any
                   ) -> Tuple[tuple, tuple, tuple]:
    """(kernel_size, dilation, is_causal) as per-axis tuples, NATTEN 0.17's `check_all_args`."""
    if na_dim not in (1, 2, 3):
        raise ValueError(f"na_dim must be 1, 2 or 3, got {na_dim!r}")
    return (check_kernel_size_arg(na_dim, kernel_size), check_dilation_arg(na_dim, dilation),
            check_causal_arg(na_dim, is_causal))


def get_num_na_weights(kernel_size: Sequence[int]) -> int:
    if not isinstance(kernel_size, tuple):
        raise ValueError(f"kernel_size must be a tuple, got {kernel_size!r}")
    return math.prod(kernel_size)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def check_extent(op: str, spatial: Sequence[int], kernel: tuple, dilation: tuple) -> None:
    for axis, (n, k, d) in enumerate(zip(spatial, kernel, dilation)):
        if k * d > n:
            raise ValueError(f"{op}: input extent {tuple(spatial)} is smaller than "
                             f"kernel_size * dilation on axis {axis} ({k} * {d} = {k * d} > {n}); "
                             f"NATTEN 0.17 does not pad (pad the input, or lower the kernel size "
                             f"or dilation)")


def check_no_causal_rpb(op: str, causal: tuple, rpb) -> None:
    if rpb is not None and any(causal):
        raise NotImplementedError(f"{op}: positional biases (rpb) with causal masking "
                                  f"(is_causal={causal}) are not defined in NATTEN 0.17")
