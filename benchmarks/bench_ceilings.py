"""Hardware ceilings that bound the anchor cases, measured in one run (issues 4 and 6).

    python benchmarks/bench_ceilings.py [--out FILE.md]

1. Dense ceiling of each fused-family kernel: NA with a window as long as the sequence is dense
   attention, so timing backend X on (1 head, 32768 tokens, D 128, K = 32768) gives the best
   tensor-core throughput that kernel family reaches on this GPU, next to cuDNN SDPA and
   FlexAttention (no mask) on the same tensors.  Compared with the 1d anchor's throughput, it
   says how far an NA kernel is from its own instruction ceiling, and what fraction of that
   ceiling it would need to beat a competitor.
2. Tile check: the kernel names torch.profiler sees for backend "fused" with each compiled
   rank-1 tile (FASTNA_FUSED_TILE), so a tile comparison is known to have run the tile it names.
3. Memory floor of the small-window anchors: the bytes a forward must move at least (read q, k,
   v once, write out and the fp32 lse), divided by the copy bandwidth measured here on a buffer
   of that size (a device-to-device copy, L2 flushed by its size), next to FlexAttention / 10
   (issue 6's small-window goal).
A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from anchor_cases import BY_NAME  # noqa: E402
from bench_fwd import bench, flex_fn, kernel_rows  # noqa: E402

import fastna  # noqa: E402
from fastna import _table  # noqa: E402


def dense_ceiling(backends, L=32768, D=128):
    q, k, v = (torch.randn(1, L, 1, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4.0 * L * L * D
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def cudnn():
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)
    rows = [("cudnn (dense)", bench(cudnn))]
    try:
        from torch.nn.attention.flex_attention import flex_attention
        flex = torch.compile(flex_attention, dynamic=False)
        rows.append(("flex (dense, no mask)", bench(lambda: flex(qt, kt, vt))))
    except Exception as e:  # noqa: BLE001 -- reported in the table
        rows.append((f"flex: {e!r}"[:80], float("nan")))
    for b in backends:
        try:
            rows.append((f"{b} (K = L)", bench(
                lambda b=b: fastna.neighborhood_attention(q, k, v, kernel_size=L, backend=b))))
        except Exception as e:  # noqa: BLE001
            rows.append((f"{b}: {e!r}"[:80], float("nan")))
    lines = [f"## Dense ceiling: 1 head, L = {L}, D = {D}, bf16 ({flops / 1e9:.0f} GFLOP)", "",
             "| kernel | ms | TFLOP/s |", "|---|---|---|"]
    lines += [f"| {n} | {ms:.3f} | {flops / ms / 1e9:.0f} |" for n, ms in rows]
    return lines


def tile_check(case_name="1d"):
    c = BY_NAME[case_name]
    q, k, v = (torch.randn(c.batch, *c.shape, c.heads, c.dim, device="cuda",
                           dtype=torch.bfloat16) for _ in range(3))
    tiles = sorted(_table.tiles_by_head_dim("fused_fwd", 1, torch.bfloat16, q.device).get(c.dim, ()))
    lines = [f"## Tiles of backend 'fused' on {c.describe()}", "",
             "| FASTNA_FUSED_TILE | ms (do_bench) | kernels (us per call, name) |", "|---|---|---|"]
    old = os.environ.get("FASTNA_FUSED_TILE")
    for t in tiles:
        if t == "hopper":
            continue
        os.environ["FASTNA_FUSED_TILE"] = t
        fn = (lambda: fastna.neighborhood_attention(q, k, v, backend="fused", **c.kwargs()))
        ms = bench(fn)
        # The tile's boxes / warps / stages are template arguments near the end of the name.
        ks = "; ".join(f"{us:.1f} ...{name[-160:]}" for us, _, name in kernel_rows(fn))
        lines.append(f"| {t} | {ms:.3f} | {ks} |")
    if old is None:
        os.environ.pop("FASTNA_FUSED_TILE", None)
    else:
        os.environ["FASTNA_FUSED_TILE"] = old
    return lines


def memory_floor(case_names=("nat", "dinat", "nat-13")):
    lines = ["## Memory floor of the small-window anchors (forward)", "",
             "| case | bytes moved (MB) | copy GB/s | floor ms | flex ms | flex / 10 ms | "
             "hopper ms | floor vs flex/10 |", "|---|---|---|---|---|---|---|---|"]
    for name in case_names:
        c = BY_NAME[name]
        shape = (c.batch, *c.shape, c.heads, c.dim)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        nbytes = 4 * q.numel() * q.element_size() + c.batch * c.tokens * c.heads * 4
        src = torch.empty(nbytes // 2, device="cuda", dtype=torch.uint8)
        dst = torch.empty_like(src)
        # A copy of nbytes/2 reads nbytes/2 and writes nbytes/2: nbytes of DRAM traffic.
        copy_ms = bench(lambda: dst.copy_(src))
        gbps = nbytes / copy_ms / 1e6
        flex = flex_fn(c)
        flex_ms = bench(lambda: flex(q, k, v))
        try:
            hop_ms = bench(lambda: fastna.neighborhood_attention(q, k, v, backend="hopper",
                                                                 **c.kwargs()))
        except Exception:  # noqa: BLE001
            hop_ms = float("nan")
        lines.append(f"| {name} | {nbytes / 1e6:.1f} | {gbps:.0f} | {copy_ms:.4f} | "
                     f"{flex_ms:.4f} | {flex_ms / 10:.4f} | {hop_ms:.4f} | "
                     f"{copy_ms / (flex_ms / 10):.2f}x |")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="hopper,fused")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    commit = os.environ.get("FASTNA_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    head = ["# Ceilings", "", f"- GPU: {torch.cuda.get_device_name()}",
            f"- date: {datetime.date.today()}", f"- commit: {commit}",
            f"- torch {torch.__version__}, fastna {fastna.__version__}",
            f"- command: python benchmarks/bench_ceilings.py {' '.join(sys.argv[1:])}", ""]
    body = []
    for part in (lambda: dense_ceiling(a.backends.split(",")), tile_check, memory_floor):
        body += part() + [""]
        print("\n".join(body[-12:]), flush=True)
    text = "\n".join(head + body)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
