"""NATTEN <= 0.17 functional API on top of fastna (drop-in for `natten.functional`).

Names, argument order and defaults follow NATTEN 0.17.4's `natten/functional.py`. Its unfused
ops use the heads-first layout: query/key/value [B, H, *spatial, D], attention weights
[B, H, *spatial, prod(kernel_size) (+ N_extra)], additional keys/values [B, H, N_extra, D].
The fused ops na1d/na2d/na3d of 0.17 were heads-last ([B, *spatial, H, D]) and are here too.

Every function permutes to fastna's heads-last layout (a view; fastna.ops_unfused copies only
if its gather needs contiguous memory) and calls fastna.ops_unfused, so a faster unfused backend
registered there (the CUDA GEMM kernels) speeds these up without changes here.

Differences from NATTEN 0.17.4, all supersets: GQA (fewer key/value heads than query heads)
is accepted; the deprecated `natten{1,2,3}d*` ops do not log a deprecation warning on every call
(HuggingFace's DiNAT/NAT call them in every layer); na3d_av's dilation defaults to 1 like the
other ops'; rpb gets a gradient in the fused ops too. Nested tensors are not supported.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import ops_unfused as _ops

__all__ = [
    "na1d_qk", "na1d_av", "na2d_qk", "na2d_av", "na3d_qk", "na3d_av",
    "na1d", "na2d", "na3d",
    "natten1dqkrpb", "natten2dqkrpb", "natten3dqkrpb",
    "natten1dqk", "natten2dqk", "natten3dqk",
    "natten1dav", "natten2dav", "natten3dav",
]

_QK = {1: _ops.na1d_qk, 2: _ops.na2d_qk, 3: _ops.na3d_qk}
_AV = {1: _ops.na1d_av, 2: _ops.na2d_av, 3: _ops.na3d_av}
_LAYOUT = {1: "[B, H, L, {}]", 2: "[B, H, X, Y, {}]", 3: "[B, H, X, Y, Z, {}]"}


def _heads_first(name: str, t, rank: int, last: str, op: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_nested:
        raise NotImplementedError(f"{op}: nested tensors are not supported ({name} is nested)")
    if t.dim() != rank + 3:
        raise ValueError(f"{op}: {name} must be heads-first {_LAYOUT[rank].format(last)} "
                         f"({rank + 3} dims), got shape {tuple(t.shape)}")


def _extra(name: str, t, op: str):
    # [B, H, N_extra, D] (NATTEN 0.17) -> [B, N_extra, H, D] (fastna)
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{op}: {name} must be [B, H, N_extra, D] (4 dims), got shape "
                         f"{tuple(t.shape)}")
    return t.transpose(1, 2)


def _to_heads_last(t: Tensor) -> Tensor:
    return t.movedim(1, -2)


def _to_heads_first(t: Tensor) -> Tensor:
    return t.movedim(-2, 1)


def _qk(rank, query, key, kernel_size, dilation, additional_keys, is_causal, rpb):
    op = f"na{rank}d_qk"
    _heads_first("query", query, rank, "D", op)
    _heads_first("key", key, rank, "D", op)
    attn = _QK[rank](_to_heads_last(query), _to_heads_last(key), kernel_size, dilation,
                     is_causal=is_causal, rpb=rpb,
                     additional_keys=_extra("additional_keys", additional_keys, op))
    return _to_heads_first(attn)


def _av(rank, attn, value, kernel_size, dilation, additional_values, is_causal):
    op = f"na{rank}d_av"
    _heads_first("attn", attn, rank, "W", op)
    _heads_first("value", value, rank, "D", op)
    out = _AV[rank](_to_heads_last(attn), _to_heads_last(value), kernel_size, dilation,
                    is_causal=is_causal,
                    additional_values=_extra("additional_values", additional_values, op))
    return _to_heads_first(out)


# ------------------------------------------------------------------ unfused ops (heads-first)

def _make_qk(rank: int, doc: str):
    def qk(query: Tensor, key: Tensor, kernel_size, dilation=1,
           additional_keys: Optional[Tensor] = None, is_causal=False,
           rpb: Optional[Tensor] = None) -> Tensor:
        return _qk(rank, query, key, kernel_size, dilation, additional_keys, is_causal, rpb)
    qk.__name__ = qk.__qualname__ = f"na{rank}d_qk"
    qk.__doc__ = doc
    return qk


def _make_av(rank: int, doc: str):
    def av(attn: Tensor, value: Tensor, kernel_size, dilation=1,
           additional_values: Optional[Tensor] = None, is_causal=False) -> Tensor:
        return _av(rank, attn, value, kernel_size, dilation, additional_values, is_causal)
    av.__name__ = av.__qualname__ = f"na{rank}d_av"
    av.__doc__ = doc
    return av


na1d_qk = _make_qk(1, "query/key [B, H, L, D] -> attn [B, H, L, K (+ N_extra)]; no softmax scale "
                      "applied.")
na1d_av = _make_av(1, "attn [B, H, L, K (+ N_extra)], value [B, H, L, D] -> [B, H, L, D].")
na2d_qk = _make_qk(2, "query/key [B, H, X, Y, D] -> attn [B, H, X, Y, Kx*Ky (+ N_extra)].")
na2d_av = _make_av(2, "attn [B, H, X, Y, Kx*Ky (+ N_extra)], value [B, H, X, Y, D] -> "
                      "[B, H, X, Y, D].")
na3d_qk = _make_qk(3, "query/key [B, H, X, Y, Z, D] -> attn [B, H, X, Y, Z, Kx*Ky*Kz "
                      "(+ N_extra)].")
na3d_av = _make_av(3, "attn [B, H, X, Y, Z, Kx*Ky*Kz (+ N_extra)], value [B, H, X, Y, Z, D] -> "
                      "same as value.")


# ------------------------------------------------------------ fused ops (0.17: heads-last)

def _fused(rank, query, key, value, kernel_size, dilation, is_causal, rpb, scale):
    if any(isinstance(t, torch.Tensor) and t.is_nested for t in (query, key, value)):
        raise NotImplementedError(f"na{rank}d: nested tensors are not supported")
    if rpb is None:
        from .._api import neighborhood_attention
        # NATTEN 0.17 treated scale=None (and 0) as "default"; keep that.
        return neighborhood_attention(query, key, value, kernel_size, 1, dilation, is_causal,
                                      scale or None)
    if not isinstance(query, torch.Tensor):
        raise TypeError(f"na{rank}d: query must be a torch.Tensor, got {type(query).__name__}")
    scale = scale or query.shape[-1] ** -0.5
    attn = _QK[rank](query * scale, key, kernel_size, dilation, is_causal=is_causal, rpb=rpb)
    probs = torch.softmax(attn, dim=-1, dtype=torch.float32 if attn.dtype in
                          (torch.float16, torch.bfloat16) else attn.dtype)
    return _AV[rank](probs, value, kernel_size, dilation, is_causal=is_causal)


def _make_fused(rank: int, layout: str):
    def fused(query: Tensor, key: Tensor, value: Tensor, kernel_size, dilation=1, is_causal=False,
              rpb: Optional[Tensor] = None, scale: Optional[float] = None) -> Tensor:
        return _fused(rank, query, key, value, kernel_size, dilation, is_causal, rpb, scale)
    fused.__name__ = fused.__qualname__ = f"na{rank}d"
    fused.__doc__ = f"Fused-API {rank}D NA, heads-last {layout} like NATTEN 0.17's na{rank}d."
    return fused


na1d = _make_fused(1, "[B, L, H, D]")
na2d = _make_fused(2, "[B, X, Y, H, D]")
na3d = _make_fused(3, "[B, X, Y, Z, H, D]")


# -------------------------------------------------- deprecated ops (NATTEN <= 0.14 names)

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
