"""Where the 1-head 1d anchors' eager time goes: for backend hopper, per case, the do_bench
(eager) median, the CUDA-graph replay median, the torch.profiler kernel time and the host's
enqueue time per call (CPU clock over back-to-back calls, no sync inside) -- optionally again
after FlexAttention compiled the case in the same process.

    python benchmarks/tools/host_vs_graph_1d.py 1d,1d-strided [flex]     (from the repo root)

A benchmark, not a test.
"""
import os, sys, time, subprocess, torch
sys.path.insert(0, os.path.abspath("benchmarks"))
from anchor_cases import BY_NAME
from bench_fwd import bench, kernel_ms, flex_fn
import fastna
from triton.testing import do_bench_cudagraph
def host_us(fn, n=300):
    for _ in range(10): fn()
    torch.cuda.synchronize(); t0=time.perf_counter()
    for _ in range(n): fn()
    t1=time.perf_counter(); torch.cuda.synchronize()
    return (t1-t0)/n*1e6
order = sys.argv[1].split(",")
for name in order:
    c = BY_NAME[name]
    q,k,v = (torch.randn(c.batch,*c.shape,c.heads,c.dim,device="cuda",dtype=torch.bfloat16) for _ in range(3))
    fn = lambda: fastna.neighborhood_attention(q,k,v,backend="hopper",**c.kwargs())
    r = dict(case=name, bench=bench(fn), graph=do_bench_cudagraph(fn), kern=kernel_ms(fn), host_enqueue_us=host_us(fn))
    if "flex" in sys.argv[2:]:
        f = flex_fn(c); g = lambda: f(q,k,v)
        r["flex"] = bench(g); r["flex_graph"] = do_bench_cudagraph(g)
        r["bench_after_flex"] = bench(fn); r["host_after_flex"] = host_us(fn)
    print({a: (round(b,4) if isinstance(b,float) else b) for a,b in r.items()}, flush=True)
