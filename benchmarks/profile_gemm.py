"""Where the time of backend="gemm" goes: GPU time per kernel (torch.profiler) of one forward and
one forward+backward call, per problem of bench_gemm.py.

    python benchmarks/profile_gemm.py [--dtypes float32] [--only 1d] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

import fastna

sys.path.insert(0, os.path.dirname(__file__))
from bench_fwd import kernel_rows, step  # noqa: E402
from bench_gemm import PROBLEMS  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtypes", default="float32")
    ap.add_argument("--only", default="1d")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    lines = [f"# backend=gemm GPU time per kernel ({torch.cuda.get_device_name()}), us per call", ""]
    for dt in args.dtypes.split(","):
        dtype = getattr(torch, dt)
        for name, shape, K, B, H, D in PROBLEMS:
            if args.only and not any(name.startswith(x) for x in args.only.split(",")):
                continue
            fn = {1: fastna.na1d, 2: fastna.na2d, 3: fastna.na3d}[len(shape)]
            for bwd in (False, True):
                inputs = [torch.randn(B, *shape, H, D, device="cuda", dtype=dtype,
                                      requires_grad=bwd) for _ in range(3)]
                run = step(lambda q, k, v: fn(q, k, v, K, backend="gemm"), inputs, bwd)
                rows = kernel_rows(run)
                total = sum(r[0] for r in rows)
                lines.append(f"## {name} {dt} {'fwd+bwd' if bwd else 'fwd'}: {total:.1f} us")
                lines.append("")
                lines += [f"- {us:8.1f} us  x{n}  {key[:110]}" for us, n, key in rows]
                lines.append("")
                del inputs
                torch.cuda.empty_cache()
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
