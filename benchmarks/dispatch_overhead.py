"""Host-side cost of one fastna call (argument checks, backend selection, custom-op dispatch,
autograd bookkeeping), which bounds small problems: a kernel faster than this is hidden behind
the launch path.

    python benchmarks/dispatch_overhead.py [--backends hopper,fused,naive,gemm]

For a tiny 2D problem (the GPU work is a few microseconds) it times N back-to-back calls on the
CPU clock and reports microseconds per call, next to torch SDPA on the same tensors for scale.
A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import time

import torch

import fastna


def per_call_us(fn, n=2000):
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="hopper,fused,naive,gemm")
    a = ap.parse_args()
    q = torch.randn(1, 16, 16, 2, 64, device="cuda", dtype=torch.bfloat16)
    rows = [("torch SDPA (flash)", per_call_us(
        lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)))]
    for b in a.backends.split(","):
        if b not in fastna.available_backends():
            rows.append((b, None))
            continue
        rows.append((f"fastna.na2d backend={b}", per_call_us(lambda: fastna.na2d(q, q, q, 7, backend=b))))
    rows.append(("fastna.na2d backend=None", per_call_us(lambda: fastna.na2d(q, q, q, 7))))
    qg = q.clone().requires_grad_()
    rows.append(("fastna.na2d backend=None, requires_grad", per_call_us(
        lambda: fastna.na2d(qg, qg, qg, 7), n=500)))
    print(f"# host time per call ({torch.cuda.get_device_name()}, tiny 16x16 problem)\n")
    print("| call | us / call |\n|---|---|")
    for name, us in rows:
        print(f"| {name} | {'not available' if us is None else f'{us:.1f}'} |")


if __name__ == "__main__":
    main()
