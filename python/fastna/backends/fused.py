"""The fused CUDA backend: fastna._C.fused_forward (sm80-class CuTe kernel, docs/INTERNALS.md).

Forward: include/fastna/fused (one CTA per multi-dimensional query box, online softmax,
neighborhood masking per KV box), float16/bfloat16, and float32 on TF32 tensor cores (below),
head dims compiled into the build
(FASTNA_HEAD_DIMS, default 32/64/128), Dv == D, no additional KV tokens; batch and heads up
to 65535.  The wrapper widens that without new kernels:

- Head dims the build lacks, and Dv != D: q and k are zero-padded along D, v along Dv, to the
  smallest compiled head dim P >= max(D, Dv) (zero columns leave every dot product, hence the
  softmax, unchanged; the output's padded columns are zero and are sliced off).  The softmax
  scale stays the caller's (default D**-0.5 of the original D).  Cost: one padded copy of each
  tensor that needs padding (q, k: B*N*H*P elements; v likewise), the kernel's work at head
  dim P instead of D, and one copy of the output to make the sliced result contiguous.
  Declined (with the reason) only when no compiled head dim is >= max(D, Dv).
- Additional KV tokens ([B, N_extra, H_kv, D/Dv], seen by every query): the kernel computes
  the neighborhood's (out_na, lse_na); attention to the extra tokens is computed with torch
  (fp32 accumulation, chunked over queries to bound memory, see _merge.py) and merged through
  the logsumexp: lse = logaddexp(lse_na, lse_x), out = out_na exp(lse_na - lse) +
  out_x exp(lse_x - lse).  return_lse returns the merged lse.  The merge is differentiable, so
  the backward sends a gradient into the kernel's lse, which the fused backward takes as its
  dlse input (below).

Other problems are declined by check() with the reason, so backend=None falls through to the
naive backend.

float32 runs on TF32 tensor cores (mma.sync m16n8k8): q, k, v and the probabilities are rounded
to TF32 (10-bit mantissa, round to nearest) in registers; accumulation, softmax, out and lse
stay fp32 -- the precision of torch's matmuls with torch.backends.cuda.matmul.allow_tf32, i.e.
relative errors around 1e-4 to 1e-3, not fp32 round-off.  backend="fused" with float32 inputs
always runs it; backend=None picks it only while torch.backends.cuda.matmul.allow_tf32 is True
(check_auto; otherwise float32 goes on to the next backend, "naive" computing in full fp32).
Its gradients run the naive backward (fp32; there is no fp32 fused backward), or the
reference's recomputation where the naive one cannot (a gradient into lse).

Layout: the kernel reads 16-byte chunks, so q/k/v need a contiguous head dim, 16-byte aligned
data pointers and strides that are multiples of 8 elements (16-bit) or 4 (float32).  Slices of a packed qkv
projection ([B, *S, H, 3, D].unbind(-2), [B, *S, 3, H, D].unbind(-3)) meet that without a
copy; a tensor that does not is copied (.contiguous()) before the call, which costs one read
and write of it but keeps the call on the fused kernel.

Backward, in order of preference:

- "fused": fastna._C.fused_backward (include/fastna/fused/backward.hpp: delta preprocess,
  dK/dV over inverse neighborhoods, dQ; default boxes whatever tile the forward used), when a
  fused_bwd instance for (rank, dtype, the padded head dim P) runs on the device (float16 /
  bfloat16 only).  It reads the
  forward's out and lse (saved by the autograd node: one extra B*N*H*P output tensor kept
  alive) and takes a gradient into lse as its dlse input (dS = P (dP - (delta - dlse))), so
  return_lse gradients and the extras merge stay on it.  Workspace: one fp32 [B, *S, H] tensor
  (delta) from torch's allocator.  Deterministic: no atomics; two runs give bitwise identical
  dq/dk/dv.
- "naive": the naive CUDA backward, recomputing the logits from q and k (it is called with
  attn=None; its workspace holds fp32 logits and their gradients, 2 x B*N*H*prod(K) floats),
  when a naive_bwd instance for (rank, dtype) is compiled and that workspace fits in half the
  free GPU memory, and no gradient flows into lse (it has no lse input).
- "reference": the reference's autograd recomputation (fastna.reference under
  torch.utils.checkpoint, memory-bounded, slow).

FASTNA_FUSED_BACKWARD=fused|naive|reference forces one (auto/empty = the order above); a
forced mode that cannot run this call falls back as above (fused -> naive -> reference,
naive -> reference).  Through the custom op (fastna._ops, the public API's path) the fused
backward is called directly on the op's saved out/lse when there are no additional KV tokens
(op_backward), without recomputing the forward.

Tiles: every instance has the per-rank default boxes (1D 64, 2D 8x8, 3D 4x4x4 queries and
keys).  For rank 2 and head dim 128 the build also holds "q16x8_kv4x8" (query box 16x8, KV
box 4x8; faster on large windows per benchmarks/NOTES_fused.md, equal on 13x13), which is
used when present.  Ranks 1 and 2 at head dims 64 and 128 also hold "q128w8" (128-query box
on 8 warps of 16 rows, 64-key KV box, 3-stage K/V pipeline; experimental, for large windows),
which is used only when asked for.  FASTNA_FUSED_TILE=default (or a tile name) overrides the
automatic choice where the tile exists; forward(..., tile=...) asks for one explicitly.
Ranks 1 and 2 also hold "small" (include/fastna/fused/small_window*.hpp: each warp's 16 queries
and their whole key halo in one register tile, one softmax pass; for NAT/DiNAT-size windows):
when the tile is the automatic choice (or "hopper"), the binding runs "small" instead wherever
the windows fit it (small_window_fits; FASTNA_SMALL_WINDOW=0 turns this off).
"""
from __future__ import annotations

