"""Argument normalization and validation: the only place user arguments are checked.

Every error names the offending argument and shows its value, and is a ValueError,
TypeError or NotImplementedError (never an AssertionError), so that callers can tell a bad
call from a bug.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

__all__ = ["NAParams", "normalize", "normalize_rank", "per_axis_ints", "per_axis_bools",
           "check_float_tensor", "check_window", "check_backend_arg", "check_return_lse",
           "normalize_qk", "normalize_av", "HeadGroup", "normalize_head_groups", "kv_head_range"]


@dataclass(frozen=True)
class NAParams:
    rank: int
    kernel: Tuple[int, ...]
    stride: Tuple[int, ...]
    dilation: Tuple[int, ...]
    causal: Tuple[bool, ...]
    scale: float
    # Spatial extent of the problem; filled by normalize(), optional for hand-built params.
    length: Tuple[int, ...] = ()


def _is_int(x) -> bool:
    # bool is an Integral in Python, but kernel_size=True is almost surely a mistake.
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_bool(x) -> bool:
    try:
        import numpy as np
        if isinstance(x, np.bool_):
            return True
    except ImportError:  # pragma: no cover - numpy is optional
        pass
    return isinstance(x, bool)


def _per_axis(name: str, value, rank: int, is_one, conv, one: str, many: str) -> tuple:
    """`value` as one entry per axis: a scalar (is_one) repeated, or a tuple / list of `rank`."""
    if is_one(value):
        return (conv(value),) * rank
    if isinstance(value, (tuple, list)):
        if len(value) != rank:
            raise ValueError(f"{name} must be {one} or a tuple of {rank} {many} for a {rank}D "
                             f"problem, got {value!r} (length {len(value)})")
        for x in value:
            if not is_one(x):
                raise TypeError(f"{name} entries must be {many}, got {value!r} "
                                f"(entry {x!r} of type {type(x).__name__})")
        return tuple(conv(x) for x in value)
    raise TypeError(f"{name} must be {one} or a tuple of {rank} {many}, got {value!r} "
                    f"of type {type(value).__name__}")


def per_axis_ints(name: str, value, rank: int) -> Tuple[int, ...]:
    return _per_axis(name, value, rank, _is_int, int, "an int", "ints")


def per_axis_bools(name: str, value, rank: int) -> Tuple[bool, ...]:
    return _per_axis(name, value, rank, _is_bool, bool, "a bool", "bools")


def check_float_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def check_window(kernel, dilation, length, stride=None) -> None:
    """Per axis (the first failing axis raises): dilation >= 1, kernel >= 2, kernel * dilation
    <= length and, when given, 1 <= stride <= kernel."""
    for a in range(len(kernel)):
        if dilation[a] < 1:
            raise ValueError(f"dilation must be >= 1 on every axis, got dilation={dilation} "
                             f"(axis {a}: {dilation[a]})")
        if kernel[a] < 2:
            raise ValueError(f"kernel_size must be >= 2 on every axis, got kernel_size={kernel} "
                             f"(axis {a}: {kernel[a]})")
        if kernel[a] * dilation[a] > length[a]:
            raise ValueError(f"kernel_size * dilation must not exceed the input length on every "
                             f"axis, got kernel_size={kernel}, dilation={dilation} for spatial "
                             f"shape {length} (axis {a}: {kernel[a]} * {dilation[a]} > "
                             f"{length[a]})")
        if stride is not None and not 1 <= stride[a] <= kernel[a]:
            raise ValueError(f"stride must satisfy 1 <= stride <= kernel_size on every axis, got "
                             f"stride={stride} with kernel_size={kernel} (axis {a})")


def normalize_rank(query, rank: Optional[int]) -> int:
    check_float_tensor("query", query)
    if rank is None:
        rank = query.dim() - 3
        if rank not in (1, 2, 3):
            raise ValueError(f"query must have 4, 5 or 6 dims ([B, *spatial, H, D] with 1 to 3 "
                             f"spatial axes), got shape {tuple(query.shape)} ({query.dim()} dims)")
        return rank
    if query.dim() != rank + 3:
        raise ValueError(f"query must have {rank + 3} dims ([B, *spatial, H, D] with {rank} "
                         f"spatial axes) for na{rank}d, got shape {tuple(query.shape)} "
                         f"({query.dim()} dims)")
    return rank


def _check_same(name: str, t: torch.Tensor, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} dtype {t.dtype} does not match query dtype {ref.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} device {t.device} does not match query device {ref.device}")


def _check_extras(additional_keys, additional_values, query, key, value) -> int:
    if additional_keys is None and additional_values is None:
        return 0
    if additional_keys is None or additional_values is None:
        given = "additional_keys" if additional_keys is not None else "additional_values"
        missing = "additional_values" if additional_keys is not None else "additional_keys"
        raise ValueError(f"{given} was given without {missing}; pass both or neither "
                         f"({missing}=None)")
    check_float_tensor("additional_keys", additional_keys)
    check_float_tensor("additional_values", additional_values)
    _check_same("additional_keys", additional_keys, query)
    _check_same("additional_values", additional_values, query)
    B, Hkv, D, Dv = query.shape[0], key.shape[-2], key.shape[-1], value.shape[-1]
    ek, ev = additional_keys, additional_values
    if ek.dim() != 4 or ek.shape[0] != B or ek.shape[2] != Hkv or ek.shape[3] != D:
        raise ValueError(f"additional_keys must have shape [B, N_extra, H_kv, D] = "
                         f"[{B}, N_extra, {Hkv}, {D}], got {tuple(ek.shape)}")
    if ev.dim() != 4 or ev.shape[0] != B or ev.shape[2] != Hkv or ev.shape[3] != Dv:
        raise ValueError(f"additional_values must have shape [B, N_extra, H_kv, Dv] = "
                         f"[{B}, N_extra, {Hkv}, {Dv}], got {tuple(ev.shape)}")
    if ek.shape[1] != ev.shape[1]:
        raise ValueError(f"additional_keys has {ek.shape[1]} tokens but additional_values has "
                         f"{ev.shape[1]} (shapes {tuple(ek.shape)} and {tuple(ev.shape)})")
    return int(ek.shape[1])


def _check_scale(scale, D: int) -> float:
    if scale is None:
        return float(D) ** -0.5
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {scale!r} of type "
                        f"{type(scale).__name__}")
    return float(scale)


def normalize(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False,
              scale=None, additional_keys=None, additional_values=None,
              rank: Optional[int] = None) -> NAParams:
    """Validate a neighborhood-attention call and return its per-axis parameters."""
    rank = _check_tensors(query, key, value, rank)
    D = query.shape[-1]
    kernel = per_axis_ints("kernel_size", kernel_size, rank)
    strides = per_axis_ints("stride", stride, rank)
    dil = per_axis_ints("dilation", dilation, rank)
    causal = per_axis_bools("is_causal", is_causal, rank)
    length = tuple(int(x) for x in query.shape[1:rank + 1])
    check_window(kernel, dil, length, strides)
    _check_extras(additional_keys, additional_values, query, key, value)
    return NAParams(rank=rank, kernel=kernel, stride=strides, dilation=dil, causal=causal,
                    scale=_check_scale(scale, D), length=length)


def _check_tensors(query, key, value, rank: Optional[int]) -> int:
    """query / key / value of one call agree (dims, dtype, device, batch, spatial shape,
    heads, head dims); returns the rank."""
    rank = normalize_rank(query, rank)
    check_float_tensor("key", key)
    check_float_tensor("value", value)
    for name, t in (("key", key), ("value", value)):
        if t.dim() != rank + 3:
            raise ValueError(f"{name} must have {rank + 3} dims like query, got shape "
                             f"{tuple(t.shape)} (query shape {tuple(query.shape)})")
        _check_same(name, t, query)
        if t.shape[0] != query.shape[0]:
            raise ValueError(f"{name} batch size {t.shape[0]} does not match query batch size "
                             f"{query.shape[0]} (shapes {tuple(t.shape)} vs {tuple(query.shape)})")
        if t.shape[1:rank + 1] != query.shape[1:rank + 1]:
            raise ValueError(f"{name} spatial shape {tuple(t.shape[1:rank + 1])} does not match "
                             f"query spatial shape {tuple(query.shape[1:rank + 1])}")
    H, D = query.shape[-2], query.shape[-1]
    Hkv = key.shape[-2]
    if value.shape[-2] != Hkv:
        raise ValueError(f"key and value must have the same number of heads H_kv, got key "
                         f"{tuple(key.shape)} and value {tuple(value.shape)}")
    if H < 1 or Hkv < 1 or H % Hkv != 0:
        raise ValueError(f"query heads H={H} must be a positive multiple of key/value heads "
                         f"H_kv={Hkv} (query {tuple(query.shape)}, key {tuple(key.shape)})")
    if key.shape[-1] != D:
        raise ValueError(f"key head dim {key.shape[-1]} does not match query head dim {D} "
                         f"(query {tuple(query.shape)}, key {tuple(key.shape)})")
    if D < 1 or value.shape[-1] < 1:
        raise ValueError(f"head dims must be positive, got query {tuple(query.shape)}, value "
                         f"{tuple(value.shape)}")
    return rank


# ------------------------------------------------------------------------------ unfused ops

def check_rpb(rpb, query, kernel, causal) -> None:
    check_float_tensor("rpb", rpb)
    if any(causal):
        raise ValueError(f"rpb (relative positional bias) is only defined for non-causal "
                         f"neighborhood attention, got is_causal={causal}")
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"rpb (relative positional bias) needs an odd kernel_size on every "
                         f"axis, got kernel_size={kernel}")
    H = query.shape[-2]
    want = (H,) + tuple(2 * k - 1 for k in kernel)
    if tuple(rpb.shape) != want:
        raise ValueError(f"rpb must have shape [H, 2*K_1-1, ...] = {list(want)} for "
                         f"kernel_size={kernel} and {H} heads, got {tuple(rpb.shape)}")
    if rpb.device != query.device:
        raise ValueError(f"rpb device {rpb.device} does not match query device {query.device}")


def _check_extra(name, t, ref_name, ref, n_heads_kv, dim) -> int:
    check_float_tensor(name, t)
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} dtype {t.dtype} does not match {ref_name} dtype {ref.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} device {t.device} does not match {ref_name} device "
                         f"{ref.device}")
    B = ref.shape[0]
    if t.dim() != 4 or t.shape[0] != B or t.shape[2] != n_heads_kv or t.shape[3] != dim:
        raise ValueError(f"{name} must have shape [B, N_extra, H_kv, D] = [{B}, N_extra, "
                         f"{n_heads_kv}, {dim}], got {tuple(t.shape)}")
    return int(t.shape[1])


def check_backend_arg(backend) -> None:
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a str or None, got {backend!r} of type "
                        f"{type(backend).__name__}")


def check_return_lse(return_lse) -> None:
    if not isinstance(return_lse, bool):
        raise TypeError(f"return_lse must be a bool, got {return_lse!r}")


def normalize_qk(rank, query, key, kernel_size, dilation, is_causal, rpb, additional_keys,
                 backend):
    """Validate an unfused QK call; returns (kernel, dilation, causal) per axis."""
    check_backend_arg(backend)
    params = normalize(query, key, key, kernel_size, 1, dilation, is_causal, rank=rank)
    kernel, dil, causal = params.kernel, params.dilation, params.causal
    if rpb is not None:
        check_rpb(rpb, query, kernel, causal)
    if additional_keys is not None:
        _check_extra("additional_keys", additional_keys, "query", query, key.shape[-2],
                     query.shape[-1])
    return kernel, dil, causal


def normalize_av(rank, attn, value, kernel_size, dilation, is_causal, additional_values,
                 backend):
    """Validate an unfused AV call; returns (kernel, dilation, causal) per axis."""
    check_backend_arg(backend)
    check_float_tensor("attn", attn)
    if attn.dim() != rank + 3:
        raise ValueError(f"attn must have {rank + 3} dims ([B, *spatial, H, W] with {rank} "
                         f"spatial axes) for na{rank}d_av, got shape {tuple(attn.shape)}")
    check_float_tensor("value", value)
    if value.dim() != rank + 3:
        raise ValueError(f"value must have {rank + 3} dims ([B, *spatial, H_kv, Dv] with {rank} "
                         f"spatial axes) for na{rank}d_av, got shape {tuple(value.shape)}")
    if value.device != attn.device:
        raise ValueError(f"value device {value.device} does not match attn device {attn.device}")
    if value.shape[0] != attn.shape[0] or value.shape[1:rank + 1] != attn.shape[1:rank + 1]:
        raise ValueError(f"value batch/spatial shape {tuple(value.shape[:rank + 1])} does not "
                         f"match attn {tuple(attn.shape[:rank + 1])} (value "
                         f"{tuple(value.shape)}, attn {tuple(attn.shape)})")
    H, Hkv = attn.shape[-2], value.shape[-2]
    if H < 1 or Hkv < 1 or H % Hkv != 0:
        raise ValueError(f"attn heads H={H} must be a positive multiple of value heads "
                         f"H_kv={Hkv} (attn {tuple(attn.shape)}, value {tuple(value.shape)})")
    kernel = per_axis_ints("kernel_size", kernel_size, rank)
    dil = per_axis_ints("dilation", dilation, rank)
    causal = per_axis_bools("is_causal", is_causal, rank)
    check_window(kernel, dil, tuple(attn.shape[1:rank + 1]))
    n_extra = 0
    if additional_values is not None:
        n_extra = _check_extra("additional_values", additional_values, "value", value, Hkv,
                               value.shape[-1])
    W = math.prod(kernel)
    if attn.shape[-1] != W + n_extra:
        extra = f" + {n_extra} additional values" if n_extra else ""
        raise ValueError(f"attn last dim must be prod(kernel_size){extra} = {W + n_extra} for "
                         f"kernel_size={kernel}, got {attn.shape[-1]} (attn shape "
                         f"{tuple(attn.shape)})")
    return kernel, dil, causal


# ------------------------------------------------------------------------------ varlen

@dataclass(frozen=True)
class VarlenSample:
    """One sample of a packed batch: its rows [start, start + tokens), its parameters and its
    query / key / value as [1, *shape, heads, dim] views of the packed tensors."""
    index: int
    start: int
    shape: Tuple[int, ...]
    params: NAParams
    tensors: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    @property
    def tokens(self) -> int:
        return math.prod(self.shape)


def _spatial_shapes(spatial_shapes) -> list:
    if isinstance(spatial_shapes, torch.Tensor):
        if spatial_shapes.dim() != 2 or spatial_shapes.is_floating_point() or \
                spatial_shapes.is_complex() or spatial_shapes.dtype == torch.bool:
            raise ValueError(f"spatial_shapes as a tensor must be an integer tensor [B, rank], "
                             f"got {spatial_shapes.dtype} of shape {tuple(spatial_shapes.shape)}")
        if torch.compiler.is_compiling():
            # Its values decide every shape of the graph: a traced tensor has none to read.
            raise TypeError(
                f"spatial_shapes as a tensor cannot be read while torch.compile traces "
                f"(its values decide the graph's shapes); pass a list of tuples instead, e.g. "
                f"spatial_shapes.tolist() outside the compiled region (got an integer tensor "
                f"of shape {tuple(spatial_shapes.shape)})")
        spatial_shapes = spatial_shapes.tolist()
    if not isinstance(spatial_shapes, (list, tuple)) or len(spatial_shapes) == 0:
        raise ValueError(f"spatial_shapes must be a non-empty list of per-sample shapes or an "
                         f"integer tensor [B, rank], got {spatial_shapes!r}")
    shapes = []
    for i, s in enumerate(spatial_shapes):
        s = (s,) if _is_int(s) else s
        if not isinstance(s, (list, tuple)) or not 1 <= len(s) <= 3:
            raise ValueError(f"spatial_shapes[{i}] (sample {i}) must be a tuple of 1 to 3 "
                             f"positive ints, got {s!r}")
        for a, x in enumerate(s):
            if not _is_int(x):
                raise TypeError(f"spatial_shapes[{i}] (sample {i}) must be a tuple of 1 to 3 "
                                f"positive ints, got {s!r} (axis {a}: {x!r} of type "
                                f"{type(x).__name__})")
            if x < 1:
                raise ValueError(f"spatial_shapes[{i}] (sample {i}) must be a tuple of 1 to 3 "
                                 f"positive ints, got {s!r} (axis {a}: {x})")
        if shapes and len(s) != len(shapes[0]):
            raise ValueError(f"every sample must have the same rank: spatial_shapes[{i}] = "
                             f"{tuple(s)} has {len(s)} axes but spatial_shapes[0] = "
                             f"{shapes[0]} has {len(shapes[0])}")
        shapes.append(tuple(int(x) for x in s))
    return shapes


def _per_sample(name: str, value, count: int) -> list:
    """A list gives one entry per sample; anything else is shared by all samples."""
    if isinstance(value, list):
        if len(value) != count:
            raise ValueError(f"{name} as a list gives one entry per sample: expected {count} "
                             f"entries (len(spatial_shapes)), got {len(value)}: {value!r}")
        return value
    return [value] * count


def normalize_varlen(query, key, value, spatial_shapes, kernel_size, stride=1, dilation=1,
                     is_causal=False, scale=None) -> Tuple[VarlenSample, ...]:
    """Validate a packed variable-size call; one VarlenSample per sample, in packing order."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_float_tensor(name, t)
        if t.dim() != 3:
            raise ValueError(f"{name} must be packed [total_tokens, heads, dim], got shape "
                             f"{tuple(t.shape)}")
    _check_same("key", key, query)
    _check_same("value", value, query)
    shapes = _spatial_shapes(spatial_shapes)
    tokens = [math.prod(s) for s in shapes]
    for name, t in (("query", query), ("key", key), ("value", value)):
        if t.shape[0] != sum(tokens):
            raise ValueError(f"{name} has {t.shape[0]} tokens but spatial_shapes {shapes} sum to "
                             f"{sum(tokens)} (tokens per sample: {tokens})")
    count = len(shapes)
    per = [_per_sample(n, v, count) for n, v in (("kernel_size", kernel_size), ("stride", stride),
                                                  ("dilation", dilation),
                                                  ("is_causal", is_causal))]
    samples, start = [], 0
    for i, (shape, n) in enumerate(zip(shapes, tokens)):
        views = [t[start:start + n].reshape(1, *shape, *t.shape[1:]) for t in (query, key, value)]
        try:
            p = normalize(*views, per[0][i], per[1][i], per[2][i], per[3][i], scale)
        except (ValueError, TypeError) as e:
            raise type(e)(f"sample {i} (spatial shape {shape}): {e}") from None
        samples.append(VarlenSample(i, start, shape, p, tuple(views)))
        start += n
    return tuple(samples)


