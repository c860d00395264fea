import os
import subprocess
import sys

import pytest
import torch

from fastna.__main__ import format_kernels, neighborhood_mask_2d


def _run(*command):
    # conftest puts python/ on PYTHONPATH when fastna is not installed
    return subprocess.run([sys.executable, "-m", "fastna", *command], capture_output=True,
                          text=True, env=dict(os.environ), timeout=300)


@pytest.mark.parametrize("command,expect", [
    (["info"], "backends available"),
    (["demo"], "||out - dense|| / ||dense||"),
    (["profile", "--shape", "12x12", "--kernel", "5", "--heads", "1", "--dim", "8"], "| fwd |"),
])
def test_cli(command, expect):
    r = _run(*command)
    assert r.returncode == 0, r.stdout + r.stderr
    assert expect in r.stdout


def test_help_describes_every_command():
    r = _run("--help")
    assert r.returncode == 0, r.stderr
    for command, words in (("info", "compiled kernels"), ("demo", "dense attention"),
                           ("profile", "FlexAttention")):
        line = next(l for l in r.stdout.splitlines() if l.strip().startswith(command))
        assert words in line + r.stdout, r.stdout


def test_demo_says_what_it_compares():
    r = _run("demo")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checked against: dense float64 attention" in r.stdout
    err = float(r.stdout.split("||out - dense|| / ||dense|| = ")[1].split()[0])
    assert 0 < err < 1e-5       # an independent computation: round-off, never exactly 0


def test_profile_rejects_a_window_larger_than_the_input_before_timing():
    r = _run("profile", "--shape", "8x8", "--kernel", "9")
    assert r.returncode != 0
    assert "kernel_size" in r.stderr and "(9, 9)" in r.stderr and "(8, 8)" in r.stderr
    assert "| fwd |" not in r.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU default dtype")
def test_profile_presets_run_in_the_cpu_dtype():
    from fastna import profiler
    a = profiler._parser().parse_args(["--preset", "nat"])
    (p,) = profiler.build_problems(a, cuda=False)
    assert p.dtype == profiler.CPU_DEFAULT["dtype"] == "float32"
    a = profiler._parser().parse_args(["--preset", "nat", "--dtype", "bf16"])
    assert profiler.build_problems(a, cuda=False)[0].dtype == "bfloat16"


def test_neighborhood_mask_matches_the_reference_windows():
    from fastna import _args, reference
    shape, kernel = (9, 11), 5
    q = torch.randn(1, *shape, 1, 4, dtype=torch.float64)
    p = _args.normalize(q, q, q, kernel)
    # one-hot values read back which key each query's window holds
    n = shape[0] * shape[1]
    v = torch.eye(n, dtype=torch.float64).reshape(1, *shape, 1, n)
    k = torch.zeros_like(q)                 # uniform weights over the window
    seen = reference.attention(q, k, v, p).reshape(n, n) > 0
    assert torch.equal(seen, neighborhood_mask_2d(shape, kernel))


def test_info_lines_group_the_compiled_table():
    rows = [dict(op="fused_fwd", family="sm80", arch="80", tile="default", rank=r, dtype=dt,
                 head_dim=64, qbox=(), kvbox=()) for r in (1, 2) for dt in ("float16", "bfloat16")]
    rows.append(dict(op="naive_fwd", family="naive", arch="80", tile="default", rank=3,
                     dtype="float32", head_dim=0, qbox=(), kvbox=()))
    lines = format_kernels(rows)
    assert len(lines) == 2
    assert "fused_fwd" in lines[0] and "ranks 1,2" in lines[0] and "head dims 64" in lines[0]
    assert "bfloat16,float16" in lines[0]
    assert "naive_fwd" in lines[1] and "head dims any" in lines[1]
