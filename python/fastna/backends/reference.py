"""Backend "reference": plain PyTorch on any device and float dtype (fastna.reference for the
attention, fastna.reference_unfused for the unfused ops), autograd through torch.  It takes
every call, so backend=None always finds a backend."""
from __future__ import annotations

from .. import reference as _ref
from ..reference_unfused import Unfused as unfused  # noqa: F401  (the unfused ops' backend)
from . import _base
from .._protocol import Choice

name = "reference"
# Plain torch ops, traced as they are under torch.compile (no custom op).
via_custom_op = False


def available() -> bool:
    return True


def check(query, key, value, params, additional_keys=None, additional_values=None):
    return None  # any device, any float dtype, any head dim


def choose(query, key, value, params, notes=None):
    return Choice(name)


def forward(query, key, value, params, additional_keys=None, additional_values=None,
            return_lse=False, choice=None):
    return _ref.attention(query, key, value, params, additional_keys, additional_values,
                          return_lse=return_lse)


def op_forward(q, k, v, ek, ev, params):
    return _base.op_forward_via_forward(forward, q, k, v, ek, ev, params)


aux_shape = _base.no_aux


def op_backward(q, k, v, ek, ev, out, lse, aux, params, dout, dlse):
    return None   # the op differentiates forward()
