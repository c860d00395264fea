"""What the CUDA backends share: the Reason their check() returns (None = supported), the
output allocator that honours FASTNA_POISON, and the autograd step of the recompute-based
backward fallbacks (grad_of_out_lse)."""
from __future__ import annotations

import os

import torch


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


class Reason(str):
    """Why a backend cannot run a problem; a str that also knows which exception to raise.

    dtype problems are TypeErrors, device/shape problems ValueErrors, missing kernels
    NotImplementedErrors, so an explicit backend= choice fails like any other bad argument.
    """

    exc: type = NotImplementedError

    def __new__(cls, text: str, exc: type = NotImplementedError):
        self = super().__new__(cls, text)
        self.exc = exc
        return self

    def error(self, backend: str) -> Exception:
        return self.exc(f"backend={backend!r} cannot run this call: {self}")
