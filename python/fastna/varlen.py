"""Variable-size batches: packed samples of different spatial shapes (and, optionally, their own
window parameters) in one call.

    out = fastna.neighborhood_attention_varlen(q, k, v, spatial_shapes, kernel_size, stride=1,
                                               dilation=1, is_causal=False, scale=None,
                                               return_lse=False, backend=None)

q [total_tokens, H, D], k [total_tokens, H_kv, D], v [total_tokens, H_kv, Dv]: sample after
sample, each sample's tokens in row-major order of its spatial shape.  spatial_shapes: a list of
shapes (tuples, one rank for all) or an integer tensor [B, rank].  kernel_size, stride, dilation,
is_causal: an int / bool / per-axis tuple shared by every sample, or a *list* with one such entry
per sample.  Each sample means exactly what fastna.neighborhood_attention means on that sample
alone.  Returns out [total_tokens, H, Dv] (and lse [total_tokens, H] with return_lse).

How it runs:
- backend="fused", where the grouped kernels are built (FASTNA_EXTRA_KERNELS; not yet proven on
  a GPU): ONE LAUNCH for every sample of the packed batch, forward (three for the backward) --
  fastna.backends.fused_grouped, one problem per sample, nothing gathered or copied.
- Otherwise the per-shape path, ONE LAUNCH PER GROUP: samples with equal spatial shape and
  parameters form a group; each group is gathered into one
batch [B_group, *shape, H, D] and run by ONE ordinary fastna.neighborhood_attention call (its
backend choice, plan cache, custom op under torch.compile and autograd), and the outputs (and
logsumexps) are scattered back into the packed order.  A batch whose samples all differ is
therefore one call per sample.  Gather and scatter are one index_select each, skipped where
the groups already lie in packing order (then they are split views and one cat); autograd flows
through both.  backend=None and every backend name neighborhood_attention accepts take this
path, except backend="reference": the oracle, one reference call per sample, no grouping.

backend=None keeps the per-shape path until the grouped kernels are measured against it (a few
large samples run faster on the Hopper kernels call by call than on an sm80 grouped launch).

spatial_shapes under torch.compile: a list is static (every shape, group and index is fixed at
trace time; fullgraph=True traces it).  An integer tensor is read with .tolist() in eager calls
(on a CUDA tensor that waits for the device: prefer a list or a CPU tensor); while torch.compile
traces, its values do not exist, so it raises a TypeError asking for a list.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _api, _args, _heads, _registry
from .backends import fused_grouped
from ._args import NAParams, VarlenSample

PerSample = Union[int, bool, Sequence[int], Sequence[bool], list]

__all__ = ["neighborhood_attention_varlen", "explain_varlen", "PackedSample", "SampleGroup",
           "VarlenPlan", "plan"]

_MAX_PLANS = 256
_plans: dict = {}
_device_moves: dict = {}


@dataclass(frozen=True)
class SampleGroup:
    """Samples with one spatial shape and one set of parameters (params.length == shape),
    run as one batched call; `samples`: their indices, in packing order."""
    samples: Tuple[int, ...]
    params: NAParams

    @property
    def tokens(self) -> int:
        return len(self.samples) * math.prod(self.params.length)

    def label(self) -> str:
        which = ", ".join(str(i) for i in self.samples)
        noun = "sample" if len(self.samples) == 1 else "samples"
        return f"{noun} {which} (spatial shape {self.params.length})"


@dataclass(frozen=True)
class PackedSample:
    """A sample's rows [start, start + tokens) of the packed tensors and its parameters
    (params.length: its spatial shape)."""
    start: int
    params: NAParams

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.params.length)

    @property
    def tokens(self) -> int:
        return math.prod(self.params.length)


@dataclass(frozen=True)
class VarlenPlan:
    """The groups of a validated call and how rows move between packing order and group
    order (the groups' samples one after another).  gather / scatter: (per-sample row offset,
    per-sample tokens) in group order / packing order, from which the row indices are built;
    None where the two orders agree (every group a run of consecutive samples, the runs in
    packing order)."""
    groups: Tuple[SampleGroup, ...]
    gather: Optional[Tuple[Tuple[int, ...], Tuple[int, ...]]]
    scatter: Optional[Tuple[Tuple[int, ...], Tuple[int, ...]]]
    total: int
    samples: Tuple[PackedSample, ...] = ()   # packing order (the grouped kernels' problems)


def _group(samples: Sequence[VarlenSample], merge: bool) -> Tuple[SampleGroup, ...]:
    """Groups in order of their first sample; merge=False: one group per sample."""
    if not merge:
        return tuple(SampleGroup((s.index,), s.params) for s in samples)
    members: dict = {}
    for s in samples:
        # params holds the shape (length), kernel, stride, dilation, causal and the shared scale;
        # keyed by a tuple of them (older dynamo cannot hash a dataclass as a dict key)
        p = s.params
        key = (p.rank, p.kernel, p.stride, p.dilation, p.causal, p.scale, p.length)
        members.setdefault(key, (p, []))[1].append(s.index)
    return tuple(SampleGroup(tuple(idx), p) for p, idx in members.values())


def _make_plan(samples: Sequence[VarlenSample], merge: bool) -> VarlenPlan:
    groups = _group(samples, merge)
    order = [i for g in groups for i in g.samples]
    total = sum(s.tokens for s in samples)
    packed = tuple(PackedSample(s.start, s.params) for s in samples)
    if order == sorted(order):
        return VarlenPlan(groups, None, None, total, packed)
    tokens = [samples[i].tokens for i in order]
    grouped_start, at = {}, 0
    for i, n in zip(order, tokens):
        grouped_start[i] = at
        at += n
    gather = (tuple(samples[i].start - grouped_start[i] for i in order), tuple(tokens))
    scatter = (tuple(grouped_start[s.index] - s.start for s in samples),
               tuple(s.tokens for s in samples))
    return VarlenPlan(groups, gather, scatter, total, packed)


def _spatial_key(spatial_shapes):
    if isinstance(spatial_shapes, Tensor):
        # validated (and, in eager calls, read) by normalize_varlen on a miss
        if spatial_shapes.dim() != 2:
            raise _heads._Uncacheable
        return (spatial_shapes.dtype, tuple(tuple(r) for r in spatial_shapes.tolist()))
    return _heads._frozen(spatial_shapes)


def plan(query, key, value, spatial_shapes, kernel_size, stride=1, dilation=1,
         is_causal=False, scale=None, backend: Optional[str] = None) -> VarlenPlan:
    """The validated groups of a call (backend="reference": one group per sample); cached per
    call signature in eager calls (validation depends only on shapes, dtypes, devices and the
    arguments)."""
    merge = backend != "reference"
    cache_key = None
    if not torch.compiler.is_compiling():
        try:
            cache_key = (merge, _heads._tensor(query), _heads._tensor(key),
                         _heads._tensor(value), _spatial_key(spatial_shapes),
                         _heads._frozen(kernel_size), _heads._frozen(stride),
                         _heads._frozen(dilation), _heads._frozen(is_causal),
                         _heads._frozen(scale))
            hit = _plans.get(cache_key)
        except (_heads._Uncacheable, AttributeError, TypeError):
            cache_key = hit = None
        if hit is not None:
            return hit
    samples = _args.normalize_varlen(query, key, value, spatial_shapes, kernel_size, stride,
                                     dilation, is_causal, scale)
    result = _make_plan(samples, merge)
    if cache_key is not None:
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()
        _plans[cache_key] = result
    return result


def _moves_on(moves, device) -> Tuple[Tensor, Tensor]:
    """The per-sample lists as device tensors.  Eager calls keep them (a copy from host memory
    to a CUDA device waits for the stream: once per plan, not per call); under torch.compile
    they are constants of the graph."""
    if torch.compiler.is_compiling():
        return tuple(torch.tensor(m, dtype=torch.int64, device=device) for m in moves)
    key = (moves, device)
    hit = _device_moves.get(key)
    if hit is None:
        if len(_device_moves) >= _MAX_PLANS:
            _device_moves.clear()
        hit = _device_moves[key] = tuple(torch.tensor(m, dtype=torch.int64, device=device)
                                         for m in moves)
    return hit


def _rows(moves, total: int, device) -> Tensor:
    """Row indices: for each sample (offset o, tokens n), rows r + o for its n destination
    rows r, concatenated -- built on the device (output_size: no host sync)."""
    offsets, tokens = _moves_on(moves, device)
    return torch.repeat_interleave(offsets, tokens, output_size=total) + \
        torch.arange(total, device=device)


def _gathered(p: VarlenPlan, tensors):
    """Each tensor's rows in group order, split per group as [B_group, *shape, heads, dim]."""
    if p.gather is not None:
        rows = _rows(p.gather, p.total, tensors[0].device)
        tensors = [t.index_select(0, rows) for t in tensors]
    sizes = [g.tokens for g in p.groups]
    parts = [t.split(sizes) if len(sizes) > 1 else (t,) for t in tensors]
    return [[part.reshape(len(g.samples), *g.params.length, *part.shape[1:])
             for part, g in zip(ps, p.groups)] for ps in parts]