import functools
import math
import os

import torch

from .. import _ext
from .. import reference as _reference
from . import _merge
from ._base import Reason, alloc as _alloc, grad_of_out_lse

name = "fused"
DTYPES = (torch.float16, torch.bfloat16, torch.float32)   # float32: TF32 tensor cores
FWD = "fused_fwd"          # kernel name in build_info()
BWD = "fused_bwd"
NAIVE_BWD = "naive_bwd"
BACKWARD_MODES = ("fused", "naive", "reference")
MAX_GRID_YZ = 65535        # batch -> gridDim.z, heads -> gridDim.y
FAST_TILE = "q16x8_kv4x8"
# Experimental 8-warp tile (128-query box, 3-stage K/V pipeline; ranks 1 and 2, head dims 64
# and 128): only on request (tile= / FASTNA_FUSED_TILE), never picked automatically.
WIDE_TILE = "q128w8"
# Query box extents of each tile (kernel_traits.hpp DefaultBox / the generator's variants).
_QBOX = {"default": {1: (64,), 2: (8, 8), 3: (4, 4, 4)}, FAST_TILE: {2: (16, 8)},
         WIDE_TILE: {1: (128,), 2: (16, 8)}}
# Small-window tile (include/fastna/small; ranks 1 and 2): forward() runs it in place of the
# automatic tile or "hopper" when fastna._C.can_implement takes the problem with it;
# FASTNA_SMALL_WINDOW=0 turns that off.  Its CTA covers the default tile's query box.
SMALL_TILE = "small"
_QBOX[SMALL_TILE] = {1: (64,), 2: (8, 8)}



@functools.lru_cache(maxsize=None)
def _instance_list(key):
    # build_info() is fixed for the process: parse each list once (select() runs per call).
    info = _ext.build_info()
    if not info or not info.get("cuda"):
        return ()
    out = []
    for entry in info.get(key, []):
        r, dt, hd, tile, sm = entry[:5]
        arch = str(entry[5]) if len(entry) > 5 else str(sm)
        out.append((int(r), _ext._dtype_name(dt), int(hd), str(tile), int(sm), arch))
    return tuple(out)


def instances():
    """(rank, dtype name, head_dim, tile, sm, arch) of the compiled fused forward kernels."""
    return list(_instance_list("fused_instances"))


