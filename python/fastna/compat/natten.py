"""NATTEN 0.17 functional API on top of fastna (the shim's `natten.functional`).

Names, argument order and defaults follow NATTEN 0.17.4's `natten/functional.py`:

- unfused ops na{1,2,3}d_qk / na{1,2,3}d_av, heads-first: query/key/value [B, H, *spatial, D],
  attention weights [B, H, *spatial, prod(kernel_size) (+ N_extra)], additional keys/values
  [B, H, N_extra, D]. QK applies no softmax scale; rpb [H, 2K_1-1, ...] is added to the
  neighborhood columns only.
- fused ops na{1,2,3}d, heads-last [B, *spatial, H, D]; scale None (or 0) means D**-0.5; the
  0.17.4 additional_keys / additional_values [B, N_extra, H, D] (both or neither) are attended
  by every query; xformers_kwargs is accepted and ignored (fastna computes that branch itself).
- the older natten{1,2,3}dqkrpb / natten{1,2,3}dqk / natten{1,2,3}dav (int kernel / dilation,
  3D with separate depth values), removed in 0.17.5.

Numbers: the unfused ops run fastna.ops_unfused (its GEMM kernels where built and allowed by
natten.use_gemm_na, else the reference), casting rpb to the key's dtype and the weights to
the value's dtype as 0.17 did. na*d without rpb runs fastna.neighborhood_attention (fastna's
fastest backend); with rpb it computes qk + rpb -> softmax -> av (half-precision weights
normalized in float32), the math of 0.17's fused kernel, and like 0.17 refuses to
backpropagate through it.

Rejected as 0.17.4 rejected them: even kernel sizes or kernel_size 1, inputs smaller than
kernel_size * dilation, rpb with causal masking, query/key/value (or weights/value) of
different shapes, additional_keys without additional_values. Differences, each a superset:
any device and float64 in the fused ops; na3d_av's dilation defaults to 1 like the other ops';
the deprecated ops do not log a warning on every call. Not supported: nested tensors
(NotImplementedError) and forward-mode AD.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from .. import ops_unfused as _ops
from .natten_args import check_all_args, check_extent, check_no_causal_rpb
from .natten_context import is_gemm_na_enabled

__all__ = [
    "na1d_qk", "na1d_av", "na2d_qk", "na2d_av", "na3d_qk", "na3d_av",
    "na1d", "na2d", "na3d",
    "natten1dqkrpb", "natten2dqkrpb", "natten3dqkrpb",
    "natten1dqk", "natten2dqk", "natten3dqk",
    "natten1dav", "natten2dav", "natten3dav",
]

_QK = {1: _ops.na1d_qk, 2: _ops.na2d_qk, 3: _ops.na3d_qk}
_AV = {1: _ops.na1d_av, 2: _ops.na2d_av, 3: _ops.na3d_av}
_AXES = {1: "L", 2: "X, Y", 3: "X, Y, Z"}


def _tensor(op: str, name: str, t, rank: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_nested:
        raise NotImplementedError(f"{op}: nested tensors are not supported ({name} is nested)")
    if t.dim() != rank + 3:
        raise ValueError(f"{op}: {name} must be {layout} ({rank + 3} dims), got shape "
                         f"{tuple(t.shape)}")


def _same_shape(op: str, names: str, *tensors: Tensor) -> None:
    shapes = [tuple(t.shape) for t in tensors]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"{op}: {names} must have the same shape in NATTEN 0.17, got "
                         f"{', '.join(map(str, shapes))}")


def _extra(op: str, name: str, t, batch_heads: tuple, dim: int) -> Optional[Tensor]:
    """additional keys/values [B, H, N_extra, D] (heads-first) -> [B, N_extra, H, D]."""
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
    if t.dim() != 4 or tuple(t.shape[:2]) != batch_heads or t.shape[-1] != dim:
        raise ValueError(f"{op}: {name} must be [B, H, N_extra, D] = [{batch_heads[0]}, "
                         f"{batch_heads[1]}, N_extra, {dim}], got shape {tuple(t.shape)}")
    return t.transpose(1, 2)


def _unfused_backend() -> Optional[str]:
    # natten.use_gemm_na(False) asked for the non-GEMM kernels: fastna's reference.
    return None if is_gemm_na_enabled() else "reference"


def _to_heads_last(t: Tensor) -> Tensor:
    return t.movedim(1, -2)


def _to_heads_first(t: Tensor) -> Tensor:
    return t.movedim(-2, 1)


# ------------------------------------------------------------------ unfused ops (heads-first)

def _qk(rank, query, key, kernel_size, dilation, additional_keys, is_causal, rpb):
    op = f"na{rank}d_qk"
    layout = f"heads-first [B, H, {_AXES[rank]}, D]"
    _tensor(op, "query", query, rank, layout)
    _tensor(op, "key", key, rank, layout)
    _same_shape(op, "query and key", query, key)
    kernel, dil, causal = check_all_args(rank, kernel_size, dilation, is_causal)
    check_extent(op, query.shape[2:-1], kernel, dil)
    check_no_causal_rpb(op, causal, rpb)
    if isinstance(rpb, torch.Tensor):
        rpb = rpb.to(key.dtype)
    extra = _extra(op, "additional_keys", additional_keys, tuple(query.shape[:2]),
                   query.shape[-1])
    attn = _QK[rank](_to_heads_last(query), _to_heads_last(key), kernel, dil, causal, rpb=rpb,
                     additional_keys=extra, backend=_unfused_backend())
    return _to_heads_first(attn)


def _av(rank, attn, value, kernel_size, dilation, additional_values, is_causal):
    op = f"na{rank}d_av"
    _tensor(op, "attn", attn, rank, f"heads-first [B, H, {_AXES[rank]}, W]")
    _tensor(op, "value", value, rank, f"heads-first [B, H, {_AXES[rank]}, D]")
    if attn.shape[:-1] != value.shape[:-1]:
        raise ValueError(f"{op}: attn {tuple(attn.shape)} and value {tuple(value.shape)} must "
                         f"agree on [B, H, {_AXES[rank]}]")
    kernel, dil, causal = check_all_args(rank, kernel_size, dilation, is_causal)
    check_extent(op, value.shape[2:-1], kernel, dil)
    extra = _extra(op, "additional_values", additional_values, tuple(value.shape[:2]),
                   value.shape[-1])
    out = _AV[rank](_to_heads_last(attn.to(value.dtype)), _to_heads_last(value), kernel, dil,
                    causal, additional_values=extra, backend=_unfused_backend())
    return _to_heads_first(out)


def _make_qk(rank: int):
    def qk(query: Tensor, key: Tensor, kernel_size, dilation=1,
           additional_keys: Optional[Tensor] = None, is_causal=False,
           rpb: Optional[Tensor] = None) -> Tensor:
        return _qk(rank, query, key, kernel_size, dilation, additional_keys, is_causal, rpb)
    qk.__name__ = qk.__qualname__ = f"na{rank}d_qk"
    qk.__doc__ = (f"query/key [B, H, {_AXES[rank]}, D] -> attn [B, H, {_AXES[rank]}, "
                  f"prod(kernel_size) (+ N_extra)]; no softmax scale applied.")
    return qk


def _make_av(rank: int):
    def av(attn: Tensor, value: Tensor, kernel_size, dilation=1,
           additional_values: Optional[Tensor] = None, is_causal=False) -> Tensor:
        return _av(rank, attn, value, kernel_size, dilation, additional_values, is_causal)
    av.__name__ = av.__qualname__ = f"na{rank}d_av"
    av.__doc__ = (f"attn [B, H, {_AXES[rank]}, prod(kernel_size) (+ N_extra)], value "
                  f"[B, H, {_AXES[rank]}, D] -> [B, H, {_AXES[rank]}, D].")
    return av


na1d_qk, na2d_qk, na3d_qk = (_make_qk(r) for r in (1, 2, 3))
na1d_av, na2d_av, na3d_av = (_make_av(r) for r in (1, 2, 3))


# ------------------------------------------------------------ fused ops (0.17: heads-last)

class _NoBackwardWithRpb(torch.autograd.Function):
    """Identity whose backward raises: 0.17's fused ops ran rpb in inference only."""

    @staticmethod
    def forward(ctx, out, op):
        ctx.op = op
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError(
            f"{ctx.op}: NATTEN 0.17's fused neighborhood attention does not train with "
            f"positional biases (rpb); use the unfused na*d_qk / na*d_av ops to train with rpb")


