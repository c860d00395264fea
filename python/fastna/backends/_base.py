"""What the backends share: the output allocator that honours FASTNA_POISON, the autograd step
of the recompute-based backward fallbacks (grad_of_out_lse), and the defaults of the optional
protocol methods (backends/_protocol.py)."""
from __future__ import annotations

import os

import torch

from ._protocol import Reason  # noqa: F401  (re-exported: backends import it from here)


def poison_enabled() -> bool:
    # Tests set FASTNA_POISON=1 so that anything a kernel forgets to write shows up as NaN.
    return os.environ.get("FASTNA_POISON", "0") not in ("", "0")


def alloc(shape, dtype, device):
    """torch.empty for kernel outputs; NaN-filled under FASTNA_POISON=1."""
    t = torch.empty(shape, dtype=dtype, device=device)
    if poison_enabled():
        t.fill_(float("nan"))
    return t


def grad_of_out_lse(out, lse, leaves, dout, dlse):
    """torch.autograd.grad of (out, lse) w.r.t. leaves, with incoming gradients dout and dlse
    (either may be None: that output takes no part)."""
    outs, grads = [], []
    if dout is not None:
        outs.append(out)
        grads.append(dout)
    if dlse is not None:
        outs.append(lse)
        grads.append(dlse.to(lse.dtype))
    return torch.autograd.grad(outs, leaves, grads, allow_unused=True)


def empty_result(query, value, return_lse):
    """The result of a call with an empty batch: no kernel launch."""
    out = query.new_empty((*query.shape[:-1], value.shape[-1]))
    lse = query.new_empty(query.shape[:-1], dtype=torch.float32)
    return (out, lse) if return_lse else out


def op_forward_via_forward(forward, q, k, v, ek, ev, params):
    """op_forward for a backend whose backward needs nothing saved but q/k/v/out/lse: its
    forward() without autograd, and an empty aux."""
    with torch.no_grad():
        out, lse = forward(q, k, v, params, ek, ev, return_lse=True)
    return out, lse, q.new_empty((0,), dtype=torch.float32)


def no_aux(q, extra_k, kernel):
    return (0,)

