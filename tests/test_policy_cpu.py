"""The call path on CPU: the plan cache of fastna._dispatch (what it keys on, that failures are
never cached), fastna.explain and `python -m fastna explain`, and the public functions'
signatures.  Kernel tables are faked (tests/fake_kernels.py)."""
import inspect
import subprocess
import sys

import pytest
import torch

import fastna
from fake_kernels import faked, rows_for
from fastna import _dispatch, _ext, _registry


@pytest.fixture
def clean_plans():
    _ext.clear_caches()
    yield _dispatch._plans
    _ext.clear_caches()


def _qkv(shape=(2, 8, 9, 2, 8), dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(3)]


def test_repeated_calls_hit_one_plan(clean_plans):
    q, k, v = _qkv()
    a = fastna.na2d(q, k, v, 3, dilation=(1, 2))
    assert len(clean_plans) == 1
    b = fastna.na2d(q, k, v, 3, dilation=(1, 2))
    assert len(clean_plans) == 1 and torch.equal(a, b)
    fastna.na2d(q, k, v, 3, dilation=[1, 2])          # a list: same plan as the tuple
    assert len(clean_plans) == 1
    fastna.na2d(q, k, v, 5)                            # other arguments: another plan
    with torch.no_grad():                              # other grad mode: another plan
        fastna.na2d(q, k, v, 3, dilation=(1, 2))
    assert len(clean_plans) == 3


def test_bool_and_int_arguments_do_not_share_a_plan(clean_plans):
    """True == 1 in Python: the cache must not let stride=True through after stride=1."""
    q, k, v = _qkv()
    fastna.na2d(q, k, v, 3, stride=1)
    with pytest.raises(TypeError, match="stride"):
        fastna.na2d(q, k, v, 3, stride=True)
    fastna.na2d(q, k, v, 3, is_causal=False)
    with pytest.raises(TypeError, match="is_causal"):
        fastna.na2d(q, k, v, 3, is_causal=0)
    with pytest.raises(TypeError, match="kernel_size"):
        fastna.na2d(q, k, v, 3.0)


def test_failed_calls_are_not_cached(clean_plans):
    q, k, v = _qkv()
    for _ in range(2):
        with pytest.raises(ValueError, match="kernel_size"):
            fastna.na2d(q, k, v, 30)
    assert not clean_plans


def test_other_argument_types_take_the_uncached_path(clean_plans):
    np = pytest.importorskip("numpy")
    q, k, v = _qkv()
    out = fastna.na2d(q, k, v, 3, is_causal=(np.bool_(True), False))
    assert out.shape == q.shape and not clean_plans


def test_registry_changes_forget_plans(clean_plans):
    q, k, v = _qkv()
    fastna.na2d(q, k, v, 3)
    assert clean_plans

    class Everything:
        name = "everything"

        @staticmethod
        def available():
            return True

        @staticmethod
        def check(*args):
            return None

        forward = staticmethod(fastna.backends.reference.forward)

    fastna.backends.register(Everything, priority=0)
    try:
        assert not clean_plans
        fastna.na2d(q, k, v, 3)
        (params, mod, choice), = clean_plans.values()
        assert mod.name == "everything" and choice.backend == "everything"
    finally:
        fastna.backends.unregister("everything")
    assert not clean_plans and "everything" not in _registry.order()


def test_policy_knobs_are_part_of_the_plan(clean_plans, monkeypatch):
    def rule(op, pd):
        return "too large" if pd["tile"] == "small" and max(pd["kernel"]) > 7 else ""

    monkeypatch.delenv("FASTNA_SMALL_WINDOW", raising=False)
    with faked(rows_for("fused_fwd", {32: {"default", "small"}}), rule=rule) as table:
        q, k, v = _qkv((1, 10, 10, 2, 32), torch.float16)
        fastna.na2d(q, k, v, 5, backend="fused")
        monkeypatch.setenv("FASTNA_SMALL_WINDOW", "0")
        fastna.na2d(q, k, v, 5, backend="fused")
        assert [c["pd"]["tile"] for c in table.forward_calls] == ["small", "default"]


def test_explain_names_the_choice_and_the_alternatives(monkeypatch):
    monkeypatch.delenv("FASTNA_SMALL_WINDOW", raising=False)
    monkeypatch.delenv("FASTNA_FUSED_TILE", raising=False)

    def rule(op, pd):
        return "window 9x9 does not fit" if pd["tile"] == "small" and max(pd["kernel"]) > 7 \
            else ""

    rows = rows_for("fused_fwd", {32: {"default", "small", "hopper"}}) + \
        rows_for("fused_bwd", {32: {"default"}}) + rows_for("naive_fwd", {0: {"default"}})
    with faked(rows, rule=rule):
        q, k, v = _qkv((1, 12, 12, 2, 32), torch.bfloat16)
        text = fastna.explain(q, k, v, 9)
        assert text.splitlines()[0] == ("runs: backend 'hopper': fused_fwd tile 'hopper' at "
                                        "head dim 32, fused_bwd tile 'default'")
        assert "tile 'small': window 9x9 does not fit" in text
        assert "fused_bwd tile 'hopper': no instance" in text
        assert "fused_fwd tile 'small'" in fastna.explain(q, k, v, 5)
        assert "fused_fwd tile 'default'" in fastna.explain(q, k, v, 9, backend="fused")
        with pytest.raises(TypeError, match="backend='naive'"):
            fastna.explain(q.double(), k.double(), v.double(), 3, backend="naive")
    with pytest.raises(ValueError, match="kernel_size"):
        fastna.explain(q, k, v, 30)


def test_explain_cli_on_this_build():
    res = subprocess.run([sys.executable, "-m", "fastna", "explain", "--shape", "2,16,16,4,32",
                          "--kernel-size", "7", "--dilation", "1,2", "--causal", "false,true",
                          "--device", "cpu", "--dtype", "float32", "--grad"],
                         capture_output=True, text=True, check=True)
    assert res.stdout.startswith("runs: backend 'reference'")
    assert "not taken: naive" in res.stdout


@pytest.mark.parametrize("fn", [fastna.na1d, fastna.na2d, fastna.na3d,
                                fastna.neighborhood_attention, fastna.explain,
                                fastna.na2d_qk, fastna.na2d_av])
def test_public_functions_have_real_signatures(fn):
    params = inspect.signature(fn).parameters
    assert "kernel_size" in params and "backend" in params and fn.__doc__
    assert params["backend"].default is None
