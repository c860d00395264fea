"""Unfused neighborhood attention: QK (attention weights) and AV as separate ops.

These are the legacy (NATTEN <= 0.17) building blocks of DESIGN.md section 2, in the heads-last
layout of section 1:

    naNd_qk(query [B, *S, H, D], key [B, *S, H_kv, D]) -> weights [B, *S, H, prod(K) (+ E)]
    naNd_av(weights [B, *S, H, prod(K) (+ E)], value [B, *S, H_kv, Dv]) -> out [B, *S, H, Dv]

Slot w < prod(K) of the weights is window position (k_1, ..., k_r), row-major; on axis a it is
the key at group-local index start_a + k_a. QK applies no softmax scale (callers scale q), adds
the optional relative positional bias, and writes -inf into causal slots that fall outside the
window; AV ignores those slots. The E trailing slots, present when additional keys are given,
belong to tokens every query sees (NATTEN's "additional_keys"/"additional_values").

The "reference" backend below is pure PyTorch: neighbors are gathered through an int64
[queries, prod(K)] index built per chunk of queries from tiny per-axis tables, so nothing of
size N^2 exists, and its autograd Functions save their inputs rather than the gathered
neighbors (backward regathers chunk by chunk), so training memory is that of the weights.
CUDA backends (the GEMM kernels) register through `register_backend`.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ._args import check_float_tensor, check_window, normalize, per_axis_bools, per_axis_ints
from .index_math import window_vectors

__all__ = [
    "na1d_qk", "na2d_qk", "na3d_qk", "na1d_av", "na2d_av", "na3d_av",
    "available_backends", "register_backend",
]

# Elements of the gathered key/value block one chunk of queries may materialize (peak extra
# memory of forward and backward alike).
_CHUNK_ELEMS = 1 << 24


# --------------------------------------------------------------------------------------------
# Index tables
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=256)
def _axis_tables_cpu(L: int, K: int, d: int, causal: bool):
    """Per-axis tables, each [L, K]: absolute key index, slot validity, RPB offset index.

    Invalid (causal, beyond the window end) slots point at the query itself so that every
    gather index is in range; their weights are masked separately.
    """
    start, end = window_vectors(L, K, 1, d, causal)
    i = torch.arange(L, dtype=torch.int64)
    il, g = i // d, i % d
    jl = start[:, None] + torch.arange(K, dtype=torch.int64)[None, :]
    valid = jl < end[:, None]
    key = torch.where(valid, jl, il[:, None]) * d + g[:, None]
    rel = jl - il[:, None] + (K - 1)
    return key, valid, rel


_device_tables: Dict[tuple, tuple] = {}


def _axis_tables(L: int, K: int, d: int, causal: bool, device: torch.device):
    if device.type == "cpu":
        return _axis_tables_cpu(L, K, d, causal)
    cache_key = (L, K, d, causal, str(device))
    hit = _device_tables.get(cache_key)
    if hit is None:
        if len(_device_tables) > 256:
            _device_tables.clear()
        hit = tuple(t.to(device) for t in _axis_tables_cpu(L, K, d, causal))
        _device_tables[cache_key] = hit
    return hit


class _Plan:
    """Neighborhood index of one problem (lengths, kernel, dilation, causal) on one device."""

    def __init__(self, lengths, kernel, dilation, causal, device, with_rpb: bool):
        self.rank = len(lengths)
        self.lengths = tuple(lengths)
        self.kernel = tuple(kernel)
        self.n = math.prod(lengths)
        self.w = math.prod(kernel)
        self.any_causal = any(causal)
        self.tables = [_axis_tables(lengths[a], kernel[a], dilation[a], causal[a], device)
                       for a in range(self.rank)]
        self.device = device
        self.with_rpb = with_rpb

    def _combine(self, per_axis: Sequence[torch.Tensor], coords, strides, op):
        # Cartesian product of per-axis [n, K_a] tables -> [n, K_1, ..., K_r] -> [n, W].
        r = self.rank
        out = None
        for a in range(r):
            t = per_axis[a][coords[a]]
            shape = [t.shape[0]] + [1] * r
            shape[1 + a] = self.kernel[a]
            t = t.reshape(shape)
            if strides is not None:
                t = t * strides[a]
            out = t if out is None else op(out, t)
        return out.reshape(out.shape[0], -1)

    def chunk(self, n0: int, n1: int):
        """(key index [n, W], valid [n, W] or None, rpb index [n, W] or None) for queries n0:n1."""
        flat = torch.arange(n0, n1, device=self.device, dtype=torch.int64)
        coords = []
        for L in reversed(self.lengths):
            coords.append(flat % L)
            flat = flat // L
        coords.reverse()
        key_strides = [math.prod(self.lengths[a + 1:]) for a in range(self.rank)]
        idx = self._combine([t[0] for t in self.tables], coords, key_strides, torch.add)
        valid = None
        if self.any_causal:
            valid = self._combine([t[1] for t in self.tables], coords, None, torch.logical_and)
        rel = None
        if self.with_rpb:
            sizes = [2 * k - 1 for k in self.kernel]
            rel_strides = [math.prod(sizes[a + 1:]) for a in range(self.rank)]
            rel = self._combine([t[2] for t in self.tables], coords, rel_strides, torch.add)
        return idx, valid, rel


def _chunk_size(n: int, per_query: int) -> int:
    return max(1, min(n, _CHUNK_ELEMS // max(per_query, 1)))


# --------------------------------------------------------------------------------------------
# Reference backend
# --------------------------------------------------------------------------------------------

def _index_add(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    # Out of place only when building a graph (double backward); in place otherwise.
    if torch.is_grad_enabled():
        return out.index_add(1, index, src)
    return out.index_add_(1, index, src)


class _QK(torch.autograd.Function):
    """Window dot products; saves q and k (not their gathered neighbors) and regathers per
    chunk in backward, so training memory is that of the weights, like NATTEN's kernels."""

    @staticmethod
    def forward(ctx, q, k, rpb_flat, plan):
        # q [B, N, Hkv, G, D], k [B, N, Hkv, D], rpb_flat [H, prod(2K-1)] or None
        B, N, Hkv, G, D = q.shape
        H, W = Hkv * G, plan.w
        attn = q.new_empty((B, N, H, W))
        step = _chunk_size(N, B * W * Hkv * D)
        for n0 in range(0, N, step):
            n1 = min(n0 + step, N)
            idx, valid, rel = plan.chunk(n0, n1)
            k_nb = k.index_select(1, idx.reshape(-1)).reshape(B, n1 - n0, W, Hkv, D)
            s = torch.einsum("bnhgd,bnwhd->bnhgw", q[:, n0:n1], k_nb).reshape(B, n1 - n0, H, W)
            if rel is not None:
                # bias[n, h, w] = rpb[h, rel[n, w]]
                bias = rpb_flat.index_select(1, rel.reshape(-1)).reshape(H, n1 - n0, W)
                s = s + bias.permute(1, 0, 2)
            if valid is not None:
                s = s.masked_fill(~valid[:, None, :], float("-inf"))
            attn[:, n0:n1] = s
        ctx.save_for_backward(q, k)
        ctx.plan = plan
        ctx.rpb_shape = None if rpb_flat is None else rpb_flat.shape
        return attn

    @staticmethod
    def backward(ctx, dattn):
        q, k = ctx.saved_tensors
        plan = ctx.plan
        B, N, Hkv, G, D = q.shape
        W = plan.w
        need_q, need_k, need_rpb = ctx.needs_input_grad[:3]
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        drpb = (dattn.new_zeros(ctx.rpb_shape) if need_rpb and ctx.rpb_shape is not None
                else None)
        step = _chunk_size(N, B * W * Hkv * D)
        for n0 in range(0, N, step):
            n1 = min(n0 + step, N)
            idx, valid, rel = plan.chunk(n0, n1)
            g = dattn[:, n0:n1]
            if valid is not None:
                g = g.masked_fill(~valid[:, None, :], 0)  # -inf outputs are constants
            flat = idx.reshape(-1)
            g5 = g.reshape(B, n1 - n0, Hkv, G, W)
            if need_q:
                k_nb = k.index_select(1, flat).reshape(B, n1 - n0, W, Hkv, D)
                dq[:, n0:n1] = torch.einsum("bnhgw,bnwhd->bnhgd", g5, k_nb)
            if need_k:
                contrib = torch.einsum("bnhgw,bnhgd->bnwhd", g5, q[:, n0:n1])
                dk = _index_add(dk, flat, contrib.reshape(B, -1, Hkv, D))
            if drpb is not None and rel is not None:
                vals = g.sum(0).permute(1, 0, 2).reshape(Hkv * G, -1)
                drpb = _index_add(drpb, rel.reshape(-1), vals)
        return dq, dk, drpb, None


