"""Forward (and optionally forward+backward) latency on the anchor cases, in one run:
fastna backends vs cuDNN SDPA (dense) and FlexAttention with the NA mask.

    python benchmarks/bench_fwd.py [--cases flux,nat] [--backends fused,naive] [--bwd] [--out FILE]

Prints a markdown table; ratios are cuDNN time / backend time (higher is better).
A benchmark, not a test: run the GPU tests first.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from math import prod

import torch

sys.path.insert(0, os.path.dirname(__file__))
from anchor_cases import BY_NAME, CASES  # noqa: E402

import fastna  # noqa: E402

# The naive and gemm backends store the attention weights [B, N, H, window] (fp32 softmax);
# skip them beyond this size.
NAIVE_MAX_BYTES = 8 << 30


def bench(fn, warmup=25, rep=100):
    from triton.testing import do_bench
    return do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def bench_graph(fn, rep=50):
    """Median ms of one call replayed from a CUDA graph: the GPU time of the call with the
    host's launch path taken out -- for every contender alike (cuDNN, Flex, fastna).  The
    1-head 1d anchors run 0.07-0.1 ms on the GPU while one eager call of torch SDPA or fastna
    costs 100-220 us of Python/launch time on the H100 host, so eager timings of those cases
    measure the host (docs/PERFORMANCE.md section 11.1)."""
    from triton.testing import do_bench_cudagraph
    # do_bench_cudagraph makes its own warm-up call before capturing; bench() ran fn before too.
    return do_bench_cudagraph(fn, rep=rep, return_mode="median")


def report_header(title, script):
    """Markdown title and the run's identity lines (GPU, date, commit, versions, command)."""
    commit = os.environ.get("FASTNA_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return (f"# {title}\n\n"
            f"- GPU: {torch.cuda.get_device_name()}\n- date: {datetime.date.today()}\n"
            f"- commit: {commit or 'unknown'}\n- torch {torch.__version__}, fastna {fastna.__version__}\n"
            f"- command: python benchmarks/{script} {' '.join(sys.argv[1:])}\n\n")


def write_report(out, text, rows):
    """The table as `out` (markdown) and the raw rows beside it (.json)."""
    with open(out, "w") as f:
        f.write(text)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump(rows, f, indent=1)


