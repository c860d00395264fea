"""float32 accuracy of the CUDA backends against the float64 reference, one table.

    python benchmarks/fp32_accuracy.py [--out FILE]

The fused backend computes float32 on TF32 tensor cores (q, k, v, P rounded to TF32, fp32
accumulation); "gemm" too (needs allow_tf32, set here); "naive" in full fp32.  For self
attention (kernel = length) torch's own TF32 path (matmul with allow_tf32, fp32 softmax) is the
yardstick.  Errors: ||out - ref|| / ||ref|| and max |lse - ref| (fused only: the others do not
return a differentiable lse the same way; naive's is listed where it returns one).
"""
from __future__ import annotations

import argparse
import datetime
import sys

import torch

import fastna
from fastna import _args, reference

# (name, spatial shape, kernel, dilation, B, H, D)
CASES = [
    ("1d self attention", (512,), 512, 1, 2, 4, 64),
    ("1d K=65", (2048,), 65, 1, 2, 4, 128),
    ("nat-like 2d 7x7", (28, 28), 7, 1, 4, 4, 32),
    ("dinat-like 2d 7x7 d4", (28, 28), 7, 4, 4, 4, 32),
    ("3d 5x5x5", (8, 12, 12), 5, 1, 2, 2, 64),
]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    lines = [f"# float32 accuracy vs the float64 reference\n",
             f"- GPU: {torch.cuda.get_device_name()}\n- date: {datetime.date.today()}\n"
             f"- torch {torch.__version__}\n- command: python benchmarks/fp32_accuracy.py "
             f"{' '.join(sys.argv[1:])}\n",
             "| case | fused (TF32) out | fused lse max abs | gemm (TF32) out | naive (fp32) out | "
             "torch TF32 out |", "|---|---|---|---|---|---|"]
    for name, shape, K, d, B, H, D in CASES:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(B, *shape, H, D, device="cuda", generator=g) for _ in range(3))
        p = _args.normalize(q, k, v, K, 1, d, False, None, None, None)
        rout, rlse = reference.attention(q.double(), k.double(), v.double(), p, return_lse=True)
        cells = []
        out, lse = fastna.neighborhood_attention(q, k, v, K, dilation=d, return_lse=True,
                                                 backend="fused")
        cells += [f"{rel(out, rout):.2e}", f"{(lse.double() - rlse).abs().max().item():.2e}"]
        for b in ("gemm", "naive"):
            try:
                cells.append(f"{rel(fastna.neighborhood_attention(q, k, v, K, dilation=d, backend=b), rout):.2e}")
            except Exception as e:  # noqa: BLE001 - the table says why
                cells.append(f"({type(e).__name__})")
        if len(shape) == 1 and K == shape[0]:
            qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
            s = torch.matmul(qt, kt.transpose(-1, -2)) * p.scale
            tout = torch.matmul(torch.softmax(s, -1), vt).transpose(1, 2)
            cells.append(f"{rel(tout, rout):.2e}")
        else:
            cells.append("—")
        lines.append(f"| {name} (B={B}, H={H}, D={D}) | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
