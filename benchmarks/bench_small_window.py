"""The small-window forward (fused_fwd tile "small") against the tiles it replaces, per problem:
backend "hopper" (where it runs) and "fused" with the small-window swap on (the default) and
off (FASTNA_SMALL_WINDOW=0), CUDA-graph replay medians (GPU time without the host), same run.

    python benchmarks/bench_small_window.py [--out FILE.md]

A benchmark, not a test (tests/test_small_window_gpu.py checks correctness).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_fwd import bench_graph, report_header, write_report  # noqa: E402

import fastna  # noqa: E402
from fastna import _ext  # noqa: E402
from fastna.backends import _layout  # noqa: E402

# (name, batch, spatial shape, heads, head dim, kernel, dilation, causal)
PROBLEMS = [
    ("nat (anchor)", 32, (56, 56), 4, 32, 7, 1, False),
    ("dinat (anchor)", 32, (56, 56), 4, 32, 7, 4, False),
    ("nat D64", 32, (56, 56), 4, 64, 7, 1, False),
    ("nat D128", 16, (56, 56), 4, 128, 7, 1, False),
    ("2D K5 causal", 16, (64, 64), 4, 64, 5, 1, True),
    ("2D K3 D64", 16, (128, 128), 4, 64, 3, 1, False),
    ("1D K15 D64", 16, (4096,), 8, 64, 15, 1, False),
    ("1D K33 D64", 16, (4096,), 8, 64, 33, 1, False),
    ("1D K49 D128", 8, (4096,), 8, 128, 49, 1, False),
]


def _time(run, small: bool) -> float:
    os.environ["FASTNA_SMALL_WINDOW"] = "1" if small else "0"
    try:
        run()
        return bench_graph(run)
    finally:
        os.environ.pop("FASTNA_SMALL_WINDOW", None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the table (markdown) and raw rows (json)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    backends = [b for b in ("hopper", "fused") if fastna.backends.get(b).available()]
    rows = []
    for name, B, shape, H, D, K, dil, causal in PROBLEMS:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(B, *shape, H, D, device="cuda", generator=g, dtype=torch.bfloat16)
                   for _ in range(3))
        fn = {1: fastna.na1d, 2: fastna.na2d}[len(shape)]
        row = {"case": name, "shape": "x".join(map(str, shape)), "B": B, "H": H, "D": D, "K": K,
               "dilation": dil, "causal": causal,
               "fits": not _ext.can_implement("fused_fwd", _layout.launch_params(
                   fastna._args.normalize(q, k, v, K, 1, dil, causal, None, None, None), q, k, v,
                   "small"))}
        for be in backends:
            run = lambda be=be: fn(q, k, v, kernel_size=K, dilation=dil, is_causal=causal, backend=be)  # noqa: E731
            try:
                row[f"{be} small ms"] = _time(run, True)
                row[f"{be} without ms"] = _time(run, False)
                row[f"{be} speedup"] = row[f"{be} without ms"] / row[f"{be} small ms"]
            except Exception as e:  # noqa: BLE001 - report, keep going
                row[f"{be} error"] = f"{type(e).__name__}: {e}"[:200]
        rows.append(row)
        print(row, flush=True)
    cols = ["case", "shape", "B", "H", "D", "K", "dilation", "causal", "fits"]
    for be in backends:
        cols += [f"{be} small ms", f"{be} without ms", f"{be} speedup"]
    lines = [report_header("Small-window tile vs the tile it replaces (forward, bf16, CUDA-graph medians)",
                           "bench_small_window.py").rstrip("\n"),
             "- 'without' = FASTNA_SMALL_WINDOW=0 (backend hopper: the sm90a kernel; fused: the "
             "sm80-class default tile); speedup = without / small", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(
            f"{r[c]:.4f}" if isinstance(r.get(c), float) and "ms" in c else
            (f"{r[c]:.2f}x" if isinstance(r.get(c), float) else str(r.get(c, "-"))) for c in cols) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        write_report(a.out, text, rows)


if __name__ == "__main__":
    main()
