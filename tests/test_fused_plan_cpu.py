"""The fused launches' plan cache (fastna.backends._fused_launch): one fastna._C.fused_plan per
launch params dict, reused by every launch with that dict, forgotten by clear_caches; the
launch hands the plan the tensor arguments the bindings take.  CPU: a stub module stands in
for fastna._C (the real plan path runs in the GPU suite)."""
import torch

from fastna import _ext
from fastna.backends import _fused_launch


class _StubPlan:
    def __init__(self, op, pd):
        self.op, self.pd, self.calls = op, pd, []

    def forward(self, q, k, v, out, lse, stream):
        self.calls.append(("forward", q, k, v, out, lse, stream))

    def backward(self, *args, workspace=None):
        self.calls.append(("backward", args, workspace))


class _StubModule:
    def __init__(self):
        self.plans = []

    def fused_plan(self, op, pd):
        plan = _StubPlan(op, pd)
        self.plans.append(plan)
        return plan


def _patched(monkeypatch):
    stub = _StubModule()
    monkeypatch.setattr(_ext, "load", lambda: stub)
    monkeypatch.setattr(_fused_launch, "stream", lambda device: 7)
    monkeypatch.setattr(_fused_launch, "on_device", lambda device: _Null())
    _ext.clear_caches()
    return stub


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_one_plan_per_params_dict(monkeypatch):
    stub = _patched(monkeypatch)
    try:
        q = torch.randn(1, 4, 4, 2, 8)
        pd = {"tile": "default"}
        for _ in range(3):
            out, lse = _fused_launch.forward(q, q, q, None, pd)
            assert out.shape == q.shape and lse.shape == q.shape[:-1]
        assert len(stub.plans) == 1 and stub.plans[0].op == "fused_fwd"
        assert len(stub.plans[0].calls) == 3
        name, tq, tk, tv, tout, tlse, s = stub.plans[0].calls[0]
        assert tq[0] == q.data_ptr() and list(tq[1]) == [0, 64, 16, 8, 1] and s == 7
        assert list(tlse[1]) == [32, 8, 2, 1]
        # an equal but distinct dict is another call signature: its own plan
        _fused_launch.forward(q, q, q, None, dict(pd))
        assert len(stub.plans) == 2
        # the backward's plan is keyed the same way, by its own dict
        bpd = {"tile": "default"}
        for _ in range(2):
            _fused_launch.backward(q, q, q, q, torch.zeros(q.shape[:-1]), bpd, None, None)
        assert [p.op for p in stub.plans] == ["fused_fwd", "fused_fwd", "fused_bwd"]
        assert len(stub.plans[2].calls) == 2
        _ext.clear_caches()
        _fused_launch.forward(q, q, q, None, pd)
        assert len(stub.plans) == 4          # forgotten with the other derived caches
    finally:
        monkeypatch.undo()
        _ext.clear_caches()


def test_size_one_dims_pass_stride_zero():
    """A dimension of size 1 is never stepped along: its stride goes to the binding as 0."""
    from fastna.backends._layout import tensor_arg
    t = torch.randn(1, 5, 3, 8)
    ptr, strides = tensor_arg(t)
    assert ptr == t.data_ptr() and list(strides) == [0, 24, 8, 1]
    u = torch.randn(2, 5, 3, 8)
    assert list(tensor_arg(u)[1]) == [120, 24, 8, 1]
