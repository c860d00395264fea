"""PyTorch integration: the CUDA backends as `torch.library` custom ops.

`fastna::na_forward` and `fastna::na_backward` wrap the backends that call into fastna._C
(those with via_custom_op: naive, gemm, fused, hopper), so that
`torch.compile(..., fullgraph=True)` sees one opaque op with a fake
(meta) implementation instead of a pybind call it cannot trace, and AOTAutograd sees an
explicit backward op.  The reference backend is plain PyTorch and is traced as it is.

    fastna::na_forward(q, k, v, extra_k?, extra_v?, kernel, stride, dilation, causal, scale,
                       backend) -> (out, lse, aux)
    fastna::na_backward(dout?, dlse?, q, k, v, extra_k?, extra_v?, out, lse, aux, kernel,
                        stride, dilation, causal, scale, backend) -> (dq, dk, dv, dek, dev)

- out: contiguous [B, *S, H, Dv] in q's dtype; lse: contiguous fp32 [B, *S, H].
- aux: what the backend's backward needs besides q/k/v/out/lse, shaped by its aux_shape()
  (naive: its fp32 probability buffer [B, N, H, prod(kernel) + N_extra]; the others: an
  empty fp32 tensor [0]).  aux is not differentiable.
- dq/dk/dv: contiguous, shaped and typed like q/k/v.  dek/dev: like extra_k/extra_v, or empty
  [0] tensors when there are no extras (op schemas cannot return None).
- `backend` names a registered attention backend; the ops call its protocol methods
  (backends/_protocol.py), with no per-backend branches: na_forward runs op_forward(), and
  na_backward runs op_backward() on the saved tensors; where that returns None (e.g. the
  fused family with additional KV tokens, the reference) it recomputes the backend's
  forward() with autograd and differentiates it (torch.autograd.grad): the backward is then
  exactly the backend's own, at the cost of one extra forward.  The ops also accept
  backend="reference" (used by the CPU opcheck tests); fastna's API never routes the
  reference through them.
- A gradient into lse: `dlse` that is all zeros is treated as absent (AOTAutograd passes
  zero tangents for outputs nobody differentiates), so the fused backend keeps its fast
  backward and the naive one does not raise.  A nonzero dlse into backend "naive" raises
  RuntimeError (its backward has no lse input), like the eager backend.

Selection under torch.compile: fastna._policy.select() asks fastna._C and torch.cuda
things dynamo cannot trace, so while compiling, fastna._dispatch runs it through select_traced()
(torch.compiler.assume_constant_result) on tensor *specs* (shape, stride, dtype, device,
requires_grad): the choice is made once at trace time and baked into the graph (dynamo
guards on those tensor properties; FASTNA_* environment variables read by the backends are
not guarded).  Symbolic sizes are specialized for it.
"""
# No `from __future__ import annotations` here: torch.library.custom_op reads these
# signatures' annotations as types, and torch < 2.5 cannot resolve them from strings.

import math
import operator
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import _policy, _registry
from ._args import NAParams
from .backends._base import grad_of_out_lse

__all__ = ["na_forward", "na_backward", "run", "select_traced"]


def _params(q: Tensor, kernel, stride, dilation, causal, scale) -> NAParams:
    rank = len(kernel)
    return NAParams(rank=rank, kernel=tuple(int(x) for x in kernel),
                    stride=tuple(int(x) for x in stride),
                    dilation=tuple(int(x) for x in dilation),
                    causal=tuple(bool(c) for c in causal), scale=float(scale),
                    length=tuple(int(x) for x in q.shape[1:rank + 1]))


def _extras(ek, ev):
    """Extras as the backends take them: None when absent or empty."""
    if ek is None or ev is None or ek.shape[1] == 0:
        return None, None
    return ek, ev


def _no_autocast(device_type: str):
    # The impls run whatever dtype they are given; keep autocast away from the torch ops
    # inside them (the reference's fp32 math, the fused extras merge).
    if device_type in ("cpu", "cuda"):
        return torch.autocast(device_type, enabled=False)
    import contextlib
    return contextlib.nullcontext()