class _AV(torch.autograd.Function):
    """Weighted sum of window values; saves attn and v, regathers per chunk in backward."""

    @staticmethod
    def forward(ctx, attn, v, plan):
        # attn [B, N, Hkv, G, W], v [B, N, Hkv, Dv]
        B, N, Hkv, G, W = attn.shape
        Dv = v.shape[-1]
        out = v.new_empty((B, N, Hkv, G, Dv))
        step = _chunk_size(N, B * W * Hkv * Dv)
        for n0 in range(0, N, step):
            n1 = min(n0 + step, N)
            idx, valid, _ = plan.chunk(n0, n1)
            w = attn[:, n0:n1]
            if valid is not None:
                # Zero, not multiply: invalid slots usually hold -inf (or its softmax, 0), and
                # 0 * -inf would be NaN.
                w = w.masked_fill(~valid[:, None, None, :], 0)
            v_nb = v.index_select(1, idx.reshape(-1)).reshape(B, n1 - n0, W, Hkv, Dv)
            out[:, n0:n1] = torch.einsum("bnhgw,bnwhd->bnhgd", w, v_nb)
        ctx.save_for_backward(attn, v)
        ctx.plan = plan
        return out

    @staticmethod
    def backward(ctx, dout):
        attn, v = ctx.saved_tensors
        plan = ctx.plan
        B, N, Hkv, G, W = attn.shape
        Dv = v.shape[-1]
        need_a, need_v = ctx.needs_input_grad[:2]
        da = torch.zeros_like(attn) if need_a else None
        dv = torch.zeros_like(v) if need_v else None
        step = _chunk_size(N, B * W * Hkv * Dv)
        for n0 in range(0, N, step):
            n1 = min(n0 + step, N)
            idx, valid, _ = plan.chunk(n0, n1)
            flat = idx.reshape(-1)
            g = dout[:, n0:n1]
            if need_a:
                v_nb = v.index_select(1, flat).reshape(B, n1 - n0, W, Hkv, Dv)
                d = torch.einsum("bnhgd,bnwhd->bnhgw", g, v_nb)
                if valid is not None:
                    d = d.masked_fill(~valid[:, None, None, :], 0)
                da[:, n0:n1] = d
            if need_v:
                w = attn[:, n0:n1]
                if valid is not None:
                    w = w.masked_fill(~valid[:, None, None, :], 0)
                contrib = torch.einsum("bnhgw,bnhgd->bnwhd", w, g)
                dv = _index_add(dv, flat, contrib.reshape(B, -1, Hkv, Dv))
        return da, dv, None