def _fused(rank, query, key, value, kernel_size, dilation, is_causal, rpb, scale,
           additional_keys, additional_values):
    op = f"na{rank}d"
    layout = f"heads-last [B, {_AXES[rank]}, H, D]"
    for name, t in (("query", query), ("key", key), ("value", value)):
        _tensor(op, name, t, rank, layout)
    _same_shape(op, "query, key and value", query, key, value)
    kernel, dil, causal = check_all_args(rank, kernel_size, dilation, is_causal)
    check_extent(op, query.shape[1:-2], kernel, dil)
    check_no_causal_rpb(op, causal, rpb)
    if (additional_keys is None) != (additional_values is None):
        raise ValueError(f"{op}: additional_keys and additional_values must both be tensors or "
                         f"both None")
    # NATTEN 0.17 read scale=None and scale=0 alike as "default".
    scale = scale or query.shape[-1] ** -0.5
    if rpb is not None and not isinstance(rpb, torch.Tensor):
        raise TypeError(f"{op}: rpb must be a torch.Tensor or None, got {type(rpb).__name__}")
    if rpb is None:
        from .. import neighborhood_attention
        return neighborhood_attention(query, key, value, kernel, 1, dil, causal, scale,
                                      additional_keys=additional_keys,
                                      additional_values=additional_values)
    attn = _QK[rank](query * scale, key, kernel, dil, causal, rpb=rpb.to(query.dtype),
                     additional_keys=additional_keys)
    # Half-precision weights are normalized in float32, as 0.17's fused kernel accumulates.
    wide = torch.float32 if attn.dtype in (torch.float16, torch.bfloat16) else attn.dtype
    probs = torch.softmax(attn, dim=-1, dtype=wide).to(value.dtype)
    out = _AV[rank](probs, value, kernel, dil, causal, additional_values=additional_values)
    if torch.is_grad_enabled() and out.requires_grad:
        out = _NoBackwardWithRpb.apply(out, op)
    return out


