"""A tiny, independent brute-force neighborhood attention for the tests (float64 numpy).

Written from docs/SEMANTICS.md sections 3-5 without sharing code with fastna: per query,
enumerate every key, keep those that pass the neighbor predicate on every axis, dense softmax.
"""
import itertools
import numpy as np


def neighbor_on_axis(L, K, s, d, causal, i, j):
    if i % d != j % d:
        return False
    g = i % d
    size = (L - g + d - 1) // d  # number of positions in i's dilation group
    qi, kj = i // d, j // d
    if causal:
        lead = (qi // s) * s + s - 1
        if lead > size - 1:
            lead = size - 1
        return lead - K + 1 <= kj <= qi
    lead = (qi // s) * s + s // 2
    if lead > size - 1:
        lead = size - 1
    first = lead - K // 2
    if first + K > size:
        first = size - K
    if first < 0:
        first = 0
    return first <= kj < first + K


def neighbors(shape, kernel, stride, dilation, causal, query):
    """Key coordinates (tuples) visible to query coordinate `query`."""
    axes = []
    for a, L in enumerate(shape):
        axes.append([j for j in range(L)
                     if neighbor_on_axis(L, kernel[a], stride[a], dilation[a], causal[a],
                                         query[a], j)])
    return list(itertools.product(*axes))


def attention(q, k, v, kernel, stride, dilation, causal, scale=None, ek=None, ev=None):
    """q [B, *S, H, D], k [B, *S, Hkv, D], v [B, *S, Hkv, Dv] numpy -> (out, lse)."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    shape = q.shape[1:-2]
    H, D = q.shape[-2:]
    Hkv = k.shape[-2]
    group = H // Hkv
    scale = D ** -0.5 if scale is None else scale
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    lse = np.zeros(q.shape[:-1])
    for idx in itertools.product(*[range(L) for L in shape]):
        keys = neighbors(shape, kernel, stride, dilation, causal, idx)
        for h in range(H):
            hk = h // group
            qv = q[(slice(None),) + idx + (h,)]                               # [B, D]
            kk = np.stack([k[(slice(None),) + j + (hk,)] for j in keys], 1)  # [B, n, D]
            vv = np.stack([v[(slice(None),) + j + (hk,)] for j in keys], 1)
            if ek is not None:
                kk = np.concatenate([kk, np.asarray(ek, np.float64)[:, :, hk]], 1)
                vv = np.concatenate([vv, np.asarray(ev, np.float64)[:, :, hk]], 1)
            s = np.einsum("bd,bnd->bn", qv, kk) * scale
            m = s.max(1, keepdims=True)
            p = np.exp(s - m)
            z = p.sum(1, keepdims=True)
            out[(slice(None),) + idx + (h,)] = np.einsum("bn,bnd->bd", p / z, vv)
            lse[(slice(None),) + idx + (h,)] = (m + np.log(z))[:, 0]
    return out, lse