class _ReferenceBackend:
    name = "reference"

    @staticmethod
    def available() -> bool:
        return True

    @staticmethod
    def check(op: str, tensors, kernel, dilation, causal) -> Optional[str]:
        return None

    @staticmethod
    def qk(query, key, kernel, dilation, causal, rpb, additional_keys):
        rank = len(kernel)
        B, H, D = query.shape[0], query.shape[-2], query.shape[-1]
        Hkv = key.shape[-2]
        G = H // Hkv
        lengths = tuple(query.shape[1:rank + 1])
        plan = _Plan(lengths, kernel, dilation, causal, query.device, rpb is not None)
        q = query.reshape(B, plan.n, Hkv, G, D)
        k = key.reshape(B, plan.n, Hkv, D)
        rpb_flat = None if rpb is None else rpb.to(query.dtype).reshape(H, -1)
        attn = _QK.apply(q, k, rpb_flat, plan)
        if additional_keys is not None:
            extra = torch.einsum("bnhgd,behd->bnhge", q, additional_keys).reshape(
                B, plan.n, H, additional_keys.shape[1])
            attn = torch.cat([attn, extra], -1)
        return attn.reshape(B, *lengths, H, -1)

    @staticmethod
    def av(attn, value, kernel, dilation, causal, additional_values):
        rank = len(kernel)
        B, H = attn.shape[0], attn.shape[-2]
        Hkv, Dv = value.shape[-2], value.shape[-1]
        G = H // Hkv
        lengths = tuple(attn.shape[1:rank + 1])
        plan = _Plan(lengths, kernel, dilation, causal, attn.device, False)
        a = attn.to(value.dtype).reshape(B, plan.n, Hkv, G, attn.shape[-1])
        v = value.reshape(B, plan.n, Hkv, Dv)
        out = _AV.apply(a[..., :plan.w], v, plan)
        if additional_values is not None:
            out = out + torch.einsum("bnhge,behd->bnhgd", a[..., plan.w:], additional_values)
        return out.reshape(B, *lengths, H, Dv)


