"""Unfused neighborhood attention: QK (attention weights) and AV as separate ops.

These are the legacy (NATTEN <= 0.17) building blocks of docs/SEMANTICS.md section 8, in the heads-last
layout of section 1:

    naNd_qk(query [B, *S, H, D], key [B, *S, H_kv, D]) -> weights [B, *S, H, prod(K) (+ E)]
    naNd_av(weights [B, *S, H, prod(K) (+ E)], value [B, *S, H_kv, Dv]) -> out [B, *S, H, Dv]

Slot w < prod(K) of the weights is window position (k_1, ..., k_r), row-major; on axis a it is
the key at group-local index start_a + k_a. QK applies no softmax scale (callers scale q), adds
the optional relative positional bias, and writes -inf into causal slots that fall outside the
window; AV ignores those slots. The E trailing slots, present when additional keys are given,
belong to tokens every query sees (NATTEN's "additional_keys"/"additional_values").

Backends come from the one backend registry (fastna.backends, kind "unfused"): "reference"
(pure PyTorch, fastna/reference_unfused.py) and "gemm" (the CUDA GEMM kernels of a build with
gemm_na, backends/gemm_unfused.py); backend=None takes the first available one whose check()
accepts the call.  Arguments are validated by fastna._args (normalize_qk / normalize_av).
"""
from __future__ import annotations

from typing import List, Optional

from . import _args
from . import _registry

__all__ = [
    "na1d_qk", "na2d_qk", "na3d_qk", "na1d_av", "na2d_av", "na3d_av",
    "available_backends", "register_backend", "unregister_backend",
]

KIND = "unfused"


def register_backend(impl, priority: int = 0) -> None:
    """Plug in an unfused backend (backends/_protocol.py UnfusedBackend: name, available(),
    check(op, tensors, kernel, dilation, causal) -> None | reason, qk, av)."""
    _registry.register(impl, priority, kind=KIND)


def unregister_backend(name: str) -> None:
    if name == "reference":
        raise ValueError("the reference unfused backend cannot be unregistered")
    _registry.unregister(name, kind=KIND)


def available_backends() -> List[str]:
    return _registry.available(KIND)


def _select(backend, op, tensors, kernel, dilation, causal):
    if backend is None:
        for n in _registry.order(KIND):
            impl = _registry.lookup(n, KIND)
            if impl.available() and impl.check(op, tensors, kernel, dilation, causal) is None:
                return impl
        return _registry.lookup("reference", KIND)
    impl = _registry.get(backend, KIND)
    reason = impl.check(op, tensors, kernel, dilation, causal)
    if reason is not None:
        raise NotImplementedError(f"backend={backend!r} cannot run this call: {reason}")
    return impl


def _qk(rank, query, key, kernel_size, dilation, is_causal, rpb, additional_keys, backend):
    kernel, dil, causal = _args.normalize_qk(rank, query, key, kernel_size, dilation,
                                             is_causal, rpb, additional_keys, backend)
    impl = _select(backend, "qk", (query, key, rpb, additional_keys), kernel, dil, causal)
    return impl.qk(query, key, kernel, dil, causal, rpb, additional_keys)


def _av(rank, attn, value, kernel_size, dilation, is_causal, additional_values, backend):
    kernel, dil, causal = _args.normalize_av(rank, attn, value, kernel_size, dilation,
                                             is_causal, additional_values, backend)
    impl = _select(backend, "av", (attn, value, additional_values), kernel, dil, causal)
    return impl.av(attn, value, kernel, dil, causal, additional_values)


_QK_DOC = """{rank}D neighborhood attention weights (unfused QK), heads-last.

query [B, {axes}, H, D], key [B, {axes}, H_kv, D] (H_kv divides H) -> attn
[B, {axes}, H, prod(kernel_size) (+ N_extra)].  attn[..., w] = q . k of window slot w
(row-major over the per-axis window positions), without softmax scale; causal slots outside
the window hold -inf.  rpb [H, 2K_1-1, ...] (odd kernel, non-causal) adds rpb[h, j' - i' + K - 1]
in group-local coordinates.  additional_keys [B, N_extra, H_kv, D] append N_extra columns
seen by every query.  backend: None (best available), 'reference', or 'gemm' (CUDA GEMM
kernels of a build with gemm_na; float32 runs on TF32 tensor cores).
"""

_AV_DOC = """{rank}D neighborhood attention output from weights (unfused AV), heads-last.

attn [B, {axes}, H, prod(kernel_size) (+ N_extra)], value [B, {axes}, H_kv, Dv] -> out
[B, {axes}, H, Dv], out = sum_w attn[..., w] v[neighbor w].  Causal slots outside the window
contribute nothing whatever they hold (-inf included).  additional_values [B, N_extra, H_kv,
Dv] take the last N_extra columns of attn.
"""


def na1d_qk(query, key, kernel_size, dilation=1, is_causal=False, rpb=None,
            additional_keys=None, backend: Optional[str] = None):
    return _qk(1, query, key, kernel_size, dilation, is_causal, rpb, additional_keys, backend)


def na2d_qk(query, key, kernel_size, dilation=1, is_causal=False, rpb=None,
            additional_keys=None, backend: Optional[str] = None):
    return _qk(2, query, key, kernel_size, dilation, is_causal, rpb, additional_keys, backend)


def na3d_qk(query, key, kernel_size, dilation=1, is_causal=False, rpb=None,
            additional_keys=None, backend: Optional[str] = None):
    return _qk(3, query, key, kernel_size, dilation, is_causal, rpb, additional_keys, backend)


def na1d_av(attn, value, kernel_size, dilation=1, is_causal=False, additional_values=None,
            backend: Optional[str] = None):
    return _av(1, attn, value, kernel_size, dilation, is_causal, additional_values, backend)


def na2d_av(attn, value, kernel_size, dilation=1, is_causal=False, additional_values=None,
            backend: Optional[str] = None):
    return _av(2, attn, value, kernel_size, dilation, is_causal, additional_values, backend)


def na3d_av(attn, value, kernel_size, dilation=1, is_causal=False, additional_values=None,
            backend: Optional[str] = None):
    return _av(3, attn, value, kernel_size, dilation, is_causal, additional_values, backend)


for _rank, _fn in enumerate((na1d_qk, na2d_qk, na3d_qk), 1):
    _fn.__doc__ = _QK_DOC.format(rank=_rank, axes=", ".join("XYZ"[:_rank]))
for _rank, _fn in enumerate((na1d_av, na2d_av, na3d_av), 1):
    _fn.__doc__ = _AV_DOC.format(rank=_rank, axes=", ".join("XYZ"[:_rank]))
