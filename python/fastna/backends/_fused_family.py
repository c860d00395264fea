"""The fused kernel family (ops fused_fwd / fused_bwd of the kernel table) behind backends
"fused" and "hopper": what the kernels run, widened without new kernels.

- Head dims the build lacks, and Dv != D: q and k are zero-padded along D, v along Dv, to the
  smallest compiled head dim P >= max(D, Dv) (zero columns leave every dot product, hence the
  softmax, unchanged; the output's padded columns are zero and are sliced off).  The softmax
  scale stays the caller's.  Declined (with the reason) only when no compiled head dim fits.
- Additional KV tokens: the kernel computes the neighborhood's (out_na, lse_na); attention to
  the extra tokens runs in torch and is merged through the logsumexp (_merge.py); the merge is
  differentiable, so the backward sends a gradient into the kernel's lse (dlse).
- Layout: the kernels read 16-byte chunks (_layout.aligned); other tensors are copied.

Which tile runs, which backward: fastna._policy (steps 2-5).  What a kernel can run:
fastna._ext.can_implement.  The launches: _fused_launch.py; autograd: _fused_autograd.py.  The
protocol members both backends share: Members.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from .. import _ext, _policy
from .. import _table
from . import _fused_autograd, _fused_launch, _merge
from ._base import Reason, empty_result, no_aux, op_forward_via_forward
from ._layout import fit, launch_params, pad_last
from .._protocol import Choice

FWD, BWD = _table.FUSED_FWD, _table.FUSED_BWD


def unavailable(name: str, tile: Optional[str] = None) -> Optional[Reason]:
    """Why backend `name` cannot run here at all (the table's answer), or None."""
    why = _table.unavailable(name, FWD, tile)
    return None if why is None else Reason(why)


def head_dims(query, params):
    """{head dim: tiles} of fused_fwd for this call's rank, dtype and device."""
    return _table.tiles_by_head_dim(FWD, params.rank, query.dtype, query.device)


def head_dim_reason(query, value, params, dims) -> Optional[Reason]:
    D, Dv = query.shape[-1], value.shape[-1]
    if _table.padded_head_dim(D, Dv, dims) is not None:
        return None
    built = ", ".join(str(d) for d in sorted(dims)) or "none"
    cc = _ext.device_cc(query.device)
    dev = f" on compute capability {divmod(cc, 10)}" if cc is not None else ""
    what = f"head dim {D}" if D == Dv else f"head dims D={D}, Dv={Dv}"
    return Reason(f"{what} not instantiated for rank {params.rank}, {query.dtype}{dev} and no "
                  f"larger compiled head dim to zero-pad to (built: {built}; rebuild with "
                  f"FASTNA_HEAD_DIMS including one >= {max(D, Dv)})")


def check(tile: str, query, key, value, params) -> Optional[Reason]:
    """Device, head dim and can_implement for the family's tile `tile` (dtype and
    availability are the backend's own checks)."""
    if _ext.device_cc(query.device) is None:
        return Reason(f"it needs CUDA tensors, got query on {query.device}", ValueError)
    dims = head_dims(query, params)
    why = head_dim_reason(query, value, params, dims)
    if why is not None:
        return why
    if query.shape[0] == 0:
        return None               # an empty batch launches nothing
    P = _table.padded_head_dim(query.shape[-1], value.shape[-1], dims)
    why = _ext.can_implement(FWD, launch_params(params, query, key, value, tile, dim=P))
    return Reason(why) if why else None


def choose(name: str, own_tile: Optional[str], query, key, value, params,
           notes: Optional[List[str]] = None, tile: Optional[str] = None) -> Choice:
    """The policy's tiles for an accepted call; `tile`: one the caller names."""
    dims = head_dims(query, params)
    P = _table.padded_head_dim(query.shape[-1], value.shape[-1], dims)
    if P is None:
        raise NotImplementedError(f"backend={name!r} cannot run this call: "
                                  f"{head_dim_reason(query, value, params, dims)}")
    base = launch_params(params, query, key, value, None, dim=P)
    if query.shape[0] == 0:       # an empty batch launches nothing
        return Choice(name, tile or own_tile or "default", P, "default")
    fwd_tile = _policy.fused_tile(own_tile, base, dims[P], tile, notes)
    bwd_tile = _policy.backward_tile(own_tile, base, notes)
    bwd_params = {**base, "tile": bwd_tile}
    return Choice(name, fwd_tile, P, bwd_tile, tuple(notes or ()), {**base, "tile": fwd_tile},
                  bwd_params, _policy.fused_backward_runs(bwd_params))


def forward(choice, query, key, value, params, additional_keys=None, additional_values=None,
            return_lse=False):
    """Runs the choice's tile; float32 runs on TF32 tensor cores."""
    if query.shape[0] == 0:
        return empty_result(query, value, return_lse)
    P, Dv = choice.head_dim, value.shape[-1]
    # Zero columns leave q.k unchanged; params.scale is the caller's (of the original D).
    q, k, v = fit(pad_last(query, P)), fit(pad_last(key, P)), fit(pad_last(value, P))
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        out, lse = _fused_autograd.FusedNA.apply(q, k, v, params, choice)
    else:  # no autograd node to build: skip Function.apply's bookkeeping (host time)
        out, lse = _fused_launch.forward(q, k, v, params, choice.fwd_params)
    if Dv != P:
        out = out[..., :Dv]
    ek, ev = additional_keys, additional_values
    if ek is not None and ek.shape[1] > 0:
        out, lse = _merge.attend_and_merge(query, out, lse, ek, ev, params.scale)
    elif Dv != P:
        out = out.contiguous()
    return (out, lse) if return_lse else out


def op_backward(choice, q, k, v, out, lse, params, dout, dlse):
    """The custom op's backward without additional KV tokens: the fused backward kernel on
    the op's saved out and lse, without recomputing the forward; None when the policy does
    not put this call on the fused backward (the caller differentiates forward() instead).

    out / lse are forward()'s: the kernel's out (at P) sliced to Dv, whose padded columns were
    exactly zero (v was zero-padded), so zero-padding it back restores the kernel's."""
    if q.shape[0] == 0 or (dout is None and dlse is None):
        return None
    if _policy.forced_backward() not in ("", "fused"):
        return None
    if not choice.bwd_runs:
        return None
    P, D, Dv = choice.head_dim, q.shape[-1], v.shape[-1]
    qp, kp, vp = fit(pad_last(q, P)), fit(pad_last(k, P)), fit(pad_last(v, P))
    outp = fit(pad_last(out.to(q.dtype), P))
    doutp = None if dout is None else pad_last(dout.to(q.dtype), P)
    dq, dk, dv = _fused_autograd.fused(qp, kp, vp, outp, lse, choice.bwd_params, doutp, dlse)
    if P != D:
        dq, dk = dq[..., :D], dk[..., :D]
    if P != Dv:
        dv = dv[..., :Dv]
    return dq, dk, dv


class Members:
    """The protocol members backends "fused" and "hopper" share (choose, forward, op_forward,
    aux_shape, op_backward) for backend `name`; own_tile: the tile it runs (None: the policy's
    choice among the family's tiles).  choose / forward take tile=: a compiled tile to run."""

    aux_shape = staticmethod(no_aux)

    def __init__(self, name: str, own_tile: Optional[str]):
        self.name = name
        self.own_tile = own_tile

    def choose(self, query, key, value, params, notes=None, tile=None) -> Choice:
        return choose(self.name, self.own_tile, query, key, value, params, notes, tile)

    def forward(self, query, key, value, params, additional_keys=None, additional_values=None,
                return_lse=False, choice=None, tile=None):
        """Runs `choice` (None: the policy's, or the compiled tile `tile` names)."""
        if choice is None:
            choice = self.choose(query, key, value, params, tile=tile)
        return forward(choice, query, key, value, params, additional_keys, additional_values,
                       return_lse)

    def op_forward(self, q, k, v, ek, ev, params):
        return op_forward_via_forward(self.forward, q, k, v, ek, ev, params)

    def op_backward(self, q, k, v, ek, ev, out, lse, aux, params, dout, dlse):
        if ek is not None:
            return None
        return op_backward(self.choose(q, k, v, params), q, k, v, out, lse, params, dout, dlse)
