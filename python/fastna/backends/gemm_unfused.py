"""GEMM-based CUDA backend of the unfused qk / av ops (`fastna.ops_unfused`), backend="gemm".

The kernels behind it (include/fastna/gemm: PN = qk, NN = av, IN = inverse neighborhood;
`fastna._C.gemm_qk / gemm_av / gemm_inverse`) are built when FASTNA_KERNELS includes `gemm_na`
(op gemm_na of the kernel table).  GemmBackend is registered as the unfused backend "gemm"
(backends/__init__.py); backend=None prefers it for every call `check()` accepts, and falls back
to the reference otherwise.

Semantics are those of the reference backend (ops_unfused): qk writes q . k (+ rpb) per window
slot in the input dtype (no softmax scale), -inf in causal slots past the window end; av ignores
those slots. Autograd (no double backward):

    qk:  dq = NN(dattn, K)           (gemm_av with x = K, D columns)
         dk = IN(dattn, Q)           (gemm_inverse with x = Q; sums the GQA group)
         drpb[h, j' - i' + K - 1] += sum_b dattn[b, i, h, w]   (torch index_add in fp32)
    av:  dattn = PN(dout, V)         (gemm_qk with (dout, V) as (q, k), no rpb, Dv columns;
                                      its -inf causal slots are replaced by 0)
         dv = IN(attn, dout)         (gemm_inverse with x = dout; sums the GQA group)

Supported (check() names what is not): CUDA tensors, float16 / bfloat16 / float32 (attn is cast
to the value dtype, rpb to the query dtype as in the reference), no additional keys / values,
head dim (D for qk, Dv for av) among the compiled gemm_na head dims for (rank, dtype) on this
device, and whatever else can_implement("gemm_na", ...) requires (grid limits). Anything else falls back to the reference under backend=None.

float32 runs on TF32 tensor cores (operands rounded to TF32, fp32 accumulation, fp32 attn), like
NATTEN's GEMM-based fp32 path and torch matmuls with allow_tf32: expect relative errors around
1e-4 to 1e-3, not fp32 round-off. So float32 is taken only while
torch.backends.cuda.matmul.allow_tf32 is True (torch's switch for TF32 matmuls; off by
default): otherwise backend=None falls back to the reference and backend="gemm" raises.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .. import _ext
from ..reference_unfused import Plan
from .. import _table
from ._layout import stream

name = "gemm"

_DT = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}


def gemm_instances():
    """The gemm_na rows of the kernel table ([] without any)."""
    return [r for r in _ext.kernel_table() if r["op"] == _table.GEMM]


def head_dims(rank: int, dtype: torch.dtype, device: torch.device):
    return {int(r["head_dim"]) for r in _table.rows(_table.GEMM, rank, dtype, device)}


def available() -> bool:
    return _table.runnable_here(_table.GEMM)


def check(op, tensors, kernel, dilation, causal) -> Optional[str]:
    rank = len(kernel)
    # (Arguments arrive validated by fastna._args: same devices, matching shapes.)
    if op == "qk":
        query, key, rpb, extra = tensors
        main, hd = query, query.shape[-1]
        others = [key] + ([] if rpb is None else [rpb])
    else:
        attn, value, extra = tensors
        main, hd = value, value.shape[-1]
        others = [attn]
    if extra is not None:
        return "additional keys / values are not supported by the gemm kernels"
    if main.device.type != "cuda":
        return "needs CUDA tensors"
    if main.dtype not in _DT:
        return f"dtype {main.dtype} not supported (float16, bfloat16, float32)"
    if main.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        # TF32 math only where torch's own matmuls would use it.
        return ("float32 runs on TF32 tensor cores in the gemm kernels and "
                "torch.backends.cuda.matmul.allow_tf32 is False (set it to True to use them; "
                "backend='reference' computes in full float32)")
    if main.numel() == 0 or any(t.numel() == 0 for t in others):
        return "empty tensors"
    dims = head_dims(rank, main.dtype, main.device)
    if hd not in dims:
        return (f"head dim {hd} has no gemm_na instance for rank {rank}, {_DT[main.dtype]} on this "
                f"device (built: {sorted(dims) or 'none'}; rebuild with FASTNA_KERNELS including gemm_na "
                f"and FASTNA_HEAD_DIMS including it)")
    B, lengths = main.shape[0], tuple(main.shape[1:rank + 1])
    H = (attn if op == "av" else query).shape[-2]
    Hkv = main.shape[-2] if op == "av" else key.shape[-2]
    pd = _params(main.dtype, B, lengths, H, Hkv, hd, hd, kernel, dilation, causal)
    pd["tile"] = _tile(rank, main.dtype, main.device, hd)
    return _ext.can_implement(_table.GEMM, pd) or None


def _tile(rank, dtype, device, head_dim):
    found = [r["tile"] for r in _table.rows(_table.GEMM, rank, dtype, device)
             if int(r["head_dim"]) == head_dim]
    return found[0] if found else "default"


def _targ(t: torch.Tensor):
    # torch calls a tensor contiguous whatever the strides of its extent-1 dims (a 1-head
    # slice of a [B, heads, ...] layout keeps its old head stride); the binding wants the
    # packed strides of contiguous operands, which are equally valid for such a tensor.
    if t.is_contiguous():
        strides, acc = [], 1
        for n in reversed(t.shape):
            strides.append(acc)
            acc *= n
        return (t.data_ptr(), strides[::-1])
    return (t.data_ptr(), list(t.stride()))


def _params(dtype, B, lengths, H, Hkv, dim, dim_v, kernel, dilation, causal):
    r = len(lengths)
    return {"dtype": _DT[dtype], "batch": B, "heads": H, "heads_kv": Hkv, "dim": dim, "dim_v": dim_v,
            "num_extra": 0, "scale": 1.0, "length": list(lengths), "kernel": list(kernel),
            "stride": [1] * r, "dilation": list(dilation), "causal": [bool(c) for c in causal]}


def pn(q, k, rpb, kernel, dilation, causal):
    """attn [B, *S, H, prod(K)] = PN(q, k) (+ rpb); dim = q.shape[-1]."""
    rank = len(kernel)
    B, lengths, H, D = q.shape[0], tuple(q.shape[1:rank + 1]), q.shape[-2], q.shape[-1]
    attn = q.new_empty((B, *lengths, H, math.prod(kernel)))
    p = _params(q.dtype, B, lengths, H, k.shape[-2], D, D, kernel, dilation, causal)
    _ext.load().gemm_qk(p, _targ(q), _targ(k), None if rpb is None else _targ(rpb), _targ(attn),
                        stream(q.device))
    return attn


def gather(inverse, attn, x, heads_out, kernel, dilation, causal):
    """NN: out [B, *S, H, Dx] from attn and x [B, *S, H_kv, Dx]; IN: out [B, *S, H_kv, Dx] from
    attn [.., H, W] and x [B, *S, H, Dx]."""
    rank = len(kernel)
    B, lengths, H, Dx = x.shape[0], tuple(x.shape[1:rank + 1]), attn.shape[-2], x.shape[-1]
    Hkv = heads_out if inverse else x.shape[-2]
    out = x.new_empty((B, *lengths, heads_out, Dx))
    p = _params(x.dtype, B, lengths, H, Hkv, Dx, Dx, kernel, dilation, causal)
    fn = _ext.load().gemm_inverse if inverse else _ext.load().gemm_av
    fn(p, _targ(attn), _targ(x), _targ(out), stream(x.device))
    return out


def has_softmax_kernels() -> bool:
    """Whether the compiled module has the softmax kernels of backend "gemm" (gemm_softmax)."""
    C = _ext.load()
    return C is not None and hasattr(C, "gemm_softmax")


def softmax_(attn, scale, dim, kernel, dilation, causal, need_lse):
    """attn <- softmax(scale * attn) over the window slots in place (fp32 math, -inf slots -> 0);
    returns lse = logsumexp(scale * attn) (fp32 [B, *S, H]) when need_lse, else None.
    dim: the head dim of the instance that runs it (any compiled one of rank and dtype)."""
    rank = len(kernel)
    B, lengths, H = attn.shape[0], tuple(attn.shape[1:rank + 1]), attn.shape[-2]
    lse = attn.new_empty((B, *lengths, H), dtype=torch.float32) if need_lse else None
    p = _params(attn.dtype, B, lengths, H, H, dim, dim, kernel, dilation, causal)
    p["scale"] = float(scale)
    _ext.load().gemm_softmax(p, _targ(attn), None if lse is None else _targ(lse), stream(attn.device))
    return lse


def softmax_backward_(attn, dattn, lse, delta, scale, dim, kernel, dilation, causal):
    """In place: attn (logits s) -> P = exp(scale s - lse); dattn (dP) -> dS = scale P (dP - delta)
    (0 where P = 0, so the -inf causal slots of dP do no harm); lse, delta fp32 [B, *S, H]."""
    rank = len(kernel)
    B, lengths, H = attn.shape[0], tuple(attn.shape[1:rank + 1]), attn.shape[-2]
    p = _params(attn.dtype, B, lengths, H, H, dim, dim, kernel, dilation, causal)
    p["scale"] = float(scale)
    _ext.load().gemm_softmax_backward(p, _targ(attn), _targ(dattn), _targ(lse), _targ(delta),
                                      stream(attn.device))


class _GemmQK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, rpb, kernel, dilation, causal):
        q, k = q.contiguous(), k.contiguous()
        rpb_c = None if rpb is None else rpb.to(q.dtype).contiguous()
        attn = pn(q, k, rpb_c, kernel, dilation, causal)
        ctx.save_for_backward(q, k)
        ctx.cfg = (kernel, dilation, causal)
        ctx.rpb_meta = None if rpb is None else (rpb.shape, rpb.dtype)
        return attn

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dattn):
        q, k = ctx.saved_tensors
        kernel, dilation, causal = ctx.cfg
        g = dattn.to(q.dtype).contiguous()
        need_q, need_k, need_rpb = ctx.needs_input_grad[:3]
        dq = gather(False, g, k, q.shape[-2], kernel, dilation, causal) if need_q else None
        dk = gather(True, g, q, k.shape[-2], kernel, dilation, causal) if need_k else None
        drpb = None
        if need_rpb and ctx.rpb_meta is not None:
            drpb = _rpb_grad(g, kernel, dilation, causal, *ctx.rpb_meta)
        return dq, dk, drpb, None, None, None


def _rpb_grad(g, kernel, dilation, causal, shape, dtype):
    rank = len(kernel)
    B, lengths, H, W = g.shape[0], tuple(g.shape[1:rank + 1]), g.shape[-2], g.shape[-1]
    plan = Plan(lengths, kernel, dilation, causal, g.device, True)
    gs = g.reshape(B, plan.n, H, W)
    drpb = torch.zeros((H, math.prod(2 * k - 1 for k in kernel)), dtype=torch.float32, device=g.device)
    for n0, n1, _, _, rel in plan.chunks(B * W * H):
        vals = gs[:, n0:n1].float().sum(0).permute(1, 0, 2).reshape(H, -1)
        drpb.index_add_(1, rel.reshape(-1), vals)
    return drpb.reshape(shape).to(dtype)


class _GemmAV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attn, v, kernel, dilation, causal):
        attn, v = attn.contiguous(), v.contiguous()
        out = gather(False, attn, v, attn.shape[-2], kernel, dilation, causal)
        ctx.save_for_backward(attn, v)
        ctx.cfg = (kernel, dilation, causal)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        attn, v = ctx.saved_tensors
        kernel, dilation, causal = ctx.cfg
        g = dout.to(v.dtype).contiguous()
        need_a, need_v = ctx.needs_input_grad[:2]
        da = dv = None
        if need_a:
            da = pn(g, v, None, kernel, dilation, causal)
            if any(causal):
                # PN writes -inf into the causal slots past the window end; their gradient is 0.
                da = da.masked_fill(torch.isneginf(da), 0)
        if need_v:
            dv = gather(True, attn, g, v.shape[-2], kernel, dilation, causal)
        return da, dv, None, None, None


class GemmBackend:
    """The unfused backend "gemm" (backends/_protocol.py UnfusedBackend)."""

    name = name
    available = staticmethod(available)
    check = staticmethod(check)

    @staticmethod
    def qk(query, key, kernel, dilation, causal, rpb, additional_keys):
        assert additional_keys is None
        return _GemmQK.apply(query, key, rpb, tuple(kernel), tuple(dilation), tuple(causal))

    @staticmethod
    def av(attn, value, kernel, dilation, causal, additional_values):
        assert additional_values is None
        return _GemmAV.apply(attn.to(value.dtype), value, tuple(kernel), tuple(dilation), tuple(causal))

