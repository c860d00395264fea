"""Host-side cost of one fastna call (plan lookup, the backend's Python wrapper, the binding
call, autograd bookkeeping) next to torch SDPA's own eager call in the same process: a kernel
faster than this is hidden behind the launch path.

    python benchmarks/dispatch_overhead.py [--backends hopper,fused,naive,gemm] [--device cpu]
    python benchmarks/dispatch_overhead.py --breakdown hopper [--case 1d]

For a tiny 2D problem (the GPU work is a few microseconds) it times N back-to-back calls on the
CPU clock and reports microseconds per call, forward only and forward + backward, without and
with inputs that require grad.  --device cpu times the same calls on CPU tensors (backend
"reference"; its math dominates, so compare it only with itself across trees).
--breakdown BACKEND splits one eager call of a fused-family backend (fused or hopper) into its
stages -- the cached plan lookup (fastna._dispatch.plan: validation, policy, choice), the
backend's forward with the launch replaced by a stub that only allocates the outputs, the
binding call alone (fastna._C.fused_forward on prepared arguments) -- next to the whole call,
and prints a cProfile of the whole call.  --case picks the problem (an anchor case name of
benchmarks/anchor_cases.py, default: the tiny one).  A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import time

import torch

import fastna


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def per_call_us(fn, device="cuda", n=2000):
    for _ in range(50):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / n * 1e6


def breakdown(backend, case_name):
    """Microseconds per call of each stage of one eager forward call (see the module doc)."""
    import cProfile
    import io
    import os
    import pstats
    import sys

    from fastna import _dispatch, _ext
    from fastna.backends import _fused_launch, _layout

    if case_name:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from anchor_cases import BY_NAME
        c = BY_NAME[case_name]
        shape, kw = (c.batch, *c.shape, c.heads, c.dim), c.kwargs()
    else:
        shape, kw = (1, 16, 16, 2, 64), dict(kernel_size=7)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ks = kw.pop("kernel_size")
    args = (None, q, k, v, ks, kw.get("stride", 1), kw.get("dilation", 1),
            kw.get("is_causal", False), None, None, None, backend)
    params, mod, choice = _dispatch.plan(*args)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], device="cuda", dtype=torch.float32)
    C = _ext.load()
    stream = _layout.stream(q.device)
    targs = tuple(_layout.tensor_arg(t) for t in (q, k, v, out))
    lse_arg = (lse.data_ptr(), list(lse.stride()))

    def binding():
        C.fused_forward(choice.fwd_params, *targs, lse_arg, stream)

    real_launch = _fused_launch.forward

    def stub(q_, k_, v_, params_, pd_):
        return (torch.empty(q_.shape[:-1] + (v_.shape[-1],), device=q_.device, dtype=q_.dtype),
                torch.empty(q_.shape[:-1], device=q_.device, dtype=torch.float32))

    def wrapper_only():
        _fused_launch.forward = stub
        try:
            mod.forward(q, k, v, params, choice=choice)
        finally:
            _fused_launch.forward = real_launch

    def whole():
        return fastna.neighborhood_attention(q, k, v, ks, backend=backend, **kw)

    rows = [("plan lookup (fastna._dispatch.plan, cached)",
             per_call_us(lambda: _dispatch.plan(*args))),
            ("backend forward, launch stubbed", per_call_us(wrapper_only)),
            ("binding call alone (_C.fused_forward)", per_call_us(binding)),
            ("whole call (fastna.neighborhood_attention)", per_call_us(whole))]
    print(f"# host time per call by stage ({torch.cuda.get_device_name()}, backend={backend}, "
          f"tile {choice.tile!r}, q {tuple(q.shape)}, {kw | {'kernel_size': ks}})\n")
    print("| stage | us / call |\n|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:.1f} |")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(500):
        whole()
    torch.cuda.synchronize()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    print("\ncProfile of 500 whole calls (tottime order):\n```\n" + buf.getvalue() + "```")


def _fwd_bwd(fn):
    def run():
        fn().sum().backward()
    return run


def table(backends, device):
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    names = [b for b in backends if b in fastna.available_backends()]
    rows = []
    for grad in (False, True):
        q = torch.randn(1, 16, 16, 2, 64, device=device, dtype=dtype, requires_grad=grad)
        qs = torch.randn(1, 2, 256, 64, device=device, dtype=dtype, requires_grad=grad)
        calls = [("torch SDPA", lambda: torch.nn.functional.scaled_dot_product_attention(
            qs, qs, qs))]
        calls += [(f"fastna.na2d backend={b}",
                   (lambda b: lambda: fastna.na2d(q, q, q, 7, backend=b))(b)) for b in names]
        calls.append(("fastna.na2d backend=None", lambda: fastna.na2d(q, q, q, 7)))
        for name, fn in calls:
            n = 1000 if device == "cuda" else 20
            rows.append((name, "requires_grad" if grad else "no grad", "forward",
                         per_call_us(fn, device, n=n)))
            if grad:
                rows.append((name, "requires_grad", "forward + backward",
                             per_call_us(_fwd_bwd(fn), device, n=n // 2)))
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"# host time per call ({where}, tiny 16x16 problem, {dtype}; SDPA on the same "
          f"tokens)\n")
    print("| call | inputs | pass | us / call |\n|---|---|---|---|")
    for name, grad, what, us in rows:
        print(f"| {name} | {grad} | {what} | {us:.1f} |")
    missing = [b for b in backends if b not in names]
    if missing:
        print(f"\nnot available here: {', '.join(missing)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="hopper,fused,naive,gemm")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--breakdown", default=None, metavar="BACKEND",
                    help="split one call of backend fused or hopper into its stages")
    ap.add_argument("--case", default=None, help="with --breakdown: an anchor case name")
    a = ap.parse_args()
    if a.breakdown:
        if a.breakdown not in ("fused", "hopper"):
            ap.error(f"--breakdown takes fused or hopper, got {a.breakdown!r}")
        breakdown(a.breakdown, a.case)
        return
    table(a.backends.split(",") + (["reference"] if a.device == "cpu" else []), a.device)


if __name__ == "__main__":
    main()
