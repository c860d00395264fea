"""FlexAttention with a neighborhood-attention mask_mod: the competitor of DESIGN.md section 4.

The mask is written from DESIGN.md section 1 with tensor ops so that FlexAttention can trace it
(no Python branching on tensor values).
"""
from __future__ import annotations

from functools import lru_cache
from math import prod

import torch


def _axis_neighbor(i, j, L, K, s, d, causal):
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


def na_mask_mod(shape, kernel, stride, dilation, causal):
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


@lru_cache(maxsize=16)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def make_flex_na(case, device="cuda"):
    """Returns fn(q, k, v) on [B, H, N, D] tensors running FlexAttention with the case's NA mask."""
    from torch.nn.attention.flex_attention import create_block_mask
    mask_mod = na_mask_mod(case.shape, case.kernel, case.stride, case.dilation, case.causal)
    block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=case.tokens,
                                   KV_LEN=case.tokens, device=device)
    flex = _compiled_flex()
    return lambda q, k, v: flex(q, k, v, block_mask=block_mask)