def _scattered(p: VarlenPlan, parts: List[Tensor]) -> Tensor:
    """Per-group results [B_group, *shape, ...] back as one packed tensor in packing order."""
    flat = [x.reshape(g.tokens, *x.shape[len(g.params.length) + 1:])
            for x, g in zip(parts, p.groups)]
    dtype = flat[0].dtype
    for x in flat[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    flat = [x.to(dtype) for x in flat]
    out = torch.cat(flat) if len(flat) > 1 else flat[0]
    if p.scatter is not None:
        out = out.index_select(0, _rows(p.scatter, p.total, out.device))
    return out


def run_groups(p: VarlenPlan, query, key, value, return_lse: bool, backend: Optional[str]):
    """The per-shape path: one fastna.neighborhood_attention call per group (the grouped
    kernels' one-launch path is neighborhood_attention_varlen's other branch)."""
    outs, lses = [], []
    for g, q, k, v in zip(p.groups, *_gathered(p, (query, key, value))):
        prm = g.params
        args = (q, k, v, prm.kernel, prm.stride, prm.dilation, prm.causal, prm.scale)
        if torch.compiler.is_compiling():
            res = _api.neighborhood_attention(*args, return_lse=return_lse, backend=backend)
        else:
            try:
                res = _api.neighborhood_attention(*args, return_lse=return_lse,
                                                  backend=backend)
            except (ValueError, TypeError, NotImplementedError) as e:
                raise type(e)(f"{g.label()}: {e}") from None
        out, lse = res if return_lse else (res, None)
        outs.append(out)
        lses.append(lse)
    out = _scattered(p, outs)
    return (out, _scattered(p, lses)) if return_lse else out


def _one_launch(p: VarlenPlan, query, key, value, backend: Optional[str]) -> Optional[str]:
    """Why the grouped kernels do not run this call in one launch, or None when they do:
    asked for by name (backend="fused"), eager (under torch.compile the per-shape path's
    custom ops trace), and built for its rank, dtype and head dim."""
    if backend != "fused":
        return "backend is not 'fused'"
    if torch.compiler.is_compiling():
        return "under torch.compile the per-shape path's custom ops trace"
    grads = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    return fused_grouped.unavailable(query, key, value, p.samples[0].params.rank, grads)


def _check_call(return_lse, backend) -> None:
    _args.check_return_lse(return_lse)
    if backend is not None:
        # an unknown name fails here, not as the first group's error
        _registry.get(backend)


def neighborhood_attention_varlen(query: Tensor, key: Tensor, value: Tensor, spatial_shapes,
                                  kernel_size: PerSample, stride: PerSample = 1,
                                  dilation: PerSample = 1, is_causal: PerSample = False,
                                  scale: Optional[float] = None, return_lse: bool = False,
                                  backend: Optional[str] = None
                                  ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Neighborhood attention over a packed batch of samples of different spatial shapes (see
    the module docstring for the layout, the per-sample parameters and how it runs: one
    fastna.neighborhood_attention call per group of samples with equal shape and parameters;
    backend="reference": one reference call per sample)."""
    _check_call(return_lse, backend)
    p = plan(query, key, value, spatial_shapes, kernel_size, stride, dilation, is_causal,
             scale, backend)
    if _one_launch(p, query, key, value, backend) is None:
        out, lse = fused_grouped.attention(query, key, value, fused_grouped.VarlenLayout(p.samples))
        return (out, lse) if return_lse else out
    return run_groups(p, query, key, value, return_lse, backend)


def explain_varlen(query: Tensor, key: Tensor, value: Tensor, spatial_shapes,
                   kernel_size: PerSample, stride: PerSample = 1, dilation: PerSample = 1,
                   is_causal: PerSample = False, scale: Optional[float] = None,
                   return_lse: bool = False, backend: Optional[str] = None) -> str:
    """Which path neighborhood_attention_varlen takes for these arguments, its groups and what
    fastna.explain says of each group's call, as text.  Gathers each group's rows (as the call
    would) but runs no attention."""
    _check_call(return_lse, backend)
    p = plan(query, key, value, spatial_shapes, kernel_size, stride, dilation, is_causal,
             scale, backend)
    count = sum(len(g.samples) for g in p.groups)
    why_not = _one_launch(p, query, key, value, backend)
    if why_not is None:
        return fused_grouped.explain(query, key, value, fused_grouped.VarlenLayout(p.samples))
    if backend == "reference":
        head = (f"per-sample reference path: {len(p.groups)} call(s) of "
                f"fastna.neighborhood_attention(backend='reference'), one per sample")
    else:
        head = (f"per-shape path: {len(p.groups)} call(s) of fastna.neighborhood_attention for "
                f"{count} sample(s), one per group of samples with equal spatial shape and "
                f"parameters (not a single varlen launch)")
    lines = [head, f"rows: {'gathered and scattered' if p.gather else 'in packing order'}"]
    if backend == "fused":
        lines.append(f"grouped kernels (one launch): not taken: {why_not}")
    for g, q, k, v in zip(p.groups, *_gathered(p, (query, key, value))):
        prm = g.params
        lines.append(f"{g.label()}: kernel_size={prm.kernel}, stride={prm.stride}, "
                     f"dilation={prm.dilation}, is_causal={prm.causal}")
        text = _api.explain(q, k, v, prm.kernel, prm.stride, prm.dilation, prm.causal,
                            prm.scale, return_lse=return_lse, backend=backend)
        lines += ["  " + line for line in text.splitlines()]
    return "\n".join(lines)
