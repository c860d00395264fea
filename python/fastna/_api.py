"""Public functional API: neighborhood_attention, na1d / na2d / na3d, explain.

All of them are one generic call (fastna._dispatch.attention; with head_groups,
fastna._heads.attention); na1d / na2d / na3d only fix the rank, so a call of the wrong rank
fails with the expected number of dims.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

from torch import Tensor

from . import _args, _dispatch, _heads, _policy, _rpb

IntOrTuple = Union[int, Sequence[int]]
BoolOrTuple = Union[bool, Sequence[bool]]
Output = Union[Tensor, Tuple[Tensor, Tensor]]
HeadGroups = Optional[Sequence[int]]


def neighborhood_attention(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrTuple,
                           stride: IntOrTuple = 1, dilation: IntOrTuple = 1,
                           is_causal: BoolOrTuple = False, scale: Optional[float] = None,
                           additional_keys: Optional[Tensor] = None,
                           additional_values: Optional[Tensor] = None,
                           return_lse: bool = False,
                           backend: Optional[str] = None,
                           head_groups: HeadGroups = None,
                           rpb: Optional[Tensor] = None) -> Output:
    """Neighborhood attention over 1 to 3 spatial axes (rank = query.dim() - 3).

    query [B, *spatial, H, D]; key [B, *spatial, H_kv, D]; value [B, *spatial, H_kv, Dv];
    H_kv divides H (GQA/MQA). kernel_size, stride, dilation: int or per-axis tuple;
    is_causal: bool or per-axis tuple. additional_keys/values [B, N_extra, H_kv, D/Dv] are
    attended by every query. Returns out [B, *spatial, H, Dv], plus the fp32 natural-log
    logsumexp [B, *spatial, H] when return_lse. backend: None picks the fastest available
    one that supports the call (fastna.explain says which and why); see
    fastna.available_backends(). The lse of the "naive" backend is not differentiable
    (backpropagating a nonzero gradient through it raises); the reference's and the fused
    backend's are.

    torch.compile: traceable with fullgraph=True on every backend (the CUDA backends are the
    custom ops fastna::na_forward / na_backward, see fastna._ops; the backend is chosen at
    trace time). Autocast: under torch.autocast for query's device type (cuda or cpu),
    floating inputs other than float64 are cast to the autocast dtype first, so the output
    is in the autocast dtype (the reference still accumulates in fp32 internally).

    head_groups: None, or the query heads split into consecutive groups given as head counts
    summing to H (e.g. [4, 4]); under GQA a group covers whole key/value heads or lies inside
    one.  kernel_size, stride, dilation and is_causal may then each be a *list* with one entry
    (a value or a per-axis tuple) per group; anything else (an int, a bool, a tuple) is shared
    by every group.  Each group computes exactly what this function computes on its heads
    alone (its key/value heads, their additional keys/values, the shared scale); out and lse
    keep the head order.  backend="fused" runs every group in one launch where the grouped
    kernels are built, otherwise one call per group of consecutive heads with equal parameters
    (docs/GUIDE.md, "Per-head-group windows"; fastna._heads).

    rpb: None, or NATTEN's relative positional bias [H, 2K_1 - 1, ...] added to the scaled
    logits (query i, key j: rpb[h, j' - i' + K - 1] per axis, group-local); odd kernel sizes,
    non-causal, stride 1, no head_groups.  It runs the unfused path (qk with the bias ->
    softmax -> av; backend None, "gemm" or "reference"), with gradients into rpb.
    """
    return _attention(None, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                      additional_keys, additional_values, return_lse, backend, head_groups, rpb)


def _attention(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale,
               additional_keys, additional_values, return_lse, backend, head_groups, rpb):
    """The one body of the public calls; rank None: any (query.dim() - 3)."""
    if rpb is not None:
        return _rpb.attention(rank, query, key, value, kernel_size, stride, dilation, is_causal,
                              scale, additional_keys, additional_values, return_lse, backend, rpb,
                              head_groups)
    if head_groups is not None:
        return _heads.attention(rank, query, key, value, head_groups, kernel_size, stride,
                                dilation, is_causal, scale, additional_keys, additional_values,
                                return_lse, backend)
    return _dispatch.attention(rank, query, key, value, kernel_size, stride, dilation, is_causal,
                               scale, additional_keys, additional_values, return_lse, backend)


def na1d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrTuple,
         stride: IntOrTuple = 1, dilation: IntOrTuple = 1, is_causal: BoolOrTuple = False,
         scale: Optional[float] = None, additional_keys: Optional[Tensor] = None,
         additional_values: Optional[Tensor] = None, return_lse: bool = False,
         backend: Optional[str] = None, head_groups: HeadGroups = None,
         rpb: Optional[Tensor] = None) -> Output:
    """1D neighborhood attention: query [B, X, H, D], key [B, X, H_kv, D], value
    [B, X, H_kv, Dv] -> out [B, X, H, Dv] (and lse [B, X, H] when return_lse).

    kernel_size, stride, dilation: an int (or a 1-tuple); is_causal likewise.  Window
    placement, stride, dilation and causal masks: docs/SEMANTICS.md.  See
    fastna.neighborhood_attention for every argument.
    """
    return _attention(1, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                      additional_keys, additional_values, return_lse, backend, head_groups, rpb)


def na2d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrTuple,
         stride: IntOrTuple = 1, dilation: IntOrTuple = 1, is_causal: BoolOrTuple = False,
         scale: Optional[float] = None, additional_keys: Optional[Tensor] = None,
         additional_values: Optional[Tensor] = None, return_lse: bool = False,
         backend: Optional[str] = None, head_groups: HeadGroups = None,
         rpb: Optional[Tensor] = None) -> Output:
    """2D neighborhood attention: query [B, X, Y, H, D], key [B, X, Y, H_kv, D], value
    [B, X, Y, H_kv, Dv] -> out [B, X, Y, H, Dv] (and lse [B, X, Y, H] when return_lse).

    kernel_size, stride, dilation: an int or one per axis (X, Y); is_causal likewise.
    See fastna.neighborhood_attention for every argument.
    """
    return _attention(2, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                      additional_keys, additional_values, return_lse, backend, head_groups, rpb)


def na3d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrTuple,
         stride: IntOrTuple = 1, dilation: IntOrTuple = 1, is_causal: BoolOrTuple = False,
         scale: Optional[float] = None, additional_keys: Optional[Tensor] = None,
         additional_values: Optional[Tensor] = None, return_lse: bool = False,
         backend: Optional[str] = None, head_groups: HeadGroups = None,
         rpb: Optional[Tensor] = None) -> Output:
    """3D neighborhood attention: query [B, X, Y, Z, H, D], key [B, X, Y, Z, H_kv, D], value
    [B, X, Y, Z, H_kv, Dv] -> out [B, X, Y, Z, H, Dv] (and lse [B, X, Y, Z, H] when
    return_lse).

    kernel_size, stride, dilation: an int or one per axis (X, Y, Z); is_causal likewise.
    See fastna.neighborhood_attention for every argument.
    """
    return _attention(3, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                      additional_keys, additional_values, return_lse, backend, head_groups, rpb)


def explain(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrTuple,
            stride: IntOrTuple = 1, dilation: IntOrTuple = 1, is_causal: BoolOrTuple = False,
            scale: Optional[float] = None, additional_keys: Optional[Tensor] = None,
            additional_values: Optional[Tensor] = None, return_lse: bool = False,
            backend: Optional[str] = None, head_groups: HeadGroups = None,
            rpb: Optional[Tensor] = None) -> str:
    """Which backend, kernel and tile fastna.neighborhood_attention would run for these
    arguments (in the current grad mode), and why the alternatives were not taken, as text.

    Runs nothing; raises what the call would raise for bad arguments or an explicit backend
    that cannot run it.  The policy it applies is documented in fastna._policy.
    """
    if rpb is not None:
        return _rpb.explain(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                            additional_keys, additional_values, backend, rpb, head_groups)
    if head_groups is not None:
        return _heads.explain(query, key, value, head_groups, kernel_size, stride, dilation,
                              is_causal, scale, additional_keys, additional_values, return_lse,
                              backend)
    params = _args.normalize(query, key, value, kernel_size, stride, dilation, is_causal,
                             scale, additional_keys, additional_values)
    _args.check_return_lse(return_lse)
    _args.check_backend_arg(backend)
    return _policy.explain(query, key, value, params, additional_keys, additional_values,
                           backend)
