"""FlexAttention with a neighborhood-attention ``mask_mod``: the dense-kernel competitor of
docs/PERFORMANCE.md section 1, used by the profiler and the benchmarks.

The mask is docs/SEMANTICS.md sections 3-5 written with tensor ops so that FlexAttention can trace it
(no Python branching on tensor values). FlexAttention tensors are heads-first [B, H, N, D] with
the spatial axes flattened row-major.
"""
from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import Callable, Sequence

import torch

__all__ = ["na_mask_mod", "na_block_mask", "make_flex_na", "flex_na"]


def _axis_neighbor(i, j, L, K, s, d, causal):
    """docs/SEMANTICS.md sections 3-5 on one axis: is key j in query i's window? (tensor ops)."""
    g = i % d
    il = i // d
    group_len = (L - g + d - 1) // d
    base = (il // s) * s
    if causal:
        leader = torch.minimum(base + (s - 1), group_len - 1)
        start = torch.clamp(leader - K + 1, min=0)
        end = torch.minimum(il + 1, group_len)
    else:
        leader = torch.minimum(base + s // 2, group_len - 1)
        start = torch.clamp(torch.minimum(leader - K // 2, group_len - K), min=0)
        end = start + K
    jl = j // d
    return (j % d == g) & (start <= jl) & (jl < end)


def na_mask_mod(shape: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                dilation: Sequence[int], causal: Sequence[bool]) -> Callable:
    """mask_mod(b, h, q_idx, kv_idx) -> bool tensor for flattened row-major token indices."""
    shape, kernel, stride, dilation, causal = map(tuple, (shape, kernel, stride, dilation, causal))
    strides_flat = [prod(shape[a + 1:]) for a in range(len(shape))]

    def mask_mod(b, h, q_idx, kv_idx):
        ok = None
        for a, L in enumerate(shape):
            qi = (q_idx // strides_flat[a]) % L
            kj = (kv_idx // strides_flat[a]) % L
            m = _axis_neighbor(qi, kj, L, kernel[a], stride[a], dilation[a], causal[a])
            ok = m if ok is None else ok & m
        return ok

    return mask_mod


def na_block_mask(shape, kernel, stride, dilation, causal, device="cuda"):
    """FlexAttention BlockMask of the NA problem (built once per problem, reused per call)."""
    from torch.nn.attention.flex_attention import create_block_mask
    n = prod(shape)
    # _compile=True builds the block mask block by block; the eager path materializes the full
    # N x N mask (1.2 TB for the hunyuan anchor case).
    return create_block_mask(na_mask_mod(shape, kernel, stride, dilation, causal), B=None,
                             H=None, Q_LEN=n, KV_LEN=n, device=device, _compile=True)


# Every problem (shape, block mask, mask_mod closure) is a new dynamo specialization of
# flex_attention. Past torch's recompile limit (8 by default) dynamo silently runs
# flex_attention eagerly, which materializes scores and is 10-100x slower: a benchmark
# sweeping more than 8 cases in one process would then time the eager fallback (the H100 run
# at 4d94b8f did, for dinat and nat-13). Raise the limits once, before the first compile.
_FLEX_RECOMPILE_LIMIT = 1024


def _raise_recompile_limits():
    import torch._dynamo.config as cfg
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                 "accumulated_recompile_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), _FLEX_RECOMPILE_LIMIT))


@lru_cache(maxsize=16)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    _raise_recompile_limits()
    return torch.compile(flex_attention, dynamic=False)


def make_flex_na(problem, device="cuda", compile: bool = True):
    """fn(q, k, v) on heads-first [B, H, N, D] tensors running FlexAttention with the NA mask of
    `problem` (anything with shape, kernel, stride, dilation and causal attributes, e.g. a
    fastna.presets.Problem or benchmarks' Case)."""
    block_mask = na_block_mask(problem.shape, problem.kernel, problem.stride, problem.dilation,
                               problem.causal, device=device)
    if compile:
        flex = _compiled_flex()
    else:
        from torch.nn.attention.flex_attention import flex_attention as flex
    return lambda q, k, v, scale=None: flex(q, k, v, block_mask=block_mask, scale=scale)


def flex_na(problem, device="cuda", compile: bool = True):
    """Like make_flex_na but on heads-last [B, *spatial, H, D] tensors (fastna's layout)."""
    fn = make_flex_na(problem, device=device, compile=compile)

    def run(q, k, v, scale=None):
        b, h, d = q.shape[0], q.shape[-2], q.shape[-1]
        qt, kt, vt = (t.reshape(b, -1, t.shape[-2], t.shape[-1]).transpose(1, 2)
                      for t in (q, k, v))
        out = fn(qt, kt, vt, scale=scale)
        return out.transpose(1, 2).reshape(*q.shape[:-1], v.shape[-1])
    return run
