"""What the backends share: the output allocator that honours FASTNA_POISON, the autograd step
of the recompute-based backward fallbacks (grad_of_out_lse) and the empty-batch result; re-exports
Reason and the protocol defaults (fastna/_protocol.py) for the backends."""
from __future__ import annotations

import torch

from .. import _ext
from .._protocol import Reason, no_aux, op_forward_via_forward  # noqa: F401  (re-exported)


def poison_enabled() -> bool:
    # Tests set FASTNA_POISON=1 so that anything a kernel forgets to write shows up as NaN.
    return (_ext.getenv("FASTNA_POISON") or "0") not in ("", "0")


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
