"""The oracle: neighborhood attention written literally from docs/SEMANTICS.md sections 3-5.

Pure PyTorch, any device, any float dtype (computes in fp32, or fp64 for fp64 inputs).
Memory-bounded: queries are processed in spatial tiles (boxes); each tile only looks at the
box of keys spanned by the union of its windows, so no N x N score matrix is ever built.
With autograd, each tile runs under torch.utils.checkpoint so the backward is bounded too.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch.utils.checkpoint import checkpoint

from ._args import NAParams
from .index_math import absolute_key_bounds, window, window_vectors

__all__ = ["attention", "window", "plan_tiles", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 256 << 20


def _axis_mask(start, end, d, q0, q1, k0, k1) -> torch.Tensor:
    """Rule 3 on one axis: [q1 - q0, k1 - k0] bool, queries/keys in absolute coordinates.

    start/end: the axis' window vectors (group-local, one entry per query).
    """
    device = start.device
    i = torch.arange(q0, q1, device=device)[:, None]
    j = torch.arange(k0, k1, device=device)[None, :]
    jl = j // d
    return (j % d == i % d) & (start[q0:q1, None] <= jl) & (jl < end[q0:q1, None])


def _segments(L: int, tile: int, lo: Sequence[int], hi: Sequence[int]):
    """Split an axis into query tiles of `tile`, each with the key range its windows need."""
    out = []
    for q0 in range(0, L, tile):
        q1 = min(q0 + tile, L)
        out.append((q0, q1, min(lo[q0:q1]), max(hi[q0:q1])))
    return out


def _tile_cost(rank, tile, bounds, lengths, heads, heads_kv, dim, dim_v, extra, elem):
    """Peak bytes of one tile for one batch element (scores, probs, mask; K/V box; q/out)."""
    qn, kn = 1, 1
    for a in range(rank):
        segs = _segments(lengths[a], tile[a], *bounds[a])
        qn *= tile[a]
        kn *= max(k1 - k0 for _, _, k0, k1 in segs)
    scores = 3 * heads * qn * (kn + extra) * elem + qn * kn
    kv = (kn + extra) * heads_kv * (dim + dim_v) * elem
    qo = qn * heads * (dim + dim_v) * elem
    return scores + kv + qo


def plan_tiles(params: NAParams, lengths, heads, heads_kv, dim, dim_v, extra, elem, batch,
               max_bytes=DEFAULT_MAX_BYTES) -> Tuple[List[int], int, int]:
    """Choose (query-tile shape, batch chunk, kv-head chunk) so one step stays under max_bytes.

    For each kv-head chunk (halving), shrink the tile greedily: halve the axis whose tile is
    largest relative to its window extent, since that axis wastes the least key box per query
    removed. Among the candidates keep the one with the fewest steps (Python-loop iterations).
    """
    rank = params.rank
    bounds = [absolute_key_bounds(lengths[a], params.kernel[a], params.stride[a],
                                  params.dilation[a], params.causal[a]) for a in range(rank)]
    extent = [params.kernel[a] * params.dilation[a] for a in range(rank)]
    group = heads // heads_kv
    best = None
    hc = heads_kv
    while True:
        def cost(t):
            return _tile_cost(rank, t, bounds, lengths, hc * group, hc, dim, dim_v, extra, elem)

        tile = list(lengths)
        while cost(tile) > max_bytes and any(t > 1 for t in tile):
            a = max((a for a in range(rank) if tile[a] > 1), key=lambda a: tile[a] / extent[a])
            tile[a] = (tile[a] + 1) // 2
        c = cost(tile)
        chunk = max(1, min(batch, max_bytes // max(c, 1)))
        steps = (-(-batch // chunk) * -(-heads_kv // hc)
                 * math.prod([-(-lengths[a] // tile[a]) for a in range(rank)]))
        if best is None or steps < best[0]:
            best = (steps, tile, chunk, hc)
        if hc == 1:
            break
        hc = (hc + 1) // 2
    return best[1], best[2], best[3]


def _tile_forward(q, k, v, ek, ev, params: NAParams, tables, qbox, kbox, compute_dtype):
    """Attention of the queries in box qbox against keys in box kbox (+ extras).

    Returns out [B, Qt, H, Dv] (compute dtype) and lse [B, Qt, H].
    """
    rank = params.rank
    B, H, D = q.shape[0], q.shape[-2], q.shape[-1]
    Hkv, Dv = k.shape[-2], v.shape[-1]
    G = H // Hkv
    qs = (slice(None),) + tuple(slice(a, b) for a, b in qbox)
    ks = (slice(None),) + tuple(slice(a, b) for a, b in kbox)
    qt = q[qs].to(compute_dtype).reshape(B, -1, Hkv, G, D)
    kt = k[ks].to(compute_dtype).reshape(B, -1, Hkv, D)
    vt = v[ks].to(compute_dtype).reshape(B, -1, Hkv, Dv)
    Qt, Kb = qt.shape[1], kt.shape[1]

    # Neighborhood = Cartesian product over axes, i.e. the per-axis masks combined by broadcasting.
    mask = None
    for a in range(rank):
        m = _axis_mask(tables[a][0], tables[a][1], params.dilation[a],
                       qbox[a][0], qbox[a][1], kbox[a][0], kbox[a][1])
        shape = [1] * (2 * rank)
        shape[a] = m.shape[0]
        shape[rank + a] = m.shape[1]
        m = m.reshape(shape)
        mask = m if mask is None else mask & m
    mask = mask.reshape(Qt, Kb)

    scores = torch.einsum("bqhgd,bkhd->bhgqk", qt, kt) * params.scale
    scores = scores.masked_fill(~mask, float("-inf"))
    if ek is not None:
        ekt = ek.to(compute_dtype)
        evt = ev.to(compute_dtype)
        scores = torch.cat([scores, torch.einsum("bqhgd,behd->bhgqe", qt, ekt) * params.scale], -1)
    lse = torch.logsumexp(scores, dim=-1)
    p = torch.exp(scores - lse[..., None])
    out = torch.einsum("bhgqk,bkhd->bqhgd", p[..., :Kb], vt)
    if ek is not None:
        out = out + torch.einsum("bhgqe,behd->bqhgd", p[..., Kb:], evt)
    return out.reshape(B, Qt, H, Dv), lse.permute(0, 3, 1, 2).reshape(B, Qt, H)


def attention(query, key, value, params: NAParams, additional_keys=None, additional_values=None,
              return_lse: bool = False, max_bytes: Optional[int] = None):
    """Reference neighborhood attention. `params` comes from fastna._args.normalize.

    Returns out [B, *spatial, H, Dv] in the input dtype, and with return_lse the logsumexp
    [B, *spatial, H] (natural log; fp32, fp64 for fp64 inputs).
    """
    max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    rank = params.rank
    lengths = tuple(query.shape[1:rank + 1])
    if params.length and tuple(params.length) != lengths:
        raise ValueError(f"params.length {params.length} does not match query spatial shape "
                         f"{lengths}")
    params = NAParams(rank, params.kernel, params.stride, params.dilation, params.causal,
                      params.scale, lengths)
    B, H, D = query.shape[0], query.shape[-2], query.shape[-1]
    Hkv, Dv = key.shape[-2], value.shape[-1]
    compute_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    ek, ev = additional_keys, additional_values
    if ek is not None and ek.shape[1] == 0:
        ek = ev = None
    E = 0 if ek is None else ek.shape[1]

    if B == 0:
        out = query.new_empty((0, *lengths, H, Dv))
        lse = query.new_empty((0, *lengths, H), dtype=compute_dtype)
        return (out, lse) if return_lse else out

    elem = torch.finfo(compute_dtype).bits // 8
    tile, chunk, hchunk = plan_tiles(params, lengths, H, Hkv, D, Dv, E, elem, B, max_bytes)
    G = H // Hkv
    bounds = [absolute_key_bounds(lengths[a], params.kernel[a], params.stride[a],
                                  params.dilation[a], params.causal[a]) for a in range(rank)]
    tables = [window_vectors(lengths[a], params.kernel[a], params.stride[a], params.dilation[a],
                             params.causal[a], device=query.device) for a in range(rank)]
    segs = [_segments(lengths[a], tile[a], *bounds[a]) for a in range(rank)]
    boxes = [[]]
    for a in range(rank):
        boxes = [b + [s] for b in boxes for s in segs[a]]

    tensors = [t for t in (query, key, value, ek, ev) if t is not None]
    use_ckpt = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)

    outs, lses = [], []
    for b0 in range(0, B, chunk):
        bsl = slice(b0, min(b0 + chunk, B))
        qb, kb, vb = query[bsl], key[bsl], value[bsl]
        ekb = None if ek is None else ek[bsl]
        evb = None if ev is None else ev[bsl]
        tile_out, tile_lse = [], []
        for box in boxes:
            qbox = [(s[0], s[1]) for s in box]
            kbox = [(s[2], s[3]) for s in box]
            head_out, head_lse = [], []
            for h0 in range(0, Hkv, hchunk):
                # kv heads [h0, h1) serve query heads [h0*G, h1*G) (query head h uses h // G)
                h1 = min(h0 + hchunk, Hkv)
                qh = slice(h0 * G, h1 * G)
                kh = slice(h0, h1)
                args = (qb[..., qh, :], kb[..., kh, :], vb[..., kh, :],
                        None if ekb is None else ekb[..., kh, :],
                        None if evb is None else evb[..., kh, :])

                def run(q_, k_, v_, ek_, ev_, qbox=qbox, kbox=kbox):
                    return _tile_forward(q_, k_, v_, ek_, ev_, params, tables, qbox, kbox,
                                         compute_dtype)

                if use_ckpt:
                    o, l = checkpoint(run, *args, use_reentrant=False)
                else:
                    o, l = run(*args)
                # cast per tile: the assembled output then costs input-dtype bytes, not fp32
                head_out.append(o.to(query.dtype))
                head_lse.append(l)
            tile_out.append(torch.cat(head_out, 2) if len(head_out) > 1 else head_out[0])
            tile_lse.append(torch.cat(head_lse, 2) if len(head_lse) > 1 else head_lse[0])
        outs.append(torch.cat(tile_out, 1))
        lses.append(torch.cat(tile_lse, 1))
    out = torch.cat(outs, 0)
    lse = torch.cat(lses, 0)

    if len(boxes) > 1:
        # Tiles were concatenated tile by tile; one gather restores row-major token order.
        flat = torch.arange(math.prod(lengths), device=query.device).reshape(lengths)
        order = torch.cat([flat[tuple(slice(s[0], s[1]) for s in box)].reshape(-1)
                           for box in boxes])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=query.device)
        out = out.index_select(1, inverse)
        lse = lse.index_select(1, inverse)
    out = out.reshape(B, *lengths, H, Dv)
    lse = lse.reshape(B, *lengths, H)
    return (out, lse) if return_lse else out