def _make_fused(rank: int):
    def fused(query: Tensor, key: Tensor, value: Tensor, kernel_size, dilation=1,
              is_causal=False, rpb: Optional[Tensor] = None, scale: Optional[float] = None,
              additional_keys: Optional[Tensor] = None,
              additional_values: Optional[Tensor] = None,
              xformers_kwargs: Optional[Dict] = None) -> Tensor:
        return _fused(rank, query, key, value, kernel_size, dilation, is_causal, rpb, scale,
                      additional_keys, additional_values)
    fused.__name__ = fused.__qualname__ = f"na{rank}d"
    fused.__doc__ = (f"Fused {rank}D neighborhood attention, heads-last [B, {_AXES[rank]}, H, D] "
                     f"like NATTEN 0.17's na{rank}d.")
    return fused


na1d, na2d, na3d = (_make_fused(r) for r in (1, 2, 3))


# -------------------------------------------------- deprecated ops (NATTEN <= 0.17.4 names)

def natten1dqkrpb(query: Tensor, key: Tensor, rpb: Optional[Tensor], kernel_size: int,
                  dilation: int) -> Tensor:
    return na1d_qk(query, key, kernel_size=(kernel_size,), dilation=(dilation,), rpb=rpb)


def natten2dqkrpb(query: Tensor, key: Tensor, rpb: Optional[Tensor], kernel_size: int,
                  dilation: int) -> Tensor:
    return na2d_qk(query, key, kernel_size=(kernel_size, kernel_size),
                   dilation=(dilation, dilation), rpb=rpb)


def natten3dqkrpb(query: Tensor, key: Tensor, rpb: Optional[Tensor], kernel_size_d: int,
                  kernel_size: int, dilation_d: int, dilation: int) -> Tensor:
    return na3d_qk(query, key, kernel_size=(kernel_size_d, kernel_size, kernel_size),
                   dilation=(dilation_d, dilation, dilation), rpb=rpb)


def natten1dqk(query: Tensor, key: Tensor, kernel_size: int, dilation: int) -> Tensor:
    return na1d_qk(query, key, kernel_size=(kernel_size,), dilation=(dilation,))


def natten2dqk(query: Tensor, key: Tensor, kernel_size: int, dilation: int) -> Tensor:
    return na2d_qk(query, key, kernel_size=(kernel_size, kernel_size),
                   dilation=(dilation, dilation))


def natten3dqk(query: Tensor, key: Tensor, kernel_size_d: int, kernel_size: int,
               dilation_d: int, dilation: int) -> Tensor:
    return na3d_qk(query, key, kernel_size=(kernel_size_d, kernel_size, kernel_size),
                   dilation=(dilation_d, dilation, dilation))


def natten1dav(attn: Tensor, value: Tensor, kernel_size: int, dilation: int) -> Tensor:
    return na1d_av(attn, value, kernel_size=(kernel_size,), dilation=(dilation,))


def natten2dav(attn: Tensor, value: Tensor, kernel_size: int, dilation: int) -> Tensor:
    return na2d_av(attn, value, kernel_size=(kernel_size, kernel_size),
                   dilation=(dilation, dilation))


def natten3dav(attn: Tensor, value: Tensor, kernel_size_d: int, kernel_size: int,
               dilation_d: int, dilation: int) -> Tensor:
    return na3d_av(attn, value, kernel_size=(kernel_size_d, kernel_size, kernel_size),
                   dilation=(dilation_d, dilation, dilation))
