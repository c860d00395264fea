"""Public functional API: na1d / na2d / na3d / neighborhood_attention."""
from __future__ import annotations

from typing import Optional

from . import backends as _backends
from ._args import normalize


def _run(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale,
         additional_keys, additional_values, return_lse, backend):
    params = normalize(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                       additional_keys, additional_values, rank=rank)
    if not isinstance(return_lse, bool):
        raise TypeError(f"return_lse must be a bool, got {return_lse!r}")
    mod = _backends.select(backend, query, key, value, params, additional_keys, additional_values)
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
    backend is not differentiable (backpropagating through it raises); the reference's is.
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
