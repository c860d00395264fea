"""Kernel operands: alignment, head-dim padding, (pointer, strides) arguments, the launch params
dict and the current stream -- what every CUDA backend hands fastna._C."""
from __future__ import annotations

import contextlib

import torch

from .. import _ext


def aligned(t) -> bool:
    """16-byte aligned pointer, contiguous head dim, strides in whole 16-byte chunks (8
    elements of 16 bits, 4 of float32): what the fused kernels read without a copy."""
    if t.data_ptr() % 16:
        return False
    vec = 16 // t.element_size()
    if t.is_contiguous():
        # Every stride of a contiguous tensor is a multiple of the last dim.
        return t.shape[-1] % vec == 0 or t.numel() == t.shape[-1]
    if t.stride(-1) != 1:
        return False
    return all(s % vec == 0 for n, s in zip(t.shape[:-1], t.stride()[:-1]) if n > 1)


def fit(t):
    """t itself when aligned(t), else a contiguous copy."""
    return t if aligned(t) else t.contiguous()


def pad_last(t, size):
    """t zero-padded along its last dim to `size` (differentiable; t itself if no padding)."""
    n = t.shape[-1]
    return t if n == size else torch.nn.functional.pad(t, (0, size - n))


def tensor_arg(t):
    """(pointer, strides); a dimension of size 1 is never stepped along, so its stride is
    passed as 0 (the binding's 16-byte-row check must not reject a sliced batch of one)."""
    shape = t.shape
    if 1 not in shape:
        return (t.data_ptr(), t.stride())
    return (t.data_ptr(), [0 if n == 1 else s for n, s in zip(shape, t.stride())])


def strided_arg(t):
    """(pointer, strides) as torch reports them; None for None."""
    return None if t is None else (t.data_ptr(), list(t.stride()))


def packed_arg(t):
    """(pointer, canonical contiguous strides) of a contiguous tensor (torch may report any
    stride on size-1 dims; the binding checks packed ones exactly)."""
    strides, acc = [], 1
    for n in reversed(t.shape):
        strides.append(acc)
        acc *= n
    return (t.data_ptr(), strides[::-1])


def launch_params(params, q, k, v, tile, num_extra=0, dim=None):
    """The params dict of the launch functions and of fastna._ext.can_implement; `dim`: the
    head dim q/k/v will be padded to (default: theirs)."""
    return {
        "dtype": _ext.DTYPE_NAMES.get(q.dtype, str(q.dtype)), "batch": q.shape[0],
        "heads": q.shape[-2], "heads_kv": k.shape[-2], "dim": dim or q.shape[-1],
        "dim_v": dim or v.shape[-1], "num_extra": num_extra, "scale": float(params.scale),
        "length": list(q.shape[1:params.rank + 1]), "kernel": list(params.kernel),
        "stride": list(params.stride), "dilation": list(params.dilation),
        "causal": [bool(c) for c in params.causal], "tile": tile,
    }


# The raw handle of a device's current stream without building a torch.cuda.Stream object
# (a microsecond or two per launch); torch.cuda.current_stream where torch lacks it.
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def stream(device):
    """The current CUDA stream of `device`, as the integer handle the bindings take."""
    if _raw_stream is None:
        return torch.cuda.current_stream(device).cuda_stream
    return _raw_stream(torch.cuda.current_device() if device.index is None else device.index)


def on_device(device):
    """A context that makes `device` current for a launch; nothing to do (and no device
    switch paid twice) when it already is."""
    if device.index is None or device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(device)