def kernel_rows(run, iters=10):
    """[(GPU us per call, launches per call, kernel name)] of one call, largest first
    (torch.profiler's kernel rows only: a CPU op's row repeats its kernels' time as its own
    self device time, and summing every row counted each kernel twice in the 845029b table)."""
    run()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(iters):
            run()
        torch.cuda.synchronize()
    rows = [(e.self_device_time_total / iters, e.count // iters, e.key) for e in prof.key_averages()
            if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0]
    return sorted(rows, reverse=True)


def kernel_ms(run, iters=10):
    """GPU time of one call: the sum of its kernels' durations (torch.profiler), without the
    host-side launch path that bounds small problems in the wall-clock column."""
    return sum(us for us, _, _ in kernel_rows(run, iters)) / 1e3


def make_inputs(case, dtype, requires_grad):
    shape = (case.batch, *case.shape, case.heads, case.dim)
    return [torch.randn(shape, device="cuda", dtype=dtype, requires_grad=requires_grad)
            for _ in range(3)]


def step(fn, inputs, bwd):
    if not bwd:
        return lambda: fn(*inputs)
    grad = None

    def run():
        nonlocal grad
        out = fn(*inputs)
        if grad is None:
            grad = torch.randn_like(out)
        out.backward(grad)
    return run


def cudnn_fn(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    b, h, d = q.shape[0], q.shape[-2], q.shape[-1]
    qt, kt, vt = (t.reshape(b, -1, h, d).transpose(1, 2) for t in (q, k, v))
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)


def flex_fn(case):
    from flex_na import make_flex_na
    flex = make_flex_na(case)

    def run(q, k, v):
        b, h, d = q.shape[0], q.shape[-2], q.shape[-1]
        qt, kt, vt = (t.reshape(b, -1, h, d).transpose(1, 2) for t in (q, k, v))
        return flex(qt, kt, vt)
    return run


def fastna_fn(case, backend):
    kw = case.kwargs()
    return lambda q, k, v: fastna.neighborhood_attention(q, k, v, backend=backend, **kw)


def run_case(case, backends, dtype, bwd, kernel_time=False, graph=False, flex=True):
    row = {"case": case.name, "flop_bound": case.flop_bound}
    inputs = make_inputs(case, dtype, bwd)
    contenders = {"cudnn": cudnn_fn}
    try:
        if flex:
            contenders["flex"] = flex_fn(case)
    except Exception as e:  # report, don't hide: the table shows the reason
        row["flex_error"] = repr(e)[:200]
    for b in backends:
        attn_bytes = 4 * case.batch * case.tokens * case.heads * prod(case.kernel)
        if b in ("naive", "gemm") and attn_bytes > NAIVE_MAX_BYTES:
            row[f"{b}_error"] = f"skipped: attention buffer {attn_bytes / 2**30:.0f} GiB"
            continue
        contenders[b] = fastna_fn(case, b)
    for name, fn in contenders.items():
        try:
            row[name] = bench(step(fn, inputs, bwd))
            if graph:
                row[f"{name} graph"] = bench_graph(step(fn, inputs, bwd))
            if kernel_time and name in backends:
                row[f"{name} kernels"] = kernel_ms(step(fn, inputs, bwd))
        except Exception as e:
            row[f"{name}_error"] = repr(e)[:200]
        torch.cuda.empty_cache()
    return row


def table(rows, names):
    def base(n):  # graph timings are compared with cuDNN's graph timing
        return "cudnn graph" if n.endswith(" graph") else "cudnn"
    ratios = [n for n in names if n != base(n)]
    head = ["case", "FLOP bound"] + [f"{n} ms" for n in names] + [f"{n} vs cuDNN" for n in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["case"], f"{r['flop_bound']:.1f}"]
        cells += [f"{r[n]:.3f}" if n in r else "—" for n in names]
        for n in ratios:
            cells.append(f"{r[base(n)] / r[n]:.2f}x" if n in r and base(n) in r else "—")
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- {r['case']}: {k[:-6]}: {v}" for r in rows for k, v in r.items() if k.endswith("_error")]
    return "\n".join(lines + ([""] + errors if errors else []))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=",".join(c.name for c in CASES))
    ap.add_argument("--backends", default="fused")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--bwd", action="store_true", help="time forward+backward")
    ap.add_argument("--out", default=None, help="write the table (markdown) and raw rows (json)")
    ap.add_argument("--allow-tf32", action="store_true",
                    help="torch.backends.cuda.matmul.allow_tf32 = True: float32 on TF32 tensor "
                         "cores (the gemm backend and backend=None's fused choice need it)")
    ap.add_argument("--kernel-time", action="store_true",
                    help="also the fastna backends' GPU kernel time per call (torch.profiler): "
                         "shows whether the do_bench time of a small case is host-bound; kernels "
                         "that overlap (the rank-1 Hopper backward's PDL launches) count in full")
    ap.add_argument("--graph", action="store_true",
                    help="also time every contender replayed from a CUDA graph (GPU time without "
                         "the host's per-call launch path; ratios in the 'graph' columns compare "
                         "graph with graph)")
    ap.add_argument("--no-flex", action="store_true",
                    help="leave FlexAttention out (its compile dominates a short A/B run of two "
                         "fastna builds; the cuDNN baseline stays)")
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    if a.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    backends = [b for b in a.backends.split(",") if b]
    dense = ["cudnn"] + ([] if a.no_flex else ["flex"])
    names = dense + backends + ([f"{b} kernels" for b in backends] if a.kernel_time else [])
    if a.graph:
        names += [f"{n} graph" for n in dense + backends]
    header = report_header(f"{'forward+backward' if a.bwd else 'forward'} latency, {a.dtype}", "bench_fwd.py")
    rows = []
    for name in a.cases.split(","):
        rows.append(run_case(BY_NAME[name], backends, dtype, a.bwd, a.kernel_time, a.graph,
                             flex=not a.no_flex))
        print(json.dumps(rows[-1]), flush=True)
        # Rewritten after every case so a run cut short still leaves its finished rows.
        text = header + table(rows, names) + "\n"
        if a.out:
            write_report(a.out, text, rows)
    print(text)


if __name__ == "__main__":
    main()
