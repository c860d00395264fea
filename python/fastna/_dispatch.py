"""The one call path of fastna.neighborhood_attention / na1d / na2d / na3d:
validate (fastna._args), choose (fastna._policy), run (the backend's forward, or the custom
op fastna::na_forward under torch.compile).

Eager calls cache the first two steps: validation, backend and kernel choice depend only on
the call's signature -- rank, the tensors' shapes, dtypes, devices and requires_grad, the
arguments, grad mode, the backend name and the knobs the policy reads (FASTNA_SMALL_WINDOW,
FASTNA_FUSED_TILE, torch.backends.cuda.matmul.allow_tf32) -- so a repeated call costs one
dictionary lookup and the launch.  Arguments of other types than int / bool / float / None /
tuples and lists of them (numpy scalars, say) take the uncached path, which raises the errors;
failed calls are never cached.  fastna._ext.clear_caches() empties the cache (the registry
does on every change).

Under torch.compile the choice is made once at trace time on the tensors' specs
(fastna._ops.select_traced) and the backends that call fastna._C run as the custom op, so the
compiled graph holds one opaque node with a registered backward.  Eager calls go straight to
the backend's forward(), which is differentiable itself: the op's Python dispatch costs more
host time than a small problem's kernel.  FASTNA_EAGER_CUSTOM_OP=1 routes eager calls
through the op too.
"""
from __future__ import annotations

import os

import torch

from . import _args, _ext, _ops, _policy, _registry

_EAGER_CUSTOM_OP = os.environ.get("FASTNA_EAGER_CUSTOM_OP", "0") not in ("", "0")
_MAX_PLANS = 4096
_plans: dict = {}
_ext.on_clear(_plans.clear)


class _Uncacheable(Exception):
    pass


def _ints(x):
    """An int / bool argument or a tuple / list of them, hashable without bool == int."""
    t = type(x)
    if t is int:
        return x
    if t is bool:
        return ("bool", x)
    if t is tuple or t is list:
        return tuple(_ints(e) if type(e) in (int, bool) else _raise() for e in x)
    return _raise()


def _scale(x):
    t = type(x)
    if x is None or t is float or t is int:
        return x
    return _raise()


def _raise():
    raise _Uncacheable


def _tensor(t):
    if t is None:
        return None
    return (t.shape, t.dtype, t.device, t.requires_grad)


def _key(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale, ek, ev,
         backend):
    return (rank, _tensor(query), _tensor(key), _tensor(value), _tensor(ek), _tensor(ev),
            _ints(kernel_size), _ints(stride), _ints(dilation), _ints(is_causal), _scale(scale),
            backend, torch.is_grad_enabled(), _ext.getenv("FASTNA_SMALL_WINDOW"),
            _ext.getenv("FASTNA_FUSED_TILE"),
            query.dtype is torch.float32 and torch.backends.cuda.matmul.allow_tf32)


def plan(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale, ek, ev,
         backend):
    """(params, backend module, Choice) of a call, validated; cached per call signature."""
    try:
        cache_key = _key(rank, query, key, value, kernel_size, stride, dilation, is_causal,
                         scale, ek, ev, backend)
        hit = _plans.get(cache_key)
    except (_Uncacheable, AttributeError, TypeError):
        cache_key = hit = None
    if hit is not None:
        return hit
    params = _args.normalize(query, key, value, kernel_size, stride, dilation, is_causal,
                             scale, ek, ev, rank=rank)
    _args.check_backend_arg(backend)
    mod = _policy.select(backend, query, key, value, params, ek, ev)
    hit = (params, mod, mod.choose(query, key, value, params))
    if cache_key is not None:
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()
        _plans[cache_key] = hit
    return hit


def _autocast_dtype(query):
    """The autocast dtype active for query's device type, or None."""
    if not isinstance(query, torch.Tensor):
        return None
    device_type = query.device.type
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _cast(t, dtype):
    # What autocast does to a lower-precision op's inputs: floating tensors other than
    # float64 go to the autocast dtype.
    if isinstance(t, torch.Tensor) and t.is_floating_point() and \
            t.dtype not in (torch.float64, dtype):
        return t.to(dtype)
    return t


def attention(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale,
              ek, ev, return_lse, backend):
    """One call of the public API (rank None: from query's dims)."""
    if type(return_lse) is not bool:
        _args.check_return_lse(return_lse)
    dtype = _autocast_dtype(query)
    if dtype is None:
        return _run(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                    ek, ev, return_lse, backend)
    # Autocast: inputs in the autocast dtype, the backend (and its backward) with autocast
    # off, so the kernels see one dtype and the reference keeps its fp32 math.
    query, key, value, ek, ev = (_cast(t, dtype) for t in (query, key, value, ek, ev))
    with torch.autocast(query.device.type, enabled=False):
        return _run(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                    ek, ev, return_lse, backend)


def _run(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale, ek, ev,
         return_lse, backend):
    if torch.compiler.is_compiling():
        return _run_traced(rank, query, key, value, kernel_size, stride, dilation, is_causal,
                           scale, ek, ev, return_lse, backend)
    params, mod, choice = plan(rank, query, key, value, kernel_size, stride, dilation,
                               is_causal, scale, ek, ev, backend)
    if _EAGER_CUSTOM_OP and mod.via_custom_op:
        return _ops.run(query, key, value, params, ek, ev, return_lse, mod.name)
    return mod.forward(query, key, value, params, ek, ev, return_lse=return_lse,
                       choice=choice)


def _run_traced(rank, query, key, value, kernel_size, stride, dilation, is_causal, scale, ek,
                ev, return_lse, backend):
    params = _args.normalize(query, key, value, kernel_size, stride, dilation, is_causal,
                             scale, ek, ev, rank=rank)
    _args.check_backend_arg(backend)
    # The policy calls into fastna._C and torch.cuda, which dynamo cannot trace: decide once
    # at trace time on the tensors' specs.
    specs = tuple(_ops.spec(t) for t in (query, key, value, ek, ev))
    name = _ops.select_traced(backend, specs, params.kernel, params.stride, params.dilation,
                              params.causal, torch.is_grad_enabled())
    if name.startswith("!"):
        _ops.raise_selection_error(name)
    mod = _registry.lookup(name)
    if mod.via_custom_op:
        return _ops.run(query, key, value, params, ek, ev, return_lse, mod.name)
    return mod.forward(query, key, value, params, ek, ev, return_lse=return_lse)