# Every name users may pass; "gemm" (CUDA GEMM-based NA, backends/gemm_unfused.py) registers at
# the end of this module when the build has gemm_na instances.
KNOWN = ("reference", "gemm")
_BACKENDS: Dict[str, object] = {"reference": _ReferenceBackend}
# backend=None takes the first available one whose check() accepts the call.
_PRIORITY: List[str] = ["gemm", "reference"]


def register_backend(impl, priority: int = 0) -> None:
    """Plug in an unfused backend.

    `impl` provides name, available() -> bool, check(op, tensors, kernel, dilation, causal)
    -> None | reason str, and qk/av with the reference backend's signatures (arguments already
    validated and normalized to per-axis tuples, heads-last layout).
    """
    _BACKENDS[impl.name] = impl
    if impl.name in _PRIORITY:
        _PRIORITY.remove(impl.name)
    _PRIORITY.insert(priority, impl.name)


def unregister_backend(name: str) -> None:
    if name == "reference":
        raise ValueError("the reference unfused backend cannot be unregistered")
    _BACKENDS.pop(name, None)
    if name in _PRIORITY and name not in KNOWN:
        _PRIORITY.remove(name)


def available_backends() -> List[str]:
    return [n for n in _PRIORITY if n in _BACKENDS and _BACKENDS[n].available()]


def _select(backend, op, tensors, kernel, dilation, causal):
    if backend is None:
        for n in _PRIORITY:
            impl = _BACKENDS.get(n)
            if impl is not None and impl.available() and \
                    impl.check(op, tensors, kernel, dilation, causal) is None:
                return impl
        return _ReferenceBackend
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str or None, got {backend!r} of type "
                        f"{type(backend).__name__}")
    known = list(dict.fromkeys(list(KNOWN) + list(_BACKENDS)))
    if backend not in known:
        raise ValueError(f"unknown backend={backend!r} for the unfused ops; known: "
                         f"{', '.join(known)}")
    impl = _BACKENDS.get(backend)
    if impl is None or not impl.available():
        raise NotImplementedError(f"unfused backend {backend!r} is not available in this build "
                                  f"(not implemented yet); available: "
                                  f"{', '.join(available_backends())}")
    reason = impl.check(op, tensors, kernel, dilation, causal)
    if reason is not None:
        raise NotImplementedError(f"backend={backend!r} cannot run this call: {reason}")
    return impl


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

def _check_rpb(rpb, query, kernel, causal) -> None:
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


