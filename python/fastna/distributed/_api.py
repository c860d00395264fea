"""fastna.distributed.neighborhood_attention: validation across the ranks, then one of the modes.

Validation runs in three steps so that no rank is left waiting in a collective another rank
skipped: what a rank can check alone (errors held back), one all_gather of every rank's slab
length and argument signature (a rank that failed says so, the others raise naming it; an
argument that differs between ranks is named with every rank's value), then fastna's own
validation on the *global* shapes (the same on every rank, so all of them raise it).
"""
from __future__ import annotations

import numbers
import zlib
from typing import Optional

import torch

from .. import _args
from .._api import neighborhood_attention as _local_attention
from . import _comm, _halo, _halo_whole, _slab, _ulysses
from ._plan import axis_plan

__all__ = ["neighborhood_attention", "MODES"]

MODES = ("halo", "ulysses")
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MAX_RANK = 3
# [ok, length] + 4 call-wide fields + 3 extents + 5 head / dtype fields + 4 per-axis
# parameters x 3 axes + scale + backend
_SIGNATURE_WIDTH = 2 + 4 + _MAX_RANK + 5 + 4 * _MAX_RANK + 2


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_shard_axis(shard_axis, spatial_rank: int) -> int:
    if not _is_int(shard_axis) or not 0 <= shard_axis < spatial_rank:
        raise ValueError(f"shard_axis must be an int in [0, {spatial_rank}) (a spatial axis of the "
                         f"{spatial_rank}D problem, 0-based), got {shard_axis!r}")
    return int(shard_axis)


def _padded(values, fill=-1):
    return list(values) + [fill] * (_MAX_RANK - len(values))


