"""fastna._C.kernel_table() / can_implement(): the compiled rows of cmake/kernel_table.json and
the instances' own verdicts (docs/INTERNALS.md, "The kernel table")."""
import pytest
import torch

from fastna import _ext

C = _ext.load()
pytestmark = pytest.mark.skipif(C is None, reason="fastna._C not built")

KEYS = {"op", "family", "tile", "rank", "dtype", "head_dim", "arch", "sm", "qbox", "kvbox", "supports"}
FEATURES = {"stride", "dilation", "causal", "gqa", "dv_ne_d", "extra_kv", "lse", "rpb"}


def _params(**kw):
    p = {"dtype": "bfloat16", "batch": 1, "heads": 1, "heads_kv": 1, "dim": 64, "dim_v": 64,
         "length": [16, 16], "kernel": [3, 3], "stride": [1, 1], "dilation": [1, 1],
         "causal": [False, False]}
    p.update(kw)
    return p


def test_rows_describe_what_the_module_holds():
    info = C.build_info()
    rows = C.kernel_table()
    assert _ext.kernel_table() == rows
    if not info["cuda"]:
        assert rows == [] and info["kernels"] == [] and info["head_dims"] == []
        assert C.can_implement("fused_fwd", _params()) == "no CUDA kernels in this build"
        return
    assert rows
    for r in rows:
        assert set(r) == KEYS and set(r["supports"]) == FEATURES
        assert r["arch"] in info["archs"] and r["sm"] == int(r["arch"].rstrip("af"))
        if r["family"] == "naive":
            assert r["head_dim"] == 0 and r["qbox"] == () and r["kvbox"] == ()
        else:
            assert len(r["qbox"]) == len(r["kvbox"]) == r["rank"] and r["head_dim"] > 0
    assert info["kernels"] == sorted({r["op"] for r in rows})
    assert info["head_dims"] == sorted({r["head_dim"] for r in rows} - {0})
    assert info["ranks"] == sorted({r["rank"] for r in rows})


def test_can_implement_rejects_unknown_ops_and_malformed_params():
    with pytest.raises(ValueError, match="unknown op"):
        C.can_implement("nope", _params())
    with pytest.raises(ValueError, match="unsupported dtype"):
        C.can_implement("fused_fwd", _params(dtype="float64"))


@pytest.mark.gpu
def test_can_implement_names_the_failing_condition():
    rows = [r for r in C.kernel_table() if r["op"] == "fused_fwd" and r["tile"] == "default"
            and r["rank"] == 2 and r["dtype"] == "bfloat16"]
    if not rows:
        pytest.skip("no 2D bf16 fused_fwd instance")
    D = rows[0]["head_dim"]
    assert C.can_implement("fused_fwd", _params(dim=D, dim_v=D)) == ""
    assert "65535" in C.can_implement("fused_fwd", _params(dim=D, dim_v=D, batch=70000))
    assert "Dv != D" in C.can_implement("fused_fwd", _params(dim=D, dim_v=D // 2))
    assert "not instantiated" in C.can_implement("fused_fwd", _params(dim=48, dim_v=48))
    assert "tile 'nope'" in C.can_implement("fused_fwd", _params(dim=D, dim_v=D, tile="nope"))
    small = [r for r in C.kernel_table() if r["tile"] == "small" and r["rank"] == 2
             and r["dtype"] == "bfloat16"]
    cc = torch.cuda.get_device_capability()
    if small and any(r["sm"] <= cc[0] * 10 + cc[1] for r in small):
        Ds = small[0]["head_dim"]
        fits = _params(dim=Ds, dim_v=Ds, tile="small", length=[32, 32], kernel=[7, 7])
        assert C.can_implement("fused_fwd", fits) == ""
        too_big = dict(fits, kernel=[13, 13])
        assert "small-window" in C.can_implement("fused_fwd", too_big)