def bwd_instances():
    """(rank, dtype name, head_dim, tile, sm, arch) of the compiled fused backward kernels."""
    return list(_instance_list("fused_bwd_instances"))


def _runs_on(sm: int, arch: str, cc: int) -> bool:
    # Same rule as src/dispatch.cpp: "a"/"f" archs only on that exact compute capability.
    return sm == cc if arch[-1:] in ("a", "f") else sm <= cc


def _device_instances(rank, dtype, device):
    """{head_dim: set(tiles)} runnable on `device` for (rank, dtype)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _device_instances_at(rank, dtype, index)


@functools.lru_cache(maxsize=None)
def _device_instances_at(rank, dtype, index):
    dname = _ext.DTYPE_NAMES.get(dtype)
    major, minor = torch.cuda.get_device_capability(index)
    cc = major * 10 + minor
    found = {}
    for r, dt, hd, tile, sm, arch in _instance_list("fused_instances"):
        if r == rank and dt == dname and _runs_on(sm, arch, cc):
            found.setdefault(hd, set()).add(tile)
    return found


def _bwd_head_dims(rank, dtype, device):
    """Head dims with a default-tile fused_bwd instance runnable on `device` for (rank, dtype)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return set()
    dname = _ext.DTYPE_NAMES.get(dtype)
    major, minor = torch.cuda.get_device_capability(device)
    cc = major * 10 + minor
    return {hd for r, dt, hd, tile, sm, arch in bwd_instances()
            if r == rank and dt == dname and tile == "default" and _runs_on(sm, arch, cc)}


def available() -> bool:
    """Compiled with fused kernels and a CUDA device to run them on."""
    return bool(instances()) and torch.cuda.is_available()