# ------------------------------------------------------------------------------ head groups

@dataclass(frozen=True)
class HeadGroup:
    """Query heads [heads[0], heads[1]) of a call with their own window parameters; they read
    key/value heads [kv_heads[0], kv_heads[1]).  `groups`: the caller's head_groups entries it
    covers, [first, last] (one entry, or several consecutive ones with equal parameters after
    fastna._heads merged them)."""
    groups: Tuple[int, int]
    heads: Tuple[int, int]
    kv_heads: Tuple[int, int]
    params: NAParams

    def label(self) -> str:
        first, last = self.groups
        which = f"head group {first}" if first == last else f"head groups {first}-{last}"
        return f"{which} (query heads {self.heads[0]}-{self.heads[1] - 1})"


def _head_counts(head_groups, H: int) -> Tuple[int, ...]:
    if not isinstance(head_groups, (list, tuple)) or len(head_groups) == 0:
        raise TypeError(f"head_groups must be a non-empty list or tuple of head counts (one "
                        f"per group, summing to the query heads H={H}) or None, got "
                        f"{head_groups!r}")
    for i, n in enumerate(head_groups):
        if not _is_int(n) or n < 1:
            raise ValueError(f"head_groups entries must be positive ints (heads per group), "
                             f"got head_groups={head_groups!r} (entry {i}: {n!r})")
    counts = tuple(int(n) for n in head_groups)
    if sum(counts) != H:
        raise ValueError(f"head_groups must sum to the query heads H={H}, got "
                         f"head_groups={head_groups!r} (sum {sum(counts)})")
    return counts


