"""A fake compiled kernel table for the CPU tests of the CUDA backends' Python layers.

faked(rows) replaces what fastna reads of the compiled module -- fastna._ext.kernel_table(),
can_implement(), the device's compute capability and free memory -- and, with
reference_launches=True, the fused forward / backward launches (fastna.backends._fused_launch)
by the float64 reference run on exactly what the kernels would receive.  Everything is
restored, and every cache derived from it cleared, on exit.
"""
import contextlib

import torch

from fastna import _args, _ext, _ops, reference
from fastna.backends import _fused_launch, _layout

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def row(op, tile, rank, dtype, head_dim, sm=80, arch="80", **supports):
    return {"op": op, "family": "sm90" if tile == "hopper" else "sm80", "tile": tile,
            "rank": rank, "dtype": _ext.DTYPE_NAMES.get(dtype, str(dtype)),
            "head_dim": head_dim, "arch": arch, "sm": sm, "qbox": (), "kvbox": (),
            "supports": {"stride": True, "dilation": True, "causal": True, **supports}}


def rows_for(op, tiles_by_dim, ranks=(1, 2, 3), dtypes=DTYPES):
    """Rows of `op` for every rank and dtype: {head dim: tiles}."""
    return [row(op, t, r, dt, d) for r in ranks for dt in dtypes
            for d, tiles in tiles_by_dim.items() for t in sorted(tiles)]


class Table:
    """The fake's state: rows, an optional extra rule for can_implement (op, params) ->
    reason, and the launches the kernels got."""

    def __init__(self, rows, rule=None):
        self.rows = list(rows)
        self.rule = rule
        self.forward_calls = []
        self.backward_calls = []

    def can_implement(self, op, pd):
        rank, dtype = len(pd["length"]), pd["dtype"]
        if not any(r["op"] == op and r["tile"] == pd["tile"] and r["rank"] == rank and
                   r["dtype"] == dtype and r["head_dim"] in (0, pd["dim"]) for r in self.rows):
            return (f"no instance {op} tile {pd['tile']} for rank {rank}, {dtype}, head dim "
                    f"{pd['dim']}")
        return (self.rule(op, pd) if self.rule else None) or ""


def _reference_forward(table):
    def forward(q, k, v, params, pd):
        P = q.shape[-1]
        assert k.shape[-1] == v.shape[-1] == P == pd["dim"] == pd["dim_v"]
        assert pd["num_extra"] == 0 and pd["scale"] == params.scale
        assert not table.can_implement("fused_fwd", pd), pd
        assert _layout.aligned(q) and _layout.aligned(k) and _layout.aligned(v)
        # Never where it could record a graph: inside the autograd Function, or without grads.
        assert not torch.is_grad_enabled() or not (q.requires_grad or k.requires_grad or
                                                   v.requires_grad)
        table.forward_calls.append(dict(P=P, pd=pd, q=q, k=k, v=v))
        out, lse = reference.attention(q, k, v, params, return_lse=True)
        return out, lse.float() if q.dtype != torch.float64 else lse
    return forward


def _reference_backward(table):
    def backward(q, k, v, out, lse, pd, dout, dlse):
        P = q.shape[-1]
        assert k.shape[-1] == v.shape[-1] == out.shape[-1] == P == pd["dim"] == pd["dim_v"]
        assert not table.can_implement("fused_bwd", pd), pd
        assert out.shape == q.shape[:-1] + (P,) and lse.shape == q.shape[:-1]
        assert all(_layout.aligned(t) for t in (q, k, v, out))
        table.backward_calls.append(dict(P=P, tile=pd["tile"], dlse=dlse is not None,
                                         dout=dout is not None))
        # (inside the custom op's impl the dispatcher excludes autograd: re-enable it)
        with _ops._autograd_on(), torch.enable_grad():
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            p = _args.normalize(*leaves, pd["kernel"], pd["stride"], pd["dilation"],
                                pd["causal"], pd["scale"], None, None)
            rout, rlse = reference.attention(*leaves, p, return_lse=True)
            # the kernel reads out/lse from the forward: they must be what it computed
            torch.testing.assert_close(out, rout.detach(), rtol=1e-12, atol=1e-12)
            tol = 1e-12 if lse.dtype == torch.float64 else 1e-6
            torch.testing.assert_close(lse.double(), rlse.detach().double(), rtol=tol,
                                       atol=tol)
            outs = [rout] + ([rlse] if dlse is not None else [])
            gs = [torch.zeros_like(rout) if dout is None else dout] + \
                ([dlse.to(rlse.dtype)] if dlse is not None else [])
            return torch.autograd.grad(outs, leaves, gs)
    return backward


@contextlib.contextmanager
def faked(rows, rule=None, cpu_cc=80, reference_launches=True, machine_cc=80):
    """The fake table in place; yields the Table.  cpu_cc: the compute capability a CPU
    device reports (None: CPU tensors are not CUDA tensors, as for real); machine_cc: the
    current CUDA device's (None: a machine without one)."""
    table = Table(rows, rule)
    real_cc = _ext.device_cc
    saved = [(_ext, n, getattr(_ext, n)) for n in ("kernel_table", "can_implement",
                                                   "device_cc", "free_memory")]
    saved += [(_fused_launch, n, getattr(_fused_launch, n)) for n in ("forward", "backward")]

    def device_cc(device=None):
        if device is None:
            return machine_cc
        if device.type == "cpu":
            return cpu_cc
        return real_cc(device)

    try:
        _ext.kernel_table = lambda: list(table.rows)
        _ext.can_implement = table.can_implement
        _ext.device_cc = device_cc
        _ext.free_memory = lambda device: 1 << 40
        if reference_launches:
            _fused_launch.forward = _reference_forward(table)
            _fused_launch.backward = _reference_backward(table)
        _ext.clear_caches()
        yield table
    finally:
        for obj, n, value in saved:
            setattr(obj, n, value)
        _ext.clear_caches()

