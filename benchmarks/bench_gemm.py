"""GEMM-based vs naive neighborhood attention (the paper's first comparison), in one run.

    python benchmarks/bench_gemm.py [--dtypes float16,float32] [--quick] [--only 1d,2d] [--out FILE.md]

Both backends run the full attention through fastna's API (naive: the naive kernels; gemm:
PN -> softmax -> NN on the GEMM kernels, TF32 for float32), forward and forward+backward, on
1D / 2D / 3D problems of the paper's kind. Prints a markdown table; "gain" is naive time /
gemm time - 1 as a percentage (the paper's A100 figures are reported that way: +895% (1D) and
+272% (2D) in fp32, +496% / +113% in half precision, GEMM-based over naive). The fused backend
is timed too where it runs, for scale. A benchmark, not a test: run the GPU tests first.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys

import torch

import fastna

sys.path.insert(0, os.path.dirname(__file__))
from bench_fwd import bench, kernel_ms, step  # noqa: E402

# (name, spatial shape, kernel, batch, heads, head dim)
PROBLEMS = [
    ("1d-4k-k7", (4096,), 7, 8, 4, 64),
    ("1d-4k-k63", (4096,), 63, 8, 4, 64),
    ("1d-16k-k31", (16384,), 31, 4, 4, 64),
    ("1d-64k-k7", (65536,), 7, 2, 4, 64),
    ("1d-64k-k63", (65536,), 63, 2, 4, 64),
    ("2d-56-k7", (56, 56), 7, 16, 4, 64),
    ("2d-56-k15", (56, 56), 15, 16, 4, 64),
    ("2d-128-k7", (128, 128), 7, 4, 4, 64),
    ("2d-128-k15", (128, 128), 15, 4, 4, 64),
    ("2d-128-k31", (128, 128), 31, 2, 4, 64),
    ("3d-16x32x32-k7", (16, 32, 32), 7, 1, 4, 64),
    ("3d-8x48x48-k3x13x13", (8, 48, 48), (3, 13, 13), 1, 4, 64),
]
QUICK = {"1d-4k-k7", "1d-64k-k63", "2d-56-k7", "2d-128-k31", "3d-16x32x32-k7"}
PAPER = {("1d", "float32"): 895, ("2d", "float32"): 272, ("1d", "float16"): 496,
         ("2d", "float16"): 113}


def run_problem(prob, dtype, backends):
    name, shape, K, B, H, D = prob
    rank = len(shape)
    fn = {1: fastna.na1d, 2: fastna.na2d, 3: fastna.na3d}[rank]
    row = {"problem": name, "dtype": str(dtype).split(".")[-1]}
    for be in backends:
        for bwd in (False, True):
            inputs = [torch.randn(B, *shape, H, D, device="cuda", dtype=dtype,
                                  requires_grad=bwd) for _ in range(3)]
            key = f"{be}_{'fwdbwd' if bwd else 'fwd'}"
            try:
                run = step(lambda q, k, v: fn(q, k, v, K, backend=be), inputs, bwd)
                row[key] = bench(run)
                row[key + "_kernels"] = kernel_ms(run)
            except (NotImplementedError, TypeError) as e:
                row[key] = row[key + "_kernels"] = None
                row.setdefault("notes", []).append(f"{be}: {str(e)[:80]}")
            del inputs
            torch.cuda.empty_cache()
    return row


def gain(naive, gemm):
    return None if not naive or not gemm else 100.0 * (naive / gemm - 1.0)


def fmt(x, pct=False):
    if x is None:
        return "-"
    return f"{x:+.0f}%" if pct else f"{x:.3f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtypes", default="float16,float32")
    ap.add_argument("--quick", action="store_true", help="5 problems instead of 12")
    ap.add_argument("--only", default="",
                    help="comma-separated problem-name prefixes (e.g. 1d); default: all")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True   # the GEMM kernels' float32 path is TF32
    rows = []
    for dt in args.dtypes.split(","):
        dtype = getattr(torch, dt)
        backends = ["naive", "gemm"] + (["fused"] if dtype != torch.float32 else [])
        for prob in PROBLEMS:
            if args.quick and prob[0] not in QUICK:
                continue
            if args.only and not any(prob[0].startswith(x) for x in args.only.split(",")):
                continue
            rows.append(run_problem(prob, dtype, backends))
            print(json.dumps(rows[-1]), flush=True)

    commit = os.environ.get("FASTNA_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"# GEMM-based vs naive NA ({torch.cuda.get_device_name()}, "
             f"{datetime.date.today()}, commit {commit}, torch {torch.__version__})", "",
             "wall = do_bench medians (host launch path included); kernels = sum of the call's "
             "CUDA kernel durations (torch.profiler), the GPU time; gain = naive / gemm - 1; "
             "float32 runs the GEMM kernels in TF32 (naive: fp32 FMA). All times ms. Command: "
             "`python benchmarks/bench_gemm.py " + " ".join(sys.argv[1:]) + "`", "",
             "| problem | dtype | naive fwd wall / kernels | gemm fwd wall / kernels | gain wall / "
             "kernels | naive fwd+bwd | gemm fwd+bwd | gain fwd+bwd | fused fwd | fused fwd+bwd |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def pair(r, key):
        return f"{fmt(r.get(key))} / {fmt(r.get(key + '_kernels'))}"

    def gains(r, kind):
        return (f"{fmt(gain(r.get('naive_' + kind), r.get('gemm_' + kind)), True)} / "
                f"{fmt(gain(r.get(f'naive_{kind}_kernels'), r.get(f'gemm_{kind}_kernels')), True)}")
    for r in rows:
        lines.append(f"| {r['problem']} | {r['dtype']} | {pair(r, 'naive_fwd')} | "
                     f"{pair(r, 'gemm_fwd')} | {gains(r, 'fwd')} | {pair(r, 'naive_fwdbwd')} | "
                     f"{pair(r, 'gemm_fwdbwd')} | {gains(r, 'fwdbwd')} | "
                     f"{pair(r, 'fused_fwd')} | {pair(r, 'fused_fwdbwd')} |")
    lines += ["", "Mean gain per rank and dtype (arithmetic mean of the per-problem gains, as the "
              "paper reports; wall / kernels), vs the paper's A100 figures for GEMM-based over "
              "naive:", "",
              "| rank | dtype | fwd | fwd+bwd | paper |", "|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["problem"][:2], r["dtype"]), []).append(r)
    for (rk, dt), rs in groups.items():
        def mean(kind):
            g = [gain(r.get(f"naive_{kind}"), r.get(f"gemm_{kind}")) for r in rs]
            g = [x for x in g if x is not None]
            return sum(g) / len(g) if g else None

        def both(kind):
            return f"{fmt(mean(kind), True)} / {fmt(mean(kind + '_kernels'), True)}"
        paper = PAPER.get((rk, "float16" if dt in ("float16", "bfloat16") else dt))
        lines.append(f"| {rk} | {dt} | {both('fwd')} | {both('fwdbwd')} | "
                     f"{'+' + str(paper) + '%' if paper else '-'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