def _check_backend_arg(backend) -> None:
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a str or None, got {backend!r} of type "
                        f"{type(backend).__name__}")


# --------------------------------------------------------------------------------------------
# Public ops
# --------------------------------------------------------------------------------------------

def _qk(rank, query, key, kernel_size, dilation, is_causal, rpb, additional_keys, backend):
    _check_backend_arg(backend)
    params = normalize(query, key, key, kernel_size, 1, dilation, is_causal, rank=rank)
    kernel, dil, causal = params.kernel, params.dilation, params.causal
    if rpb is not None:
        _check_rpb(rpb, query, kernel, causal)
    if additional_keys is not None:
        _check_extra("additional_keys", additional_keys, "query", query, key.shape[-2],
                     query.shape[-1])
    impl = _select(backend, "qk", (query, key, rpb, additional_keys), kernel, dil, causal)
    return impl.qk(query, key, kernel, dil, causal, rpb, additional_keys)


def _av(rank, attn, value, kernel_size, dilation, is_causal, additional_values, backend):
    _check_backend_arg(backend)
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
    impl = _select(backend, "av", (attn, value, additional_values), kernel, dil, causal)
    return impl.av(attn, value, kernel, dil, causal, additional_values)


def _make_qk(rank: int) -> Callable:
    def qk(query, key, kernel_size, dilation=1, is_causal=False, rpb=None, additional_keys=None,
           backend: Optional[str] = None):
        return _qk(rank, query, key, kernel_size, dilation, is_causal, rpb, additional_keys,
                   backend)

    axes = ", ".join("XYZ"[:rank])
    qk.__name__ = qk.__qualname__ = f"na{rank}d_qk"
    qk.__doc__ = (
        f"{rank}D neighborhood attention weights (unfused QK), heads-last.\n\n"
        f"query [B, {axes}, H, D], key [B, {axes}, H_kv, D] (H_kv divides H) -> attn "
        f"[B, {axes}, H, prod(kernel_size) (+ N_extra)]. attn[..., w] = q . k of window slot w "
        f"(row-major over the per-axis window positions), without softmax scale; causal slots "
        f"outside the window hold -inf. rpb [H, 2K_1-1, ...] (odd kernel, non-causal) adds "
        f"rpb[h, j' - i' + K - 1] in group-local coordinates. additional_keys [B, N_extra, "
        f"H_kv, D] append N_extra columns seen by every query. backend: None (best available), "
        f"'reference', or 'gemm' (CUDA GEMM kernels of a build with gemm_na; float32 runs on "
        f"TF32 tensor cores).")
    return qk


def _make_av(rank: int) -> Callable:
    def av(attn, value, kernel_size, dilation=1, is_causal=False, additional_values=None,
           backend: Optional[str] = None):
        return _av(rank, attn, value, kernel_size, dilation, is_causal, additional_values,
                   backend)

    axes = ", ".join("XYZ"[:rank])
    av.__name__ = av.__qualname__ = f"na{rank}d_av"
    av.__doc__ = (
        f"{rank}D neighborhood attention output from weights (unfused AV), heads-last.\n\n"
        f"attn [B, {axes}, H, prod(kernel_size) (+ N_extra)], value [B, {axes}, H_kv, Dv] -> "
        f"out [B, {axes}, H, Dv], out = sum_w attn[..., w] v[neighbor w]. Causal slots outside "
        f"the window contribute nothing whatever they hold (-inf included). "
        f"additional_values [B, N_extra, H_kv, Dv] take the last N_extra columns of attn.")
    return av


na1d_qk = _make_qk(1)
na2d_qk = _make_qk(2)
na3d_qk = _make_qk(3)
na1d_av = _make_av(1)
na2d_av = _make_av(2)
na3d_av = _make_av(3)


# The GEMM kernels' backend (backends/gemm_unfused.py) registers itself when the build has gemm_na
# instances; without them backend=None uses the reference and backend="gemm" raises.
from .backends import gemm_unfused as _gemm_unfused  # noqa: E402

_gemm_unfused.register()
