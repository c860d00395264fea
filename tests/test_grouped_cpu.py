"""fastna.backends.fused_grouped's Python side on the CPU: the per-problem views, lse rows and
gradient buffers a layout hands the grouped bindings.  A stub module stands in for fastna._C:
it finds each (data_ptr, strides) argument inside the tensors the call allocated or received,
runs the reference on the problem, and writes the results through the same views -- so a wrong
offset, stride or lse row shows up as a wrong result.  (The kernels themselves: the GPU suite.)"""
import random

import torch

import fastna
from fastna import _args, _ext, _heads, reference
from fastna.backends import fused_grouped
from numerics import rel_error, random_window_params


class _Memory:
    """Tensors by storage, to turn a (data_ptr, strides) argument back into a view."""

    def __init__(self):
        self.tensors = []

    def add(self, t):
        self.tensors.append(t)
        return t

    def view(self, arg, shape):
        ptr, strides = arg
        for t in self.tensors:
            base, size = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
            if base <= ptr < base + size:
                offset = (ptr - base) // t.element_size()
                flat = t.new_empty(0).set_(t.untyped_storage())
                return flat.as_strided(shape, strides, offset)
        raise AssertionError(f"pointer {ptr:#x} is in no known tensor")


class _StubModule:
    def __init__(self, memory):
        self.memory = memory
        self.calls = []

    def _rows(self, arg, pd, shape):
        """An lse-like [B, N, H] or [B, *spatial, H] argument as [B, *spatial, H]."""
        n = int(torch.Size(pd["length"]).numel())
        flat = [pd["batch"], n, pd["heads"]] if len(arg[1]) == 3 else shape + [pd["heads"]]
        return self.memory.view(arg, flat).view(*shape, pd["heads"])

    def _problem(self, pd, q, k, v):
        m = self.memory
        shape = [pd["batch"], *pd["length"]]
        qv = m.view(q, shape + [pd["heads"], pd["dim"]])
        kv = m.view(k, shape + [pd["heads_kv"], pd["dim"]])
        vv = m.view(v, shape + [pd["heads_kv"], pd["dim_v"]])
        params = _args.normalize(qv, kv, vv, pd["kernel"], pd["stride"], pd["dilation"], pd["causal"],
                                 pd["scale"])
        return shape, qv, kv, vv, params

    def fused_grouped_forward(self, problems, stream):
        self.calls.append(("forward", len(problems)))
        for pd, q, k, v, out, lse in problems:
            shape, qv, kv, vv, params = self._problem(pd, q, k, v)
            o, l = reference.attention(qv, kv, vv, params, return_lse=True)
            self.memory.view(out, shape + [pd["heads"], pd["dim_v"]]).copy_(o)
            self._rows(lse, pd, shape).copy_(l)

    def fused_grouped_backward(self, problems, stream):
        self.calls.append(("backward", len(problems)))
        for pd, q, k, v, out, dout, lse, dlse, dq, dk, dv in problems:
            shape, qv, kv, vv, params = self._problem(pd, q, k, v)
            leaves = [t.detach().clone().requires_grad_() for t in (qv, kv, vv)]
            with torch.enable_grad():    # a Function's backward runs without grad mode
                o, l = reference.attention(*leaves, params, return_lse=True)
            go = self.memory.view(dout, shape + [pd["heads"], pd["dim_v"]])
            gl = torch.zeros_like(l) if dlse is None else self._rows(dlse, pd, shape)
            grads = torch.autograd.grad([o, l], leaves, [go, gl.to(l.dtype)])
            for arg, g in zip((dq, dk, dv), grads):
                self.memory.view(arg, list(g.shape)).copy_(g)


def _patch(monkeypatch):
    memory = _Memory()
    stub = _StubModule(memory)
    real_alloc = fused_grouped.alloc
    monkeypatch.setattr(_ext, "load", lambda: stub)
    monkeypatch.setattr(fused_grouped, "alloc", lambda *a: memory.add(real_alloc(*a)))
    monkeypatch.setattr(fused_grouped, "stream", lambda device: 0)
    return stub, memory


def test_varlen_layout_views_lse_rows_and_gradients(monkeypatch):
    stub, memory = _patch(monkeypatch)
    rng = random.Random(3)
    for rank in (1, 2, 3):
        shapes = [tuple(rng.randint(3, 7) for _ in range(rank)) for _ in range(4)]
        params = [random_window_params(rng, s) for s in shapes]
        kernel, stride, dilation, causal = (list(x) for x in zip(*params))
        total = sum(torch.Size(s).numel() for s in shapes)
        g = torch.Generator().manual_seed(rank)
        q, k, v = (memory.add(torch.randn(total, h, 8, generator=g, dtype=torch.float64))
                   for h in (4, 2, 2))
        dout = memory.add(torch.randn(total, 4, 8, generator=g, dtype=torch.float64))
        # fp32, as the kernels take it (a converted copy would be a tensor the stub cannot find)
        dlse = memory.add(torch.randn(total, 4, generator=g, dtype=torch.float64).float())
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        for t in leaves:
            memory.add(t)
        samples = _args.normalize_varlen(*leaves, shapes, kernel, stride, dilation, causal)
        out, lse = fused_grouped.attention(*leaves, fused_grouped.VarlenLayout(samples))
        got = torch.autograd.grad([out, lse], leaves, [dout, dlse])
        ref_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        rout, rlse = fastna.neighborhood_attention_varlen(*ref_leaves, shapes, kernel, stride, dilation,
                                                          causal, return_lse=True, backend="reference")
        want = torch.autograd.grad([rout, rlse], ref_leaves, [dout, dlse])
        # lse is fp32 (the kernels' layout), the rest float64
        assert rel_error(out, rout) < 1e-12 and rel_error(lse, rlse) < 1e-6
        for a, b in zip(got, want):
            assert rel_error(a, b) < 1e-12
    assert stub.calls == [("forward", 4), ("backward", 4)] * 3


