"""Per-kernel GPU time of one forward+backward call (torch.profiler kernel rows), per case:
where the backward's time goes (preprocess, dK/dV, dQ, and the autograd / .grad kernels
around them).

    python benchmarks/bwd_kernel_rows.py [--cases 1d,1d-strided] [--backend hopper] [--dtype bfloat16]

A profiling tool, not a test: the rows are the profiler's self CUDA time per kernel name, summed over
the launches of one call.  With the rank-1 Hopper backward's programmatic dependent launch, dQ's
row overlaps dK/dV's (docs/PERFORMANCE.md section 11.1).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from anchor_cases import BY_NAME  # noqa: E402
from bench_fwd import fastna_fn, kernel_rows, make_inputs, step  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="1d,1d-strided")
    ap.add_argument("--backend", default="hopper")
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()
    print(f"# kernel rows of one fwd+bwd call, backend {a.backend}, {a.dtype}, {torch.cuda.get_device_name()}\n")
    for name in a.cases.split(","):
        case = BY_NAME[name]
        inputs = make_inputs(case, getattr(torch, a.dtype), True)
        rows = kernel_rows(step(fastna_fn(case, a.backend), inputs, True), iters=20)
        print(f"## {name}: {sum(us for us, _, _ in rows):.1f} us\n\n| us | launches | kernel |\n|---|---|---|")
        for us, n, k in rows:
            print(f"| {us:.1f} | {n} | {k[:110]} |")
        print()


if __name__ == "__main__":
    main()
