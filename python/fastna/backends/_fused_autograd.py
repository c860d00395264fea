"""Autograd of the fused family: the eager autograd node around one fused forward launch, and
the three backward strategies the policy chooses between (fastna._policy.backward_mode):

- fused: the fused backward kernel (fastna._C.fused_backward) on the forward's saved out and
  lse; it takes a gradient into lse as its dlse input, so return_lse gradients and the extras
  merge stay on it.  Deterministic (no atomics).
- naive: the naive CUDA backward recomputing the logits from q and k (no lse input).
- reference: the reference's autograd recomputation (slow, memory-bounded).
"""
from __future__ import annotations

import torch

from .. import _policy
from .. import reference as _reference
from .. import _table
from . import _fused_launch
from . import naive as _naive
from ._base import grad_of_out_lse


def fused(q, k, v, out, lse, pd, dout, dlse):
    return _fused_launch.backward(q, k, v, out, lse, pd, dout, dlse)


def naive(q, k, v, params, dout):
    return _naive.backward_recompute(q, k, v, params, dout)


def reference(q, k, v, params, dout, dlse):
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        out, lse = _reference.attention(*leaves, params, return_lse=True)
        return grad_of_out_lse(out, lse, leaves, dout, dlse)


def _naive_runs(q, params) -> bool:
    return bool(_table.rows(_table.NAIVE_BWD, params.rank, q.dtype, q.device))


class FusedNA(torch.autograd.Function):
    """(q, k, v) padded and aligned -> (out, lse), with the launch params and backward
    facts of the policy's choice (fastna._policy.Choice)."""

    @staticmethod
    def forward(ctx, q, k, v, params, choice):
        out, lse = _fused_launch.forward(q, k, v, params, choice.fwd_params)
        # out and lse are kept only when the fused backward will read them.
        ctx.keep_out = (any(ctx.needs_input_grad[:3]) and choice.bwd_runs
                        and _policy.forced_backward() in ("", "fused"))
        ctx.save_for_backward(q, k, v, *((out, lse) if ctx.keep_out else ()))
        ctx.params = params
        ctx.choice = choice
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v = ctx.saved_tensors[:3]
        if dout is None and dlse is None:
            return (None,) * 5
        mode = _policy.backward_mode(q, ctx.params, ctx.choice.bwd_runs, dlse is not None)
        if mode == "fused" and ctx.keep_out:
            out, lse = ctx.saved_tensors[3:]
            dq, dk, dv = fused(q, k, v, out, lse, ctx.choice.bwd_params, dout, dlse)
        elif mode == "naive" or (mode == "fused" and dlse is None and _naive_runs(q, ctx.params)):
            dq, dk, dv = naive(q, k, v, ctx.params, dout)
        else:
            dq, dk, dv = reference(q, k, v, ctx.params, dout, dlse)
        return dq, dk, dv, None, None