def test_head_group_layout_views_lse_blocks_and_shared_kv_gradients(monkeypatch):
    stub, memory = _patch(monkeypatch)
    rng = random.Random(5)
    cases = [((9, 7), [2, 2, 4], 4), ((9, 7), [1, 1, 2, 4], 8), ((40,), [3, 1, 2], 2)]
    for shape, head_groups, Hkv in cases:     # Hkv 2 with groups [3, 1, 2]: groups share a kv head
        H = sum(head_groups)
        params = [random_window_params(rng, shape) for _ in head_groups]
        kernel, stride, dilation, causal = (list(x) for x in zip(*params))
        g = torch.Generator().manual_seed(len(shape))
        q = memory.add(torch.randn(2, *shape, H, 8, generator=g, dtype=torch.float64))
        k, v = (memory.add(torch.randn(2, *shape, Hkv, 8, generator=g, dtype=torch.float64))
                for _ in range(2))
        dout = memory.add(torch.randn_like(q))
        dlse = torch.randn(q.shape[:-1], generator=g, dtype=torch.float64).float()
        leaves = [memory.add(t.clone().requires_grad_()) for t in (q, k, v)]
        groups = _heads.groups_of(len(shape), *leaves, head_groups, kernel, stride, dilation, causal,
                                  None, None, None)
        out, lse = fused_grouped.attention(*leaves, fused_grouped.HeadGroupLayout(groups, q))
        got = torch.autograd.grad([out, lse], leaves, [dout, dlse])
        ref_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        rout, rlse = fastna.neighborhood_attention(*ref_leaves, kernel, stride, dilation, causal,
                                                   head_groups=head_groups, return_lse=True,
                                                   backend="reference")
        want = torch.autograd.grad([rout, rlse], ref_leaves, [dout, dlse.double()])
        assert rel_error(out, rout) < 1e-12 and rel_error(lse, rlse) < 1e-6
        for a, b in zip(got, want):
            assert rel_error(a, b) < 1e-6
    assert [c[0] for c in stub.calls] == ["forward", "backward"] * len(cases)


def test_head_groups_with_backend_fused_take_one_grouped_launch(monkeypatch):
    """fastna.neighborhood_attention(head_groups=..., backend="fused") runs every group in one
    grouped launch where the grouped kernels are built (faked here: the stub runs them)."""
    stub, memory = _patch(monkeypatch)
    monkeypatch.setattr(fused_grouped, "unavailable", lambda *a: None)
    g = torch.Generator().manual_seed(0)
    q, k, v = (memory.add(torch.randn(1, 12, 10, 4, 8, generator=g, dtype=torch.float64))
               for _ in range(3))
    args = (q, k, v, [3, (5, 3)], 1, [1, 2], [False, (True, False)])
    out = fastna.neighborhood_attention(*args, head_groups=[2, 2], backend="fused")
    want = fastna.neighborhood_attention(*args, head_groups=[2, 2], backend="reference")
    assert stub.calls == [("forward", 2)]
    assert rel_error(out, want) < 1e-12


def test_varlen_with_backend_fused_takes_one_grouped_launch(monkeypatch):
    """fastna.neighborhood_attention_varlen(..., backend="fused") runs every sample in one
    grouped launch where the grouped kernels are built (faked here: the stub runs them), and
    explain_varlen says so."""
    stub, memory = _patch(monkeypatch)
    monkeypatch.setattr(fused_grouped, "unavailable", lambda *a: None)
    shapes = [(5, 7), (9, 4), (5, 7)]
    total = sum(a * b for a, b in shapes)
    g = torch.Generator().manual_seed(1)
    q, k, v = (memory.add(torch.randn(total, 2, 8, generator=g, dtype=torch.float64)) for _ in range(3))
    args = (q, k, v, shapes, [3, (3, 2), 5], 1, [1, (2, 1), 1], [False, (True, False), True])
    out, lse = fastna.neighborhood_attention_varlen(*args, return_lse=True, backend="fused")
    want, wlse = fastna.neighborhood_attention_varlen(*args, return_lse=True, backend="reference")
    assert stub.calls == [("forward", 3)]
    assert rel_error(out, want) < 1e-12 and rel_error(lse, wlse) < 1e-6
    assert fastna.varlen.explain_varlen(*args, backend="fused").startswith(
        "grouped kernels: 3 problem(s) in one forward launch")
