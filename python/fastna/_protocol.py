"""What a backend is: the protocols the registry (backends/_registry.py), the dispatch path
(fastna._dispatch) and the custom ops (fastna._ops) rely on, and the Reason a check returns.

A backend is a module (or any object) with these attributes; it never reaches into another
backend's private names.  Kernel capabilities come from the compiled table (fastna/_table.py,
fastna._ext.can_implement), never from a copy in the backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence, Tuple, runtime_checkable

import torch
from torch import Tensor


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


@dataclass(frozen=True)
class Choice:
    """What runs a call: backend name; for the fused family the forward tile, the head dim
    it runs at and the backward tile; `notes`: why the alternatives were not taken."""
    backend: str
    tile: Optional[str] = None
    head_dim: Optional[int] = None
    bwd_tile: Optional[str] = None
    notes: Tuple[str, ...] = field(default=())
    # The launch params dicts of the forward and backward tiles, and whether the fused
    # backward kernel takes the problem (fused family; fixed per call signature).
    fwd_params: Optional[dict] = field(default=None, compare=False, repr=False)
    bwd_params: Optional[dict] = field(default=None, compare=False, repr=False)
    bwd_runs: bool = field(default=False, compare=False, repr=False)

    def describe(self) -> str:
        if self.tile is None:
            return f"backend {self.backend!r}"
        return (f"backend {self.backend!r}: fused_fwd tile {self.tile!r} at head dim "
                f"{self.head_dim}, fused_bwd tile {self.bwd_tile!r}")


@runtime_checkable
class AttentionBackend(Protocol):
    """A backend of fastna.neighborhood_attention.

    check() says whether it runs a validated call (None) or why not; check_auto() (optional
    attribute) is a further condition for backend=None only.  choose() returns the kernel
    choice of a call check() accepted (fastna._policy decides it; notes collects why other
    tiles were not taken),
    forward() runs it eagerly with its own autograd.  via_custom_op: whether calls go through
    the custom ops fastna::na_forward / na_backward under torch.compile, which call
    op_forward() and op_backward() (None: differentiate forward() instead).
    """

    name: str
    via_custom_op: bool

    def available(self) -> bool: ...

    def check(self, query: Tensor, key: Tensor, value: Tensor, params: Any,
              additional_keys: Optional[Tensor] = None,
              additional_values: Optional[Tensor] = None) -> Optional[Reason]: ...

    def choose(self, query: Tensor, key: Tensor, value: Tensor, params: Any,
               notes: Optional[list] = None) -> Choice: ...

    def forward(self, query: Tensor, key: Tensor, value: Tensor, params: Any,
                additional_keys: Optional[Tensor] = None,
                additional_values: Optional[Tensor] = None, return_lse: bool = False,
                choice: Optional[Choice] = None) -> Any: ...

    def op_forward(self, q: Tensor, k: Tensor, v: Tensor, ek: Optional[Tensor],
                   ev: Optional[Tensor], params: Any) -> Tuple[Tensor, Tensor, Tensor]: ...

    def aux_shape(self, q: Tensor, extra_k: Optional[Tensor],
                  kernel: Sequence[int]) -> Tuple[int, ...]: ...

    def op_backward(self, q: Tensor, k: Tensor, v: Tensor, ek: Optional[Tensor],
                    ev: Optional[Tensor], out: Tensor, lse: Tensor, aux: Tensor, params: Any,
                    dout: Optional[Tensor], dlse: Optional[Tensor]) -> Optional[tuple]: ...


@runtime_checkable
class UnfusedBackend(Protocol):
    """A backend of the unfused ops (fastna.ops_unfused): arguments arrive validated and
    normalized to per-axis tuples, heads-last layout; check() returns None or a reason str."""

    name: str

    def available(self) -> bool: ...

    def check(self, op: str, tensors: tuple, kernel: tuple, dilation: tuple,
              causal: tuple) -> Optional[str]: ...

    def qk(self, query, key, kernel, dilation, causal, rpb, additional_keys) -> Tensor: ...

    def av(self, attn, value, kernel, dilation, causal, additional_values) -> Tensor: ...


# ------------------------------------------------- defaults of the optional protocol members

def op_forward_via_forward(forward, q, k, v, ek, ev, params):
    """op_forward for a backend whose backward needs nothing saved but q/k/v/out/lse: its
    forward() without autograd, and an empty aux."""
    with torch.no_grad():
        out, lse = forward(q, k, v, params, ek, ev, return_lse=True)
    return out, lse, q.new_empty((0,), dtype=torch.float32)


def no_aux(q, extra_k, kernel):
    return (0,)