def _autograd_on():
    """Re-enable autograd inside an op impl (the dispatcher runs impls with the autograd keys
    excluded), for the backward that differentiates a backend's forward.  Private dispatcher
    API; a torch without it gets a no-op here (and that backward then fails loudly)."""
    try:
        K, KS = torch._C.DispatchKey, torch._C.DispatchKeySet
        autograd = KS(K.AutogradFunctionality) | KS(K.AutogradOther) | KS(K.AutogradNestedTensor)
        return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(),
                                               torch._C._dispatch_tls_local_exclude_set() -
                                               autograd)
    except (AttributeError, TypeError):  # pragma: no cover - other torch versions
        import contextlib
        return contextlib.nullcontext()


# ----------------------------------------------------------------------------- forward

@torch.library.custom_op("fastna::na_forward", mutates_args=())
def na_forward(q: Tensor, k: Tensor, v: Tensor, extra_k: Optional[Tensor],
               extra_v: Optional[Tensor], kernel: List[int], stride: List[int],
               dilation: List[int], causal: List[bool], scale: float,
               backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    """Neighborhood attention forward on a fastna backend: (out, lse, aux); module docstring."""
    params = _params(q, kernel, stride, dilation, causal, scale)
    ek, ev = _extras(extra_k, extra_v)
    with _no_autocast(q.device.type):
        out, lse, aux = _registry.get(backend).op_forward(q, k, v, ek, ev, params)
    return out.contiguous(), lse.to(torch.float32).contiguous(), aux


@na_forward.register_fake
def _forward_fake(q, k, v, extra_k, extra_v, kernel, stride, dilation, causal, scale, backend):
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
    aux = q.new_empty(_registry.get(backend).aux_shape(q, extra_k, kernel),
                      dtype=torch.float32)
    return out, lse, aux


# ---------------------------------------------------------------------------- backward

@torch.library.custom_op("fastna::na_backward", mutates_args=())
def na_backward(dout: Optional[Tensor], dlse: Optional[Tensor], q: Tensor, k: Tensor,
                v: Tensor, extra_k: Optional[Tensor], extra_v: Optional[Tensor], out: Tensor,
                lse: Tensor, aux: Tensor, kernel: List[int], stride: List[int],
                dilation: List[int], causal: List[bool], scale: float,
                backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of na_forward: (dq, dk, dv, dek, dev); module docstring."""
    if dlse is not None and not bool(dlse.any()):
        dlse = None
    params = _params(q, kernel, stride, dilation, causal, scale)
    ek, ev = _extras(extra_k, extra_v)
    mod = _registry.get(backend)
    if dout is None and dlse is None or q.shape[0] == 0:
        grads = (None,) * 5
    else:
        grads = mod.op_backward(q, k, v, ek, ev, out, lse, aux, params, dout, dlse)
    if grads is None:
        inputs = [q, k, v] + ([] if ek is None else [ek, ev])
        with _autograd_on(), torch.enable_grad(), _no_autocast(q.device.type):
            leaves = [t.detach().requires_grad_() for t in inputs]
            lq, lk, lv = leaves[:3]
            lek, lev = (leaves[3], leaves[4]) if ek is not None else (None, None)
            o, l = mod.forward(lq, lk, lv, params, lek, lev, return_lse=True)
            grads = grad_of_out_lse(o, l, leaves, dout, dlse)
    grads = tuple(grads) + (None,) * (5 - len(grads))   # (dq, dk, dv): no extras
    res = []
    for g, t in zip(grads, (q, k, v, extra_k, extra_v)):
        if t is None:
            res.append(q.new_empty((0,)))
        elif g is None:
            res.append(t.new_zeros(t.shape))
        else:
            res.append(g.to(t.dtype).contiguous())
    return tuple(res)


@na_backward.register_fake
def _backward_fake(dout, dlse, q, k, v, extra_k, extra_v, out, lse, aux, kernel, stride,
                   dilation, causal, scale, backend):
    return tuple(q.new_empty((0,)) if t is None else t.new_empty(t.shape)
                 for t in (q, k, v, extra_k, extra_v))


def _setup_context(ctx, inputs, output):
    q, k, v, ek, ev, kernel, stride, dilation, causal, scale, backend = inputs
    out, lse, aux = output
    ctx.save_for_backward(q, k, v, ek, ev, out, lse, aux)
    ctx.args = (list(kernel), list(stride), list(dilation), list(causal), scale, backend)
    ctx.has_extras = ek is not None
    ctx.mark_non_differentiable(aux)
    ctx.set_materialize_grads(False)


def _backward(ctx, dout, dlse, daux):
    q, k, v, ek, ev, out, lse, aux = ctx.saved_tensors
    none = (None,) * 11
    if dout is None and dlse is None:
        return none
    dq, dk, dv, dek, dev = torch.ops.fastna.na_backward(dout, dlse, q, k, v, ek, ev, out, lse,
                                                        aux, *ctx.args)
    if not ctx.has_extras:
        dek = dev = None
    return (dq, dk, dv, dek, dev) + none[5:]


na_forward.register_autograd(_backward, setup_context=_setup_context)


# -------------------------------------------------------------- called by fastna._dispatch

def run(query, key, value, params: NAParams, additional_keys, additional_values,
        return_lse: bool, backend: str):
    """A call of a via_custom_op backend through fastna::na_forward."""
    out, lse, _ = torch.ops.fastna.na_forward(
        query, key, value, additional_keys, additional_values, list(params.kernel),
        list(params.stride), list(params.dilation), list(params.causal), float(params.scale),
        backend)
    return (out, lse) if return_lse else out


class _Spec:
    """What backends' check() reads of a tensor, without the tensor (for select_traced)."""

    def __init__(self, shape, stride, dtype, device, requires_grad):
        self.shape = torch.Size(shape)
        self._stride = tuple(stride)
        self.dtype = dtype
        self.device = device
        self.requires_grad = requires_grad

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def stride(self, dim=None):
        return self._stride if dim is None else self._stride[dim]

    def dim(self):
        return len(self.shape)

    ndim = property(dim)

    def numel(self):
        return math.prod(self.shape)

    def is_floating_point(self):
        return self.dtype.is_floating_point

    def element_size(self):
        return torch.empty((), dtype=self.dtype).element_size()

    def data_ptr(self):
        return 0

    def is_contiguous(self):
        expect = 1
        for n, s in reversed(list(zip(self.shape, self._stride))):
            if n != 1 and s != expect:
                return False
            expect *= n
        return True


def spec(t):
    """A tensor's properties as Python constants (sizes specialized), for select_traced."""
    if t is None:
        return None
    return (tuple(operator.index(s) for s in t.shape),
            tuple(operator.index(s) for s in t.stride()), t.dtype, t.device,
            bool(t.requires_grad))


@torch.compiler.assume_constant_result
def select_traced(name, specs, kernel, stride, dilation, causal, grad_enabled):
    """fastna._policy.select() on tensor specs, run once at trace time; returns the name.

    (No scale argument: it may be symbolic, and no backend's check() reads it.)"""
    q, k, v, ek, ev = (None if s is None else _Spec(*s) for s in specs)
    params = NAParams(rank=len(kernel), kernel=tuple(kernel), stride=tuple(stride),
                      dilation=tuple(dilation), causal=tuple(causal), scale=1.0,
                      length=tuple(q.shape[1:len(kernel) + 1]))
    try:
        with torch.set_grad_enabled(grad_enabled):
            return _policy.select(name, q, k, v, params, ek, ev).name
    except (TypeError, ValueError, NotImplementedError) as e:
        # Raised by the caller in traced code, so the user sees the eager exception type.
        return f"!{type(e).__name__}:{e}"


ERRORS = {"TypeError": TypeError, "ValueError": ValueError,
          "NotImplementedError": NotImplementedError}


def raise_selection_error(name: str):
    """select_traced's error string (starting with "!") as the exception it was."""
    kind, _, msg = name[1:].partition(":")
    raise ERRORS[kind](msg)
