"""Backend "fused": the sm80-class fused kernels (include/fastna/fused; ops fused_fwd /
fused_bwd of the kernel table), float16 / bfloat16, and float32 on TF32 tensor cores.

What it wraps around the kernels (head-dim padding, Dv != D, additional KV tokens, layouts):
backends/_fused_family.py.  Which tile runs (default, q16x8_kv4x8, the small-window tile) and
which backward (fused, naive, reference): fastna._policy.

float32 runs on TF32 tensor cores (q, k, v and the probabilities rounded to TF32, fp32
accumulation, softmax, out and lse): relative errors around 1e-4 to 1e-3, the precision of
torch matmuls with torch.backends.cuda.matmul.allow_tf32.  backend="fused" always runs it;
backend=None only while allow_tf32 is True (check_auto).  Its gradients run the naive backward
(there is no float32 fused backward), or the reference's recomputation with an lse gradient.
"""
from __future__ import annotations

import torch

from .. import _table
from . import _fused_family
from ._base import Reason

name = "fused"
via_custom_op = True
DTYPES = (torch.float16, torch.bfloat16, torch.float32)   # float32: TF32 tensor cores


def available() -> bool:
    """A fused_fwd instance that runs on the current CUDA device."""
    return _table.runnable_here(_fused_family.FWD)


def check(query, key, value, params, additional_keys=None, additional_values=None):
    why = _fused_family.unavailable(name)
    if why is not None:
        return why
    if query.dtype not in DTYPES:
        return Reason(f"it supports float16, bfloat16 and float32 (on TF32 tensor cores), got "
                      f"{query.dtype} (backend='reference' takes float64)", TypeError)
    return _fused_family.check("default", query, key, value, params)


def check_auto(query, key, value, params, additional_keys=None, additional_values=None):
    """backend=None's condition on top of check(): float32 (computed in TF32) only while
    torch.backends.cuda.matmul.allow_tf32 is True, torch's own switch for TF32 matmuls."""
    if query.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return Reason("float32 runs on TF32 tensor cores in the fused kernel; backend=None "
                      "takes it only while torch.backends.cuda.matmul.allow_tf32 is True "
                      "(or pass backend='fused')", TypeError)
    return None


_members = _fused_family.Members(name, None)
choose, forward = _members.choose, _members.forward
op_forward, aux_shape, op_backward = _members.op_forward, _members.aux_shape, _members.op_backward
