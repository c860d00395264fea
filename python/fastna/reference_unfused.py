"""The reference (pure PyTorch) unfused ops: attention weights QK and output AV of
fastna.ops_unfused, for any device and dtype.

Neighbors are gathered through an int64 [queries, prod(K)] index built per chunk of queries
from tiny per-axis tables, so nothing of size N^2 exists, and the autograd Functions save their
inputs rather than the gathered neighbors (backward regathers chunk by chunk), so training
memory is that of the weights.  Plan (the neighborhood index of one problem) is shared with the
GEMM backend's relative-positional-bias gradient.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Dict, Optional, Sequence

import torch

from .index_math import window_vectors

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


class Plan:
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

    def chunks(self, per_query: int):
        """(n0, n1, *chunk(n0, n1)) for consecutive query ranges n0:n1 covering all queries,
        chunk_size(n, per_query) queries each (per_query: elements of work per query)."""
        step = chunk_size(self.n, per_query)
        for n0 in range(0, self.n, step):
            n1 = min(n0 + step, self.n)
            yield (n0, n1) + self.chunk(n0, n1)


def chunk_size(n: int, per_query: int) -> int:
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
        for n0, n1, idx, valid, rel in plan.chunks(B * W * Hkv * D):
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
        for n0, n1, idx, valid, rel in plan.chunks(B * W * Hkv * D):
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
        for n0, n1, idx, valid, _ in plan.chunks(B * W * Hkv * Dv):
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
        for n0, n1, idx, valid, _ in plan.chunks(B * W * Hkv * Dv):
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


class Unfused:
    """The reference backend of the unfused ops (backends/_protocol.py UnfusedBackend)."""

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
        plan = Plan(lengths, kernel, dilation, causal, query.device, rpb is not None)
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
        plan = Plan(lengths, kernel, dilation, causal, attn.device, False)
        a = attn.to(value.dtype).reshape(B, plan.n, Hkv, G, attn.shape[-1])
        v = value.reshape(B, plan.n, Hkv, Dv)
        out = _AV.apply(a[..., :plan.w], v, plan)
        if additional_values is not None:
            out = out + torch.einsum("bnhge,behd->bnhgd", a[..., plan.w:], additional_values)
        return out.reshape(B, *lengths, H, Dv)
