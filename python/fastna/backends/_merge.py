"""Additional KV tokens outside a kernel: attention to them with torch, merged through the lse.

A backend whose kernel only covers the neighborhood runs it for (out_na, lse_na), then calls
attend_and_merge() for the tokens every query sees:

    s_e   = scale * q . ek_e                      (fp32 accumulation, fp64 for fp64 inputs)
    lse_x = logsumexp_e s_e,  out_x = sum_e exp(s_e - lse_x) ev_e
    lse   = logaddexp(lse_na, lse_x)
    out   = out_na * exp(lse_na - lse) + out_x * exp(lse_x - lse)

which is the softmax over the union of both key sets (the two sets are disjoint).  Everything
is plain differentiable torch, so autograd sends gradients into out_na AND lse_na (the
backend's own autograd must accept a gradient w.r.t. its lse) and into q, ek, ev.

Memory: the scores are B*N*H*N_extra values; the queries are processed in chunks of tokens so
one chunk's fp32 temporaries (scores, probabilities, upcast q/out) stay under max_bytes; with
autograd and more than one chunk, each chunk runs under torch.utils.checkpoint so that the
backward is bounded the same way.
"""
from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

DEFAULT_MAX_BYTES = 256 << 20


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types and float32, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def extra_attention(q, ek, ev, scale, dtype=None):
    """Attention of every query to the extra tokens only.

    q [B, N, H, D], ek [B, E, H_kv, D], ev [B, E, H_kv, Dv] (H_kv divides H; query head h uses
    kv head h // (H / H_kv)).  Returns out_x [B, N, H, Dv] and lse_x [B, N, H] in `dtype`
    (default compute_dtype(q.dtype)).
    """
    dtype = compute_dtype(q.dtype) if dtype is None else dtype
    B, N, H, D = q.shape
    Hkv, Dv = ek.shape[2], ev.shape[-1]
    G = H // Hkv
    qg = q.reshape(B, N, Hkv, G, D).to(dtype)
    s = torch.einsum("bnhgd,behd->bnhge", qg, ek.to(dtype)) * scale
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None])
    out = torch.einsum("bnhge,behd->bnhgd", p, ev.to(dtype))
    return out.reshape(B, N, H, Dv), lse.reshape(B, N, H)


def merge(out_a, lse_a, out_b, lse_b):
    """Softmax over the union of two disjoint key sets from each set's (out, lse).

    Computes in the promoted dtype of the inputs; returns (out, lse) in that dtype.
    """
    lse = torch.logaddexp(lse_a, lse_b)
    wa = torch.exp(lse_a - lse)[..., None]
    wb = torch.exp(lse_b - lse)[..., None]
    return out_a * wa + out_b * wb, lse


def _chunk(q, out_na, lse_na, ek, ev, scale):
    cd = torch.promote_types(compute_dtype(q.dtype), lse_na.dtype)
    out_x, lse_x = extra_attention(q, ek, ev, scale, cd)
    out, lse = merge(out_na.to(cd), lse_na.to(cd), out_x, lse_x)
    return out.to(out_na.dtype), lse.to(lse_na.dtype)


def chunk_tokens(B, N, H, D, Dv, E, elem=4, max_bytes=DEFAULT_MAX_BYTES) -> int:
    """Tokens per chunk so that one chunk's temporaries fit max_bytes (at least 1).

    Per token and head: scores + probabilities (2E), upcast q (D), out_x, upcast out_na and
    the merged out (3 Dv), and a few lse-sized values.
    """
    per_token = B * H * elem * (2 * E + D + 3 * Dv + 4)
    return max(1, min(N, max_bytes // max(per_token, 1)))


def attend_and_merge(query, out_na, lse_na, ek, ev, scale, max_bytes=DEFAULT_MAX_BYTES):
    """Merge the extra tokens into a neighborhood result.

    query [B, *S, H, D] (the caller's, unpadded), out_na [B, *S, H, Dv] (any float dtype),
    lse_na [B, *S, H], ek/ev [B, E, H_kv, D/Dv] with E > 0.  Returns (out, lse) with out in
    out_na's dtype and lse in lse_na's dtype, shapes unchanged.
    """
    B, H, D = query.shape[0], query.shape[-2], query.shape[-1]
    spatial = tuple(query.shape[1:-2])
    N = math.prod(spatial)
    Dv = out_na.shape[-1]
    E = ek.shape[1]
    q = query.reshape(B, N, H, D)
    o = out_na.reshape(B, N, H, Dv)
    l = lse_na.reshape(B, N, H)
    elem = torch.finfo(compute_dtype(query.dtype)).bits // 8
    step = chunk_tokens(B, N, H, D, Dv, E, elem, max_bytes)
    if step >= N:
        out, lse = _chunk(q, o, l, ek, ev, scale)
    else:
        use_ckpt = torch.is_grad_enabled() and any(
            t.requires_grad for t in (q, o, l, ek, ev))
        outs, lses = [], []
        for n0 in range(0, N, step):
            args = (q[:, n0:n0 + step], o[:, n0:n0 + step], l[:, n0:n0 + step], ek, ev)
            if use_ckpt:
                oc, lc = checkpoint(_chunk, *args, scale, use_reentrant=False)
            else:
                oc, lc = _chunk(*args, scale)
            outs.append(oc)
            lses.append(lc)
        out, lse = torch.cat(outs, 1), torch.cat(lses, 1)
    return out.reshape(B, *spatial, H, Dv), lse.reshape(B, *spatial, H)