def _meta(t: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    shape = list(t.shape)
    shape[dim] = length
    return torch.empty(shape, dtype=t.dtype, device="meta")


def _local_signature(q, k, v, kernel_size, stride, dilation, is_causal, scale, shard_axis,
                     mode, backend):
    """(slab length, [(field, value)]) after every check one rank can make alone: fastna's own
    validation with the shard axis given a length the window fits (only the global length,
    known after the exchange, can still fail it -- the same way on every rank)."""
    rank = _args.normalize_rank(q, None)
    for name, t in (("key", k), ("value", v)):
        _args.check_float_tensor(name, t)
        if t.dim() != q.dim():
            raise ValueError(f"{name} must have {q.dim()} dims like query, got shape "
                             f"{tuple(t.shape)} (query shape {tuple(q.shape)})")
        if t.device != q.device:
            raise ValueError(f"{name} device {t.device} does not match query device {q.device}")
    axis = check_shard_axis(shard_axis, rank)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _args.check_backend_arg(backend)
    dim = 1 + axis
    n = q.shape[dim]
    for name, t in (("key", k), ("value", v)):
        if t.shape[dim] != n:
            raise ValueError(f"{name} holds {t.shape[dim]} rows of shard_axis {axis} but query "
                             f"holds {n}: q, k and v must be slabs of the same rows")
    kernel = _args.per_axis_ints("kernel_size", kernel_size, rank)
    dil = _args.per_axis_ints("dilation", dilation, rank)
    fits = max(n, kernel[axis] * dil[axis], 1)
    params = _args.normalize(_meta(q, dim, fits), _meta(k, dim, fits), _meta(v, dim, fits),
                             kernel_size, stride, dilation, is_causal, scale)
    extents = [q.shape[1 + a] if a != axis else -1 for a in range(rank)]
    fields = [("number of spatial axes", rank), ("shard_axis", axis),
              ("mode", MODES.index(mode)), ("batch size", q.shape[0])]
    fields += [(f"extent of spatial axis {a} (not sharded)", x)
               for a, x in enumerate(_padded(extents))]
    fields += [("query heads", q.shape[-2]), ("key/value heads", k.shape[-2]),
               ("head dim", q.shape[-1]), ("value head dim", v.shape[-1]),
               ("dtype", _DTYPES.index(q.dtype) if q.dtype in _DTYPES else len(_DTYPES))]
    for name, vals in (("kernel_size", params.kernel), ("stride", params.stride),
                       ("dilation", params.dilation),
                       ("is_causal", [int(c) for c in params.causal])):
        fields += [(f"{name} (axis {a})", x) for a, x in enumerate(_padded(vals))]
    fields.append(("scale", params.scale))
    # the backend must agree too: a rank failing on its name later would leave the others
    # waiting in a transfer
    if mode == "halo":
        _slab.implementation(backend, q.device)
    fields.append(("backend", zlib.crc32(repr(backend).encode())))
    return n, fields


def _show(name: str, value: float) -> str:
    if name == "mode":
        return repr(MODES[int(value)])
    if name == "dtype":
        return str(_DTYPES[int(value)]) if int(value) < len(_DTYPES) else "other"
    if name == "scale":
        return repr(value)
    if name == "backend":
        return f"name hash {int(value)}"
    return str(int(value)) if float(value).is_integer() else repr(value)


def agree(length, fields, local_error, width: int, device, group: _comm.Group, what: str):
    """Exchange [ok, length, *field values] (`width` floats, the same on every rank) with every
    rank; returns the slab lengths in rank order, or raises: this rank's own error, else one
    naming the ranks that failed or the field that differs."""
    if local_error is None:
        mine = [1.0, float(length)] + [float(x) for _, x in fields]
        if len(mine) != width:   # a bug here, not a user error
            raise RuntimeError(f"{what}: signature of {len(mine)} values, expected {width}")
    else:
        mine = [0.0] * width
    vectors = _comm.all_gather_vectors(mine, device, group)
    if local_error is not None:
        raise local_error
    bad = [r for r, vec in enumerate(vectors) if vec[0] != 1.0]
    if bad:
        raise ValueError(f"{what}: rank(s) {bad} of the group rejected their arguments (their "
                         f"error says why); every rank must pass valid arguments")
    for i, (name, _) in enumerate(fields):
        values = [vec[2 + i] for vec in vectors]
        if len(set(values)) > 1:
            shown = ", ".join(f"rank {r}: {_show(name, x)}" for r, x in enumerate(values))
            raise ValueError(f"{what}: {name} differs across the ranks of the group ({shown}); "
                             f"every argument but the slab length must be the same on all ranks")
    return tuple(int(vec[1]) for vec in vectors)


def neighborhood_attention(q, k, v, kernel_size, stride=1, dilation=1, is_causal=False,
                           scale: Optional[float] = None, shard_axis: int = 0, group=None,
                           mode: str = "halo", backend: Optional[str] = None) -> torch.Tensor:
    """Context-parallel neighborhood attention: this rank's slab of one global problem.

    q [B, *local_spatial, H, D], k [B, *local_spatial, H_kv, D], v [B, *local_spatial, H_kv, Dv]:
    this rank's contiguous slab of spatial axis `shard_axis` (0-based among the spatial axes);
    the slabs of the ranks of `group` (default: the world) follow each other in rank order and
    may have different lengths (exchanged, not assumed; 0 rows allowed). Every other argument
    means what it means in fastna.neighborhood_attention on the gathered tensors and must be
    the same on every rank. Returns this rank's slab of the output [B, *local_spatial, H, Dv];
    autograd flows to the local q, k, v (every rank must run the backward).

    mode="halo": each rank receives exactly the key / value rows its queries need
    (batch_isend_irecv), overlapped with the queries that need none; `backend` names the
    offset-slab implementation (fastna.distributed.slab_backends(); None: "embedded" -- fastna's
    own kernels -- on CUDA, "reference" on the CPU); fastna.distributed.local_compute_path says
    what runs. mode="ulysses": all-to-all
    to head-sharded full tensors around fastna.neighborhood_attention(backend=backend); needs
    H and H_kv divisible by the group size.
    """
    what = "fastna.distributed.neighborhood_attention"
    grp = _comm.resolve_group(group)
    device = q.device if isinstance(q, torch.Tensor) else torch.device("cpu")
    try:
        (length, fields), error = _local_signature(q, k, v, kernel_size, stride, dilation,
                                                   is_causal, scale, shard_axis, mode,
                                                   backend), None
    except (ValueError, TypeError, NotImplementedError) as e:
        length, fields, error = 0, (), e
    lengths = agree(length, fields, error, _SIGNATURE_WIDTH, device, grp, what)
    axis = int(shard_axis)
    dim = 1 + axis
    total = sum(lengths)

    # every rank passed the same arguments: only the global length is new, and it fails (or
    # passes) the same way everywhere
    params = _args.normalize(_meta(q, dim, total), _meta(k, dim, total), _meta(v, dim, total),
                             kernel_size, stride, dilation, is_causal, scale)
    if mode == "ulysses":
        P, H, Hkv = grp.size, q.shape[-2], k.shape[-2]
        if H % P or Hkv % P:
            raise ValueError(f"mode='ulysses' splits the heads across the {P} ranks of the group: "
                             f"query heads H={H} and key/value heads H_kv={Hkv} must both be "
                             f"divisible by {P} (mode='halo' has no such limit)")
        setup = _ulysses.UlyssesSetup(dim, lengths, grp)
        qh, kh, vh = (_ulysses.space_to_heads(t, setup) for t in (q, k, v))
        out = _local_attention(qh, kh, vh, params.kernel, params.stride, params.dilation,
                               params.causal, params.scale, backend=backend)
        return _ulysses.heads_to_space(out, setup)
    impl = _slab.implementation(backend, q.device)
    plan = axis_plan(lengths, params.kernel[axis], params.stride[axis], params.dilation[axis],
                     params.causal[axis])
    setup = _halo.HaloSetup(params, axis, plan, grp, impl)
    if impl.whole is not None:
        return _halo_whole.halo_attention(q, k, v, setup)
    return _halo.halo_attention(q, k, v, setup)
