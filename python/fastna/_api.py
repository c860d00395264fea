"""Public functional API: na1d / na2d / na3d / neighborhood_attention."""
from __future__ import annotations

import os
from typing import Optional

import torch

from . import _ops
from . import backends as _backends
from ._args import normalize


_EAGER_CUSTOM_OP = os.environ.get("FASTNA_EAGER_CUSTOM_OP", "0") not in ("", "0")


def _autocast_dtype(query):
    """The autocast dtype active for query's device type, or None."""
    if not isinstance(query, torch.Tensor):
        return None
    device_type = query.device.type
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _cast(t, dtype):
    # What autocast does to a lower-precision op's inputs: floating tensors other than
    # float64 go to the autocast dtype.
    if isinstance(t, torch.Tensor) and t.is_floating_point() and \
            t.dtype not in (torch.float64, dtype):
        return t.to(dtype)
    return t


def _run(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale,
         additional_keys, additional_values, return_lse, backend):
    dtype = _autocast_dtype(query)
    if dtype is None:
        return _dispatch(rank, query, key, value, kernel_size, stride, dilation, is_causal,
                         scale, additional_keys, additional_values, return_lse, backend)
    # Autocast: inputs in the autocast dtype, the backend (and its backward) with autocast
    # off, so the kernels see one dtype and the reference keeps its fp32 math.
    query, key, value, additional_keys, additional_values = (
        _cast(t, dtype) for t in (query, key, value, additional_keys, additional_values))
    with torch.autocast(query.device.type, enabled=False):
        return _dispatch(rank, query, key, value, kernel_size, stride, dilation, is_causal,
                         scale, additional_keys, additional_values, return_lse, backend)


def _dispatch(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale,
              additional_keys, additional_values, return_lse, backend):
    params = normalize(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                       additional_keys, additional_values, rank=rank)
    if not isinstance(return_lse, bool):
        raise TypeError(f"return_lse must be a bool, got {return_lse!r}")
    if torch.compiler.is_compiling():
        # select() calls into fastna._C and torch.cuda, which dynamo cannot trace: decide
        # once at trace time on the tensors' specs (fastna._ops.select_traced).
        specs = tuple(_ops.spec(t) for t in (query, key, value, additional_keys,
                                             additional_values))
        name = _ops.select_traced(backend, specs, params.kernel, params.stride,
                                  params.dilation, params.causal, torch.is_grad_enabled())
        if name.startswith("!"):
            _ops.raise_selection_error(name)
        mod = _backends.get(name)
    else:
        mod = _backends.select(backend, query, key, value, params, additional_keys,
                               additional_values)
    if mod.name in _ops.OP_BACKENDS and (torch.compiler.is_compiling() or _EAGER_CUSTOM_OP):
        # Under torch.compile the CUDA backends run as the custom op fastna::na_forward (one
        # opaque node with a registered backward). Eager calls skip it: the op's Python
        # dispatch costs ~250 us a call on the H100 host (benchmarks/results/
        # dispatch_overhead_*), more than the kernel of a small problem, and every backend's
        # forward() is differentiable on its own. FASTNA_EAGER_CUSTOM_OP=1 restores the op.
        return _ops.run(query, key, value, params, additional_keys, additional_values,
                        return_lse, mod.name)
    return mod.forward(query, key, value, params, additional_keys, additional_values,
                       return_lse=return_lse)


def neighborhood_attention(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False,
                           scale: Optional[float] = None, additional_keys=None,
                           additional_values=None, return_lse: bool = False,
                           backend: Optional[str] = None):
    """Neighborhood attention over 1 to 3 spatial axes (rank = query.dim() - 3).

    query [B, *spatial, H, D]; key [B, *spatial, H_kv, D]; value [B, *spatial, H_kv, Dv];
    H_kv divides H (GQA/MQA). kernel_size, stride, dilation: int or per-axis tuple;
    is_causal: bool or per-axis tuple. additional_keys/values [B, N_extra, H_kv, D/Dv] are
    attended by every query. Returns out [B, *spatial, H, Dv], plus the fp32 natural-log
    logsumexp [B, *spatial, H] when return_lse. backend: None picks the fastest available
    one that supports the call; see fastna.available_backends(). The lse of the "naive"
    backend is not differentiable (backpropagating a nonzero gradient through it raises);
    the reference's and the fused backend's are.

    torch.compile: traceable with fullgraph=True on every backend (the CUDA backends are the
    custom ops fastna::na_forward / na_backward, see fastna._ops; the backend is chosen at
    trace time). Autocast: under torch.autocast for query's device type (cuda or cpu),
    floating inputs other than float64 are cast to the autocast dtype first, so the output
    is in the autocast dtype (the reference still accumulates in fp32 internally).
    """
    return _run(None, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                additional_keys, additional_values, return_lse, backend)


def _ranked(rank):
    def fn(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
           additional_keys=None, additional_values=None, return_lse=False, backend=None):
        return _run(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                    additional_keys, additional_values, return_lse, backend)

    fn.__name__ = fn.__qualname__ = f"na{rank}d"
    fn.__doc__ = (f"{rank}D neighborhood attention: query [B, {', '.join('XYZ'[:rank])}, H, D]. "
                  f"See fastna.neighborhood_attention for the arguments.")
    return fn


na1d = _ranked(1)
na2d = _ranked(2)
na3d = _ranked(3)
