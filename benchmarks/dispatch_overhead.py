"""Host-side cost of one fastna call (argument checks, backend selection, custom-op dispatch,
autograd bookkeeping), which bounds small problems: a kernel faster than this is hidden behind
the launch path.

    python benchmarks/dispatch_overhead.py [--backends hopper,fused,naive,gemm]
    python benchmarks/dispatch_overhead.py --breakdown hopper [--case 1d]

For a tiny 2D problem (the GPU work is a few microseconds) it times N back-to-back calls on the
CPU clock and reports microseconds per call, next to torch SDPA on the same tensors for scale.
--breakdown BACKEND splits one call of that fused-family backend (fused or hopper) into its
stages -- argument normalization, backend selection, the Python wrapper around the kernel call
(the kernel call replaced by a stub that only allocates the outputs), the compiled binding call
alone (fastna._C.fused_forward on prepared arguments: argument parsing, can_implement, TMA map
encoding, launch) -- next to the whole call, and prints a cProfile of the whole call.  --case
picks the problem (an anchor case name of benchmarks/anchor_cases.py, default: the tiny one).
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


def breakdown(backend, case_name):
    """Microseconds per call of each stage of one eager forward call (see the module doc)."""
    import cProfile
    import io
    import os
    import pstats
    import sys

    from fastna import _args, _ext
    from fastna import backends as _backends
    from fastna.backends import fused

    if case_name:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from anchor_cases import BY_NAME
        c = BY_NAME[case_name]
        shape, kw = (c.batch, *c.shape, c.heads, c.dim), c.kwargs()
    else:
        shape, kw = (1, 16, 16, 2, 64), dict(kernel_size=7)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ks = kw.pop("kernel_size")
    norm = (lambda: _args.normalize(q, k, v, ks, kw.get("stride", 1), kw.get("dilation", 1),
                                    kw.get("is_causal", False), None, None, None))
    params = norm()
    mod = _backends.select(backend, q, k, v, params)
    tile = "hopper" if backend == "hopper" else None
    P = fused._head_dim_for(q.shape[-1], v.shape[-1],
                            fused._device_instances(params.rank, q.dtype, q.device))
    tile = fused._pick_tile(params.rank, q.dtype, P, q.device, tile)
    pd = fused._params_dict(params, q, k, v, tile)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], device="cuda", dtype=torch.float32)
    C = _ext.load()
    stream = fused._stream(q.device)
    targs = (fused._targ(q), fused._targ(k), fused._targ(v), fused._targ(out))
    lse_arg = (lse.data_ptr(), list(lse.stride()))

    def binding():
        C.fused_forward(pd, *targs, lse_arg, stream)

    real_kernel = fused._kernel

    def stub(q_, k_, v_, params_, pd_):
        return (torch.empty(q_.shape[:-1] + (v_.shape[-1],), device=q_.device, dtype=q_.dtype),
                torch.empty(q_.shape[:-1], device=q_.device, dtype=torch.float32))

    def wrapper_only():
        fused._kernel = stub
        try:
            mod.forward(q, k, v, params)
        finally:
            fused._kernel = real_kernel

    def whole():
        return fastna.neighborhood_attention(q, k, v, ks, backend=backend, **kw)

    rows = [("normalize (fastna._args)", per_call_us(norm)),
            ("select (backend check)", per_call_us(lambda: _backends.select(backend, q, k, v, params))),
            ("Python wrapper, kernel call stubbed", per_call_us(wrapper_only)),
            ("binding call alone (_C.fused_forward)", per_call_us(binding)),
            ("whole call (fastna.neighborhood_attention)", per_call_us(whole))]
    print(f"# host time per call by stage ({torch.cuda.get_device_name()}, backend={backend}, "
          f"q {tuple(q.shape)}, {kw | {'kernel_size': ks}})\n")
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="hopper,fused,naive,gemm")
    ap.add_argument("--breakdown", default=None, metavar="BACKEND",
                    help="split one call of backend fused or hopper into its stages")
    ap.add_argument("--case", default=None, help="with --breakdown: an anchor case name")
    a = ap.parse_args()
    if a.breakdown:
        if a.breakdown not in ("fused", "hopper"):
            ap.error(f"--breakdown takes fused or hopper, got {a.breakdown!r}")
        breakdown(a.breakdown, a.case)
        return
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