def kv_head_range(start: int, stop: int, group_size: int) -> Optional[Tuple[int, int]]:
    """The key/value heads that query heads [start, stop) read when query head h reads key/value
    head h // group_size: a whole number of them, or one that all of them share; None when the
    range splits a key/value head's query heads and also reaches into another one."""
    if start % group_size == 0 and stop % group_size == 0:
        return start // group_size, stop // group_size
    if start // group_size == (stop - 1) // group_size:
        return start // group_size, start // group_size + 1
    return None


def _per_group(name: str, value, count: int) -> list:
    """A list gives one entry per head group; anything else is shared by all groups."""
    if isinstance(value, list):
        if len(value) != count:
            raise ValueError(f"{name} as a list gives one entry per head group: expected "
                             f"{count} entries (len(head_groups)), got {len(value)}: {value!r} "
                             f"(a tuple gives one value per axis, shared by every group)")
        return value
    return [value] * count


def normalize_head_groups(query, key, value, head_groups, kernel_size, stride=1, dilation=1,
                          is_causal=False, scale=None, additional_keys=None,
                          additional_values=None, rank: Optional[int] = None
                          ) -> Tuple[HeadGroup, ...]:
    """Validate a call with per-head-group window parameters; one HeadGroup per entry of
    head_groups, in head order.  Each group means exactly what fastna.neighborhood_attention
    means on its heads alone (its query heads, the key/value heads they read, the matching
    heads of the additional keys / values, the shared scale)."""
    rank = _check_tensors(query, key, value, rank)
    _check_extras(additional_keys, additional_values, query, key, value)
    _check_scale(scale, query.shape[-1])
    H, Hkv = query.shape[-2], key.shape[-2]
    counts = _head_counts(head_groups, H)
    per = [_per_group(n, v, len(counts)) for n, v in (("kernel_size", kernel_size),
                                                      ("stride", stride),
                                                      ("dilation", dilation),
                                                      ("is_causal", is_causal))]
    groups, start = [], 0
    for i, n in enumerate(counts):
        stop = start + n
        kv = kv_head_range(start, stop, H // Hkv)
        if kv is None:
            raise ValueError(
                f"head group {i} (query heads {start}-{stop - 1}) does not map to whole "
                f"key/value heads: with H={H} query heads and H_kv={Hkv} (query head h reads "
                f"key/value head h // {H // Hkv}) a group must cover whole key/value heads "
                f"(start and size multiples of {H // Hkv}) or lie inside one; got "
                f"head_groups={head_groups!r}")
        heads, kv_heads = slice(start, stop), slice(*kv)
        extras = [None if t is None else t[:, :, kv_heads]
                  for t in (additional_keys, additional_values)]
        try:
            p = normalize(query[..., heads, :], key[..., kv_heads, :], value[..., kv_heads, :],
                          per[0][i], per[1][i], per[2][i], per[3][i], scale, *extras, rank=rank)
        except (ValueError, TypeError) as e:
            raise type(e)(f"head group {i} (query heads {start}-{stop - 1}): {e}") from None
        groups.append(HeadGroup((i, i), (start, stop), kv, p))
        start = stop
    return tuple(groups)
