"""Variable-size batches: packed samples of different spatial shapes (and, optionally, their own
window parameters) in one call.

    out = fastna.neighborhood_attention_varlen(q, k, v, spatial_shapes, kernel_size, stride=1,
                                               dilation=1, is_causal=False, scale=None,
                                               return_lse=False, backend=None)

q [total_tokens, H, D], k [total_tokens, H_kv, D], v [total_tokens, H_kv, Dv]: sample after
sample, each sample's tokens in row-major order of its spatial shape.  spatial_shapes: a list of
shapes (tuples, one rank for all) or an integer tensor [B, rank].  kernel_size, stride, dilation,
is_causal: an int / bool / per-axis tuple shared by every sample, or a *list* with one such entry
per sample.  Each sample means exactly what fastna.neighborhood_attention means on that sample
alone.  Returns out [total_tokens, H, Dv] (and lse [total_tokens, H] with return_lse).

Backends: "reference" (the oracle: pure PyTorch, one call per sample, autograd through it).  The
single-launch fused / Hopper varlen kernels are not built yet: asking for any other backend by
name raises NotImplementedError, and backend=None runs the reference.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _args
from . import reference as _reference

PerSample = Union[int, bool, Sequence[int], Sequence[bool], list]
VARLEN_BACKENDS = ("reference",)

__all__ = ["neighborhood_attention_varlen", "VARLEN_BACKENDS"]


def neighborhood_attention_varlen(query: Tensor, key: Tensor, value: Tensor, spatial_shapes,
                                  kernel_size: PerSample, stride: PerSample = 1,
                                  dilation: PerSample = 1, is_causal: PerSample = False,
                                  scale: Optional[float] = None, return_lse: bool = False,
                                  backend: Optional[str] = None
                                  ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Neighborhood attention over a packed batch of samples of different spatial shapes (see
    the module docstring for the layout and the per-sample parameters)."""
    _args.check_backend_arg(backend)
    _args.check_return_lse(return_lse)
    if backend is not None and backend not in VARLEN_BACKENDS:
        raise NotImplementedError(
            f"backend={backend!r} has no variable-size (packed) kernels yet; varlen backends: "
            f"{', '.join(VARLEN_BACKENDS)} (backend=None runs the reference)")
    samples = _args.normalize_varlen(query, key, value, spatial_shapes, kernel_size, stride,
                                     dilation, is_causal, scale)
    outs, lses = [], []
    for s in samples:
        out, lse = _reference.attention(*s.tensors, s.params, return_lse=True)
        outs.append(out.reshape(s.tokens, *out.shape[-2:]))
        lses.append(lse.reshape(s.tokens, lse.shape[-1]))
    out = torch.cat(outs).to(query.dtype)
    return (out, torch.cat(lses)) if return_lse else out