def _grid_ok(params, lengths, tile) -> bool:
    box = _QBOX[tile][params.rank]
    ctas = 1
    for a in range(params.rank):
        d = params.dilation[a]
        group = -(-lengths[a] // d)             # ceil(L / d): longest dilation group
        ctas *= d * (-(-group // box[a]))       # ceil(group / box) tiles per group
    return ctas <= 0x7FFFFFFF


def check(query, key, value, params, additional_keys=None, additional_values=None):
    if not instances():
        why = ("compiled module missing: " + str(_ext.load_error())) if _ext.load() is None else \
            "the compiled module has no fused kernels (host-only build, or FASTNA_KERNELS " \
            "without fused_fwd)"
        return Reason(f"backend 'fused' is not available in this build ({why})")
    if not torch.cuda.is_available():
        return Reason("backend 'fused' is not available in this build on this machine "
                      "(no CUDA device)")
    if query.dtype not in DTYPES:
        return Reason(f"it supports float16, bfloat16 and float32 (on TF32 tensor cores), got "
                      f"{query.dtype} (backend='reference' takes float64)", TypeError)
    if query.device.type != "cuda":
        return Reason(f"it needs CUDA tensors, got query on {query.device}", ValueError)
    dims = _device_instances(params.rank, query.dtype, query.device)
    return _check_problem(query, value, params, dims)


def check_auto(query, key, value, params, additional_keys=None, additional_values=None):
    """backend=None's condition on top of check(): float32 (computed in TF32) only while
    torch.backends.cuda.matmul.allow_tf32 is True, torch's own switch for TF32 matmuls, so
    that nobody gets TF32 precision without asking for it (backend="fused" asks)."""
    if query.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return Reason("float32 runs on TF32 tensor cores in the fused kernel; backend=None "
                      "takes it only while torch.backends.cuda.matmul.allow_tf32 is True "
                      "(or pass backend='fused')", TypeError)
    return None


def _head_dim_for(D: int, Dv: int, dims):
    """The compiled head dim the kernel runs at: the smallest one >= max(D, Dv), else None."""
    fits = [d for d in dims if d >= max(D, Dv)]
    return min(fits) if fits else None


def _check_problem(query, value, params, dims):
    """The device-independent part of check(); `dims` = compiled head dims for this call."""
    B, H = query.shape[0], query.shape[-2]
    if B > MAX_GRID_YZ or H > MAX_GRID_YZ:
        return Reason(f"batch ({B}) and heads ({H}) must be <= {MAX_GRID_YZ}")
    D, Dv = query.shape[-1], value.shape[-1]
    if _head_dim_for(D, Dv, dims) is None:
        built = ", ".join(str(d) for d in sorted(dims)) or "none"
        dev = (f" on compute capability {torch.cuda.get_device_capability(query.device)}"
               if query.device.type == "cuda" else "")
        what = f"head dim {D}" if D == Dv else f"head dims D={D}, Dv={Dv}"
        return Reason(f"{what} not instantiated for rank {params.rank}, {query.dtype}{dev} and "
                      f"no larger compiled head dim to zero-pad to (built: {built}; rebuild "
                      f"with FASTNA_HEAD_DIMS including one >= {max(D, Dv)})")
    lengths = tuple(query.shape[1:params.rank + 1])
    if not _grid_ok(params, lengths, "default"):
        return Reason("too many query tiles for one grid (more than 2^31 - 1 CTAs)")
    return None


def _pick_tile(rank, dtype, D, device, tile=None):
    tiles = _device_instances(rank, dtype, device).get(D, set())
    if tile is not None:
        if tile not in tiles:
            raise ValueError(f"tile={tile!r} is not compiled for rank {rank}, {dtype}, head dim "
                             f"{D} (built: {', '.join(sorted(tiles)) or 'none'})")
        return tile
    env = os.environ.get("FASTNA_FUSED_TILE", "").strip()
    if env and env != "auto":
        return env if env in tiles else "default"
    return FAST_TILE if FAST_TILE in tiles else "default"


def _small_allowed() -> bool:
    """Whether the binding may run the small-window tile in place of the automatic one."""
    return os.environ.get("FASTNA_SMALL_WINDOW", "1").strip() not in ("0", "off", "false")


def small_window_fits(params, lengths, dtype=torch.bfloat16) -> bool:
    """Whether the small-window tile takes these windows (the binding's own test)."""
    pd = {"dtype": _ext.DTYPE_NAMES.get(dtype, str(dtype)), "batch": 1, "heads": 1, "dim": 32,
          "length": list(lengths), "kernel": list(params.kernel), "stride": list(params.stride),
          "dilation": list(params.dilation), "causal": [bool(c) for c in params.causal]}
    return _ext.can_implement("fused_fwd", dict(pd, tile=SMALL_TILE)) == ""


def _aligned(t) -> bool:
    """16-byte aligned pointer, contiguous head dim, strides in whole 16-byte chunks (8
    elements of 16 bits, 4 of float32)."""
    if t.data_ptr() % 16:
        return False
    vec = 16 // t.element_size()
    if t.is_contiguous():
        # Every stride of a contiguous tensor is a multiple of the last dim (runs per call).
        return t.shape[-1] % vec == 0 or t.numel() == t.shape[-1]
    if t.stride(-1) != 1:
        return False
    return all(s % vec == 0 for n, s in zip(t.shape[:-1], t.stride()[:-1]) if n > 1)


def _fit(t):
    return t if _aligned(t) else t.contiguous()


def _targ(t):
    # A dimension of size 1 is never stepped along, so its stride is irrelevant: pass 0 so
    # that the binding's 16-byte-row check does not reject e.g. a sliced batch of one.
    return (t.data_ptr(), [0 if n == 1 else s for n, s in zip(t.shape, t.stride())])


def _params_dict(params, q, k, v, tile):
    return {
        "dtype": _ext.DTYPE_NAMES.get(q.dtype, str(q.dtype)), "batch": q.shape[0],
        "heads": q.shape[-2],
        "heads_kv": k.shape[-2], "dim": q.shape[-1], "dim_v": v.shape[-1], "num_extra": 0,
        "scale": float(params.scale), "length": list(q.shape[1:params.rank + 1]),
        "kernel": list(params.kernel), "stride": list(params.stride),
        "dilation": list(params.dilation), "causal": [bool(c) for c in params.causal],
        "tile": tile,
    }


def _stream(device):
    return torch.cuda.current_stream(device).cuda_stream


def _forced_backward() -> str:
    forced = os.environ.get("FASTNA_FUSED_BACKWARD", "").strip().lower()
    if forced in ("", "auto"):
        return ""
    if forced not in BACKWARD_MODES:
        raise ValueError(f"FASTNA_FUSED_BACKWARD={forced!r}: expected one of "
                         f"{', '.join(BACKWARD_MODES)} or auto")
    return forced


def _fused_backward_ok(q, k, v, params) -> bool:
    """The fused backward kernel takes this (already padded, aligned) problem."""
    P = q.shape[-1]
    if k.shape[-1] != P or v.shape[-1] != P:
        return False
    if P not in _bwd_head_dims(params.rank, q.dtype, q.device):
        return False
    B, H = q.shape[0], q.shape[-2]
    if B > MAX_GRID_YZ or H > MAX_GRID_YZ:
        return False
    N = math.prod(q.shape[1:params.rank + 1])
    if -(-B * N * H // 4) > 0x7FFFFFFF:          # preprocess grid: 4 rows per CTA
        return False
    return _grid_ok(params, tuple(q.shape[1:params.rank + 1]), "default")


def _backward_mode(q, k, params, need_lse_grad: bool, v=None) -> str:
    """"fused", "naive" or "reference" (module docstring); q/k/v as the kernel got them."""
    forced = _forced_backward()
    if forced == "reference":
        return "reference"
    if forced in ("", "fused") and _fused_backward_ok(q, k, k if v is None else v, params):
        return "fused"
    if need_lse_grad:
        return "reference"
    if not _ext.has_instance(NAIVE_BWD, params.rank, q.dtype, q.device):
        return "reference"
    if forced == "naive":
        return "naive"
    B, H = q.shape[0], q.shape[-2]
    N = math.prod(q.shape[1:params.rank + 1])
    workspace = 4 * B * N * H * (2 * math.prod(params.kernel) + 1)
    free, _ = torch.cuda.mem_get_info(q.device)
    return "naive" if workspace <= free // 2 else "reference"


def _fp32_arg(t):
    """(ptr, strides) of a contiguous fp32 [B, *S, H] tensor, with the canonical contiguous
    strides (the binding checks them exactly; torch may report any stride on size-1 dims)."""
    strides, acc = [], 1
    for n in reversed(t.shape):
        strides.append(acc)
        acc *= n
    return (t.data_ptr(), strides[::-1])


def _fused_backward(q, k, v, out, lse, pd, dout, dlse):
    """One call of fastna._C.fused_backward: (dq, dk, dv) shaped like q, k, v.

    q/k/v/out at the compiled head dim P (what the forward kernel got and returned); dout
    (None = zeros) like out; lse the forward's fp32 [B, *S, H]; dlse None or like lse.  The
    only place the wrapper touches fastna._C's backward (CPU tests replace it).
    """
    C = _ext.load()
    # The binding runs exactly the tile named; a forward tile without a backward of its own
    # (or one that does not take the problem) runs the default one.
    if pd.get("tile", "default") != "default" and _ext.can_implement("fused_bwd", pd) != "":
        pd = dict(pd, tile="default")
    dout = torch.zeros_like(out) if dout is None else _fit(dout.to(out.dtype))
    lse = lse.to(torch.float32).contiguous()
    if dlse is not None:
        dlse = dlse.to(torch.float32).contiguous()
    dq = _alloc(q.shape, q.dtype, q.device)
    dk = _alloc(k.shape, k.dtype, k.device)
    dv = _alloc(v.shape, v.dtype, v.device)
    workspace = _alloc(lse.shape, torch.float32, q.device)   # delta
    with torch.cuda.device(q.device):
        C.fused_backward(pd, _targ(q), _targ(k), _targ(v), _targ(out), _targ(dout),
                         _fp32_arg(lse), None if dlse is None else _fp32_arg(dlse),
                         _targ(dq), _targ(dk), _targ(dv), _stream(q.device),
                         workspace=_fp32_arg(workspace))
    return dq, dk, dv


def _naive_backward(q, k, v, params, dout):
    C = _ext.load()
    from . import naive as _naive
    pd = _naive._params_dict(params, q, k, v, 0)
    dq = _alloc(q.shape, q.dtype, q.device)
    dk = _alloc(k.shape, k.dtype, k.device)
    dv = _alloc(v.shape, v.dtype, v.device)

    def ta(t):
        return None if t is None else (t.data_ptr(), list(t.stride()))

    with torch.cuda.device(q.device):
        # attn=None: the naive backward recomputes the logits from q and k into its workspace.
        C.naive_backward(pd, ta(q), ta(k), ta(v), None, None, None, ta(dout), ta(dq), ta(dk),
                         ta(dv), None, None, None, _stream(q.device))
    return dq, dk, dv


def _reference_backward(q, k, v, params, dout, dlse):
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        out, lse = _reference.attention(*leaves, params, return_lse=True)
        return grad_of_out_lse(out, lse, leaves, dout, dlse)


def _kernel(q, k, v, params, pd):
    """One call of the compiled kernel: (out [B, *S, H, P] in q.dtype, lse [B, *S, H] fp32).

    q/k/v are already padded to the compiled head dim P and meet _aligned(); pd from
    _params_dict.  The only place the wrapper touches fastna._C's forward (the CPU tests of
    the wrapper replace it with the reference).
    """
    C = _ext.load()
    out = _alloc(q.shape[:-1] + (v.shape[-1],), q.dtype, q.device)
    lse = _alloc(q.shape[:-1], torch.float32, q.device)
    with torch.cuda.device(q.device):
        C.fused_forward(dict(pd, tile=pd.get("forward_tile", pd["tile"])), _targ(q), _targ(k),
                        _targ(v), _targ(out), (lse.data_ptr(), list(lse.stride())),
                        _stream(q.device))
    return out, lse


class _FusedNA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, params, pd):
        out, lse = _kernel(q, k, v, params, pd)
        # out and lse are kept only when the fused backward will read them.
        ctx.keep_out = (any(ctx.needs_input_grad[:3]) and _forced_backward() in ("", "fused")
                        and _fused_backward_ok(q, k, v, params))
        ctx.save_for_backward(q, k, v, *((out, lse) if ctx.keep_out else ()))
        ctx.params = params
        ctx.pd = pd
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v = ctx.saved_tensors[:3]
        if dout is None and dlse is None:
            return None, None, None, None, None
        mode = _backward_mode(q, k, ctx.params, dlse is not None, v)
        if mode == "fused" and ctx.keep_out:
            out, lse = ctx.saved_tensors[3:]
            dq, dk, dv = _fused_backward(q, k, v, out, lse, ctx.pd, dout, dlse)
        elif mode == "naive" or (mode == "fused" and dlse is None and
                                 _ext.has_instance(NAIVE_BWD, ctx.params.rank, q.dtype,
                                                   q.device)):
            dq, dk, dv = _naive_backward(q, k, v, ctx.params, dout)
        else:
            dq, dk, dv = _reference_backward(q, k, v, ctx.params, dout, dlse)
        return dq, dk, dv, None, None


def op_backward(q, k, v, out, lse, params, dout, dlse, tile="default"):
    """The custom op's (fastna._ops.na_backward) backward for backend "fused" without
    additional KV tokens: the fused backward kernel on the op's saved out and lse, without
    recomputing the forward.  Returns (dq, dk, dv), or None when the fused backward does not
    take the call (FASTNA_FUSED_BACKWARD forcing another mode, no fused_bwd instance, ...):
    the caller then differentiates forward() as for any backend.  `tile` names the fused_bwd
    tile to ask for ("hopper": the sm90a backward); the binding uses the default boxes when
    that tile is not compiled for (rank, dtype, P).

    out [B, *S, H, Dv] and lse [B, *S, H] are what forward() returned: the kernel's out (at
    the padded head dim P) sliced to Dv, and its lse; the padded columns of the kernel's out
    are exactly zero (v was zero-padded), so zero-padding out back to P restores it.
    """
    if q.shape[0] == 0 or (dout is None and dlse is None):
        return None
    if _forced_backward() not in ("", "fused") or not _bwd_head_dims(params.rank, q.dtype,
                                                                      q.device):
        return None
    D, Dv = q.shape[-1], v.shape[-1]
    P = _head_dim_for(D, Dv, _device_instances(params.rank, q.dtype, q.device))
    if P is None:
        return None
    qp, kp, vp = _fit(_pad_last(q, P)), _fit(_pad_last(k, P)), _fit(_pad_last(v, P))
    if not _fused_backward_ok(qp, kp, vp, params):
        return None
    outp = _fit(_pad_last(out.to(q.dtype), P))
    doutp = None if dout is None else _pad_last(dout.to(q.dtype), P)
    pd = _params_dict(params, qp, kp, vp, tile)
    dq, dk, dv = _fused_backward(qp, kp, vp, outp, lse, pd, doutp, dlse)
    if P != D:
        dq, dk = dq[..., :D], dk[..., :D]
    if P != Dv:
        dv = dv[..., :Dv]
    return dq, dk, dv


def _pad_last(t, size):
    """t zero-padded along its last dim to `size` (differentiable; t itself if no padding)."""
    n = t.shape[-1]
    return t if n == size else torch.nn.functional.pad(t, (0, size - n))


def forward(query, key, value, params, additional_keys=None, additional_values=None,
            return_lse=False, tile=None):
    """Runs the fused kernel; `tile` picks a compiled tile variant (None = automatic).

    float32 inputs run on TF32 tensor cores (module docstring): out in float32 with TF32
    precision (relative errors around 1e-4 to 1e-3).

    Head dims the build lacks and Dv != D are zero-padded to the smallest compiled head dim
    P >= max(D, Dv); additional KV tokens are attended with torch and merged through the
    logsumexp (module docstring).
    """
    D, Dv = query.shape[-1], value.shape[-1]
    if query.shape[0] == 0:
        out = query.new_empty((*query.shape[:-1], Dv))
        lse = query.new_empty(query.shape[:-1], dtype=torch.float32)
        return (out, lse) if return_lse else out
    dims = _device_instances(params.rank, query.dtype, query.device)
    P = _head_dim_for(D, Dv, dims)
    if P is None:
        raise NotImplementedError(
            f"backend='fused' cannot run this call: "
            f"{_check_problem(query, value, params, dims)}")
    automatic = tile == "hopper" or (
        tile is None and os.environ.get("FASTNA_FUSED_TILE", "").strip() in ("", "auto"))
    tile = _pick_tile(params.rank, query.dtype, P, query.device, tile)
    # Zero columns leave q.k unchanged; params.scale is the caller's (of the original D).
    q, k, v = _fit(_pad_last(query, P)), _fit(_pad_last(key, P)), _fit(_pad_last(value, P))
    pd = _params_dict(params, q, k, v, tile)
    # The binding runs exactly the tile named: the forward runs the small-window tile where it
    # takes the problem (pd["forward_tile"]); pd["tile"] stays the backward's.
    if automatic and tile in ("hopper", FAST_TILE, "default") and _small_allowed() and \
            _ext.can_implement("fused_fwd", dict(pd, tile=SMALL_TILE)) == "":
        pd["forward_tile"] = SMALL_TILE
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        out, lse = _FusedNA.apply(q, k, v, params, pd)
    else:  # no autograd node to build: skip Function.apply's bookkeeping (host time per call)
        out, lse = _kernel(q, k, v, params, pd)
    if Dv != P:
        out = out[..., :Dv]
    ek, ev = additional_keys, additional_values
    if ek is not None and ek.shape[1] > 0:
        out, lse = _merge.attend_and_merge(query, out, lse, ek, ev, params.scale)
    elif Dv != P:
        out = out.contiguous()
    return (out, lse) if return_lse else out
