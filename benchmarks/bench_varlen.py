"""Variable-size batches (fastna.neighborhood_attention_varlen): one packed call against the
alternatives users have, in one run.

    python benchmarks/bench_varlen.py [--case video|images|all] [--dtype bfloat16] [--bwd]
                                      [--packed-backends none,fused] [--out FILE]

Cases (the issue's): video = three clips 16x48x80, 8x60x104, 24x32x56, window 8x16x16, 24 heads,
D 128; images = 64 images of random sizes 24..64 per side (seed 0), window 7x7, 4 heads, D 32.
Contenders: packed (one varlen call per --packed-backends entry: backend=None runs the per-shape
path, one fastna.neighborhood_attention call per group of samples with equal shape and
parameters; backend="fused" the grouped kernels, one launch for every sample, where the build has
them; the output says which path each ran),
separate (one fastna.neighborhood_attention call per sample, backend=None: its fastest kernel),
and, for the images, padded (every image zero-padded to 64x64 and one fixed-shape call -- a
speed baseline only: padding changes the border windows).  Milliseconds per call (CUDA events,
median of --iters) and how many times faster the packed call is.  --small: a CPU smoke run at
tiny sizes.  A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time

import torch

import fastna
from fastna.varlen import explain_varlen

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def case(name, small):
    if name == "video":
        shapes = [(4, 8, 12), (2, 10, 14), (6, 6, 10)] if small else \
            [(16, 48, 80), (8, 60, 104), (24, 32, 56)]
        return dict(shapes=shapes, kernel=(2, 4, 4) if small else (8, 16, 16),
                    heads=2 if small else 24, dim=16 if small else 128, pad_to=None)
    rng = random.Random(0)
    lo, hi, n = (8, 12, 4) if small else (24, 64, 64)
    shapes = [(rng.randint(lo, hi), rng.randint(lo, hi)) for _ in range(n)]
    return dict(shapes=shapes, kernel=(7, 7), heads=4, dim=16 if small else 32, pad_to=(hi, hi))


def timer(device, iters):
    def run(fn):
        for _ in range(2):
            fn()
        times = []
        for _ in range(iters):
            if device.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    return run


def packed_inputs(c, device, dtype, bwd):
    total = sum(math.prod(s) for s in c["shapes"])
    return [torch.randn(total, c["heads"], c["dim"], device=device, dtype=dtype,
                        requires_grad=bwd) for _ in range(3)]


def packed_name(backend):
    return "packed" if backend is None else f"packed ({backend})"


def packed_path(c, q, k, v, backend):
    """The first line of explain_varlen: which path the packed call runs, in how many calls."""
    return explain_varlen(q, k, v, c["shapes"], c["kernel"], backend=backend).splitlines()[0]


def contenders(c, q, k, v, bwd, packed_backends):
    H, D, K = c["heads"], c["dim"], c["kernel"]
    device, dtype = q.device, q.dtype
    samples, start = [], 0
    for s in c["shapes"]:
        n = math.prod(s)
        samples.append(tuple(t[start:start + n].reshape(1, *s, H, D) for t in (q, k, v)))
        start += n

    def wrap(f):
        return (lambda: _fwd_bwd(f)) if bwd else f
    out = {packed_name(b): wrap(lambda b=b: fastna.neighborhood_attention_varlen(q, k, v, c["shapes"], K,
                                                                                backend=b))
           for b in packed_backends}
    out["separate"] = wrap(lambda: [fastna.neighborhood_attention(*t, K) for t in samples])
    if c["pad_to"]:
        P = c["pad_to"]
        padded = torch.zeros(len(samples), *P, H, D, device=device, dtype=dtype,
                             requires_grad=bwd)
        out["padded"] = wrap(lambda: fastna.neighborhood_attention(padded, padded, padded, K))
    return out


def _fwd_bwd(f):
    res = f()
    res = res if isinstance(res, list) else [res]
    torch.autograd.backward(res, [torch.ones_like(r) for r in res])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", default="all", choices=["video", "images", "all"])
    ap.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    ap.add_argument("--bwd", action="store_true", help="forward + backward")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--small", action="store_true", help="tiny sizes (CPU smoke run)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--packed-backends", default="none",
                    help="comma-separated backends of the packed rows (none = backend=None; fused: "
                         "the grouped kernels where built); the first is the speedups' reference")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    packed_backends = [None if b.strip() in ("", "none") else b.strip()
                       for b in a.packed_backends.split(",")]
    device = torch.device(a.device)
    run = timer(device, a.iters)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"# varlen ({'fwd+bwd' if a.bwd else 'forward'}, {a.dtype}, {dev})", "",
             f"- command: python benchmarks/bench_varlen.py {' '.join(sys.argv[1:] if argv is None else argv)}",
             "", "| case | contender | ms | packed is N x faster |", "|---|---|---|---|"]
    paths = []
    for name in (["video", "images"] if a.case == "all" else [a.case]):
        c = case(name, a.small)
        q, k, v = packed_inputs(c, device, DTYPES[a.dtype], a.bwd)
        for b in packed_backends:
            paths.append(f"- {name}, {packed_name(b)}: {packed_path(c, q, k, v, b)}")
        ms = {n: run(f) for n, f in contenders(c, q, k, v, a.bwd, packed_backends).items()}
        ref = ms[packed_name(packed_backends[0])]
        for n, t in ms.items():
            lines.append(f"| {name} | {n} | {t:.3f} | {t / ref:.2f}x |")
    text = "\n".join(lines + [""] + paths) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
