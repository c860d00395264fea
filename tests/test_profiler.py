"""The `python -m fastna profile` command: argument parsing, presets, FLOP counting and a CPU run."""
import json
import os
import sys

import pytest
import torch

from fastna import presets, profiler
from fastna.index_math import window

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))


def test_cpu_json_run(capsys):
    assert profiler.main(["--shape", "16x16", "--kernel", "5", "--heads", "2", "--dim", "16",
                          "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["rows"]
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    if not torch.cuda.is_available():
        assert out["device"] == "cpu" and any("CPU" in n for n in out["notes"])
        assert {r["contender"] for r in rows} == {"sdpa", "reference"}
    ref = [r for r in rows if r["contender"] == "reference"]
    assert all(r["ms"] > 0 and r["tflops"] > 0 and r["speedup"] > 0 for r in ref)
    p = out["problems"][0]
    assert p["shape"] == [16, 16] and p["kernel"] == [5, 5] and p["heads"] == 2
    assert p["flop_bound"] == pytest.approx(256 / 25)
    assert p["attended_pairs"] == 256 * 25


def test_table_output_and_skips(capsys):
    assert profiler.main(["--shape", "12", "--kernel", "4", "--causal", "1", "--heads", "1",
                          "--dim", "8", "--backends", "reference,naive,sdpa", "--mode", "fwd",
                          "--rep", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| fwd | reference |" in text and "| fwd | sdpa |" in text
    if not torch.cuda.is_available():
        assert "| fwd | naive | skipped:" in text


def test_plot_without_matplotlib_is_reported(tmp_path, capsys):
    path = tmp_path / "p.png"
    profiler.main(["--shape", "8x8", "--kernel", "3", "--heads", "1", "--dim", "8", "--mode",
                   "fwd", "--backends", "reference", "--rep", "1", "--no-progress",
                   "--plot", str(path), "--json"])
    out = json.loads(capsys.readouterr().out)
    try:
        import matplotlib  # noqa: F401
        assert path.exists()
    except ImportError:
        assert any("matplotlib" in n for n in out["notes"])


def test_parse_axes():
    assert profiler.parse_axes("7", "kernel", 2) == (7, 7)
    assert profiler.parse_axes("7x5", "kernel", 2) == (7, 5)
    assert profiler.parse_axes("1x0", "causal", 2, kind=bool) == (True, False)
    with pytest.raises(ValueError, match="--kernel"):
        profiler.parse_axes("7x5x3", "kernel", 2)
    with pytest.raises(ValueError, match="--causal"):
        profiler.parse_axes("2", "causal", 1, kind=bool)
    with pytest.raises(ValueError, match="--shape"):
        profiler.parse_axes("56xx56", "shape")


def test_bad_cli_arguments_exit():
    with pytest.raises(SystemExit):
        profiler.main(["--shape", "16x16", "--kernel", "3x3x3"])
    with pytest.raises(SystemExit):
        profiler.main(["--preset", "nope"])
    with pytest.raises(SystemExit):
        profiler.main(["--preset", "nat", "--shape", "8x8"])


def test_preset_overrides():
    a = profiler._parser().parse_args(["--preset", "dinat,flux", "--batch", "2", "--dtype",
                                       "fp16"])
    ps = profiler.build_problems(a, cuda=True)
    assert [p.name for p in ps] == ["dinat", "flux"]
    assert ps[0].dilation == (4, 4) and ps[0].batch == 2 and ps[1].dtype == "float16"
    a = profiler._parser().parse_args(["--shape", "16x16,32x32", "--kernel", "3,5"])
    assert len(profiler.build_problems(a, cuda=False)) == 4


def test_presets_match_benchmark_anchor_cases():
    from anchor_cases import CASES
    assert [c.name for c in CASES] == presets.preset_names()
    for c in CASES:
        p = presets.get_preset(c.name)
        for f in ("shape", "kernel", "stride", "dilation", "causal"):
            assert tuple(getattr(p, f)) == tuple(getattr(c, f)), (c.name, f)
        for f in ("batch", "heads", "dim"):
            assert getattr(p, f) == getattr(c, f), (c.name, f)
        assert p.flop_bound == pytest.approx(c.flop_bound)
        assert p.na_flops() == pytest.approx(c.na_flops())


@pytest.mark.parametrize("shape,kernel,stride,dilation,causal", [
    ((10,), (3,), (1,), (1,), (False,)),
    ((13,), (5,), (2,), (2,), (True,)),
    ((7, 9), (3, 4), (2, 1), (2, 2), (False, True)),
])
def test_exact_attended_pairs(shape, kernel, stride, dilation, causal):
    import itertools
    p = presets.Problem("t", shape, kernel, stride, dilation, causal)
    brute = 0
    for qc in itertools.product(*[range(L) for L in shape]):
        n = 1
        for a, L in enumerate(shape):
            st, en = window(L, kernel[a], stride[a], dilation[a], causal[a], qc[a])
            n *= en - st
        brute += n
    assert profiler.exact_attended_pairs(p) == brute


def test_plain_progress_bar():
    import io
    s = io.StringIO()
    bar = profiler._PlainBar(2, stream=s)
    bar.set_description("x")
    bar.update()
    bar.update()
    bar.close()
    assert "2/2" in s.getvalue()
