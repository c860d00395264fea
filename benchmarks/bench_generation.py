"""StyleNAT generation throughput (the paper's generation table): images/s of the FFHQ-256
generator (fastna.models.stylenat_ffhq256), z [B, 512] -> images [B, 3, 256, 256], per
attention path and dtype, in one run.

    python benchmarks/bench_generation.py [--batches 8,32] [--dtypes fp32,fp16,bf16]
        [--paths unfused+rpb,naive,gemm,auto,flex] [--out DIR]

Paths:
- unfused+rpb: the authors' model as it is (relative positional bias in every head group): the
  unfused QK + RPB -> softmax -> AV ops (the GEMM-based kernels where built), as NATTEN 0.17 ran it.
- naive / gemm / auto / flex: the same generator with the biases left out, so that every head
  group runs fastna.neighborhood_attention on that backend (auto = backend=None, fastna's
  choice: the fused / Hopper kernels); flex = FlexAttention with the NA mask
  (benchmarks/flex_backend.py).  The per-head-group windows (kernel 7, dilations 1 and 2..32)
  run through fastna's head-group path.
Inference mode, random weights (seed 0).  Writes DIR/bench_generation.{md,json} (GPU, date,
commit, command).  A benchmark, not a test.

CPU smoke run: python benchmarks/bench_generation.py --device cpu --size 16 --batches 1
    --dtypes fp32 --paths unfused+rpb --iters 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
from fastna.models import stylenat_ffhq256  # noqa: E402
from bench_models import commit, is_oom, provenance  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PATHS = ("unfused+rpb", "naive", "gemm", "auto", "flex")


def build(path, size, device, dtype):
    torch.manual_seed(0)
    kw = {} if size == 256 else dict(size=size, kernels=((3,),) * (size.bit_length() - 3),
                                      dilations=((1,),) * (size.bit_length() - 3))
    model = stylenat_ffhq256(**kw)
    if path != "unfused+rpb":
        for m in model.attention_modules():
            # no bias: every head group takes fastna.neighborhood_attention on `path`
            m.rpbs = (lambda n: (lambda: [None] * n))(len(m.groups))
        model.set_backend(None if path == "auto" else path)
    return model.to(device=device, dtype=dtype).eval()


def measure(model, batch, device, dtype, warmup, iters):
    z = torch.randn(batch, 512, device=device, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    with torch.inference_mode():
        for _ in range(warmup):
            model(z)
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            out = model(z)
        sync()
    assert out.shape[0] == batch and torch.isfinite(out.float()).all(), "non-finite images"
    return (time.perf_counter() - t0) / iters


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--dtypes", default="fp32,fp16,bf16")
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--size", type=int, default=256, help="256 = FFHQ-256; smaller for smoke runs")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    paths = [p for p in a.paths.split(",") if p]
    for p in paths:
        if p not in PATHS:
            ap.error(f"--paths: unknown path {p!r}; choose from {', '.join(PATHS)}")
    if "flex" in paths:
        import flex_backend
        flex_backend.register()
    torch.backends.cuda.matmul.allow_tf32 = True
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = (f"# StyleNAT generation throughput ({a.size}x{a.size})\n\n"
              + provenance(dev_name, "bench_generation.py", argv)
              + f"- inference, {a.warmup} warm-up + {a.iters} timed batches; float32 matmuls in TF32\n\n")
    rows = []
    for dt in [d for d in a.dtypes.split(",") if d]:
        for batch in [int(b) for b in a.batches.split(",") if b]:
            for p in paths:
                row = dict(path=p, dtype=dt, batch=batch)
                print(f"{p} {dt} batch {batch}", file=sys.stderr, flush=True)
                try:
                    model = build(p, a.size, device, DTYPES[dt])
                    s = measure(model, batch, device, DTYPES[dt], a.warmup, a.iters)
                    row.update(ms=s * 1e3, img_s=batch / s)
                except Exception as e:  # a path that cannot run (no kernels, OOM): say why
                    row["error"] = ("out of memory" if is_oom(e) else
                                    f"{type(e).__name__}: {e}".splitlines()[0][:200])
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                rows.append(row)
    base = {(r["dtype"], r["batch"]): r["img_s"] for r in rows
            if r["path"] == "unfused+rpb" and "img_s" in r}
    lines = ["| dtype | batch | path | img/s | ms/batch | vs unfused+rpb |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "img_s" not in r:
            lines.append(f"| {r['dtype']} | {r['batch']} | {r['path']} | — | — | {r['error']} |")
            continue
        b = base.get((r["dtype"], r["batch"]))
        ratio = f"{r['img_s'] / b:.2f}x" if b else "—"
        lines.append(f"| {r['dtype']} | {r['batch']} | {r['path']} | {r['img_s']:.1f} | "
                     f"{r['ms']:.1f} | {ratio} |")
    text = header + "\n".join(lines) + "\n"
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "bench_generation.md"), "w") as f:
            f.write(text)
        with open(os.path.join(a.out, "bench_generation.json"), "w") as f:
            json.dump(dict(device=dev_name, commit=commit(), rows=rows), f, indent=1)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
