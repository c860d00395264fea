"""Model-level throughput: NAT / DiNAT image classification (img/s at 224x224) and peak memory,
per fastna backend and dtype, in one run.

    python benchmarks/bench_models.py [--models nat_mini,dinat_tiny] [--backends all]
        [--dtypes fp32,fp16,bf16,amp-bf16] [--batch auto|N] [--mode infer,train] [--rpb] [--out DIR]

--mode train times one training step: forward, cross-entropy, backward and an AdamW step.
--dtypes amp-bf16: float32 weights under torch.autocast(bfloat16) (the usual training setup);
fp32 / fp16 / bf16 cast the whole model.

--backends all = every backend fastna knows (reference, naive, gemm, fused, hopper): the
available ones run, the others are listed as skipped with the reason.  Two more names: auto
(backend=None, fastna's own choice per layer) and flex (FlexAttention with the NA mask,
benchmarks/flex_backend.py). The models are built
without relative positional bias so that attention runs through the chosen backend (with RPB
every layer takes the unfused legacy path whatever the backend); --rpb adds that configuration
as a row named "unfused+rpb".

--batch auto starts from a per-model batch that fills an 80 GB GPU in half precision and halves
it on out-of-memory. Writes DIR/bench_models.md (GPU name, date, commit), .json and .png
(the plot needs matplotlib). A benchmark, not a test: run the GPU tests first.

CPU smoke run: python benchmarks/bench_models.py --device cpu --models tiny --batch 2
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import subprocess
import sys
import time
from functools import lru_cache

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import fastna
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(_HERE, "..", "python"))
    import fastna
import fastna.models as M  # noqa: E402
from fastna.modules import NeighborhoodAttentionND  # noqa: E402
from fastna import backends as _backends  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "amp-bf16": torch.float32}
# dtype name -> autocast dtype (weights stay DTYPES[name])
AUTOCAST = {"amp-bf16": torch.bfloat16}
# Starting batch for --batch auto (inference, half precision, 80 GB); halved for fp32 and for
# training, and again on out-of-memory.
AUTO_BATCH = {"nat_mini": 512, "nat_tiny": 512, "nat_small": 256, "nat_base": 256,
              "dinat_mini": 512, "dinat_tiny": 512, "dinat_small": 256, "dinat_base": 256,
              "dinat_large": 128, "tiny": 64}


def tiny(num_classes=1000, **kw):
    """A few-layer DiNAT for smoke runs (same code path as the real models)."""
    cfg = dict(embed_dim=16, mlp_ratio=2, depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 4],
               dilations=[[1], [1, 4], [1], [1]], drop_path_rate=0.0)
    cfg.update(kw)
    return M.DiNAT(num_classes=num_classes, **cfg)


def build(name, **kw):
    return tiny(**kw) if name == "tiny" else M.create(name, **kw)


@lru_cache(maxsize=1)
def master(name, rpb):
    """The model's CPU fp32 weights (seed 0), built once per model: random init of the large
    models takes seconds, and every (dtype, backend) row starts from a copy."""
    torch.manual_seed(0)
    return build(name, rel_pos_bias=rpb)


def skip_reason(backend, device):
    """None if the backend can be tried on this machine, else why not."""
    if backend == "unfused+rpb":
        return None
    if backend == "auto":
        return None if device.type == "cuda" else "backend 'auto' is timed on CUDA only"
    try:
        mod = _backends.get(backend)
    except (ValueError, NotImplementedError, TypeError) as e:
        return str(e)
    if not mod.available():
        return f"backend {backend!r} is not available on this machine"
    if device.type != "cuda" and backend not in ("reference",):
        return f"backend {backend!r} needs a CUDA device"
    return None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model, batch, res, dtype, device, train, warmup, iters, row_seconds=0.0,
            autocast=None):
    """(seconds per iteration, peak bytes or None, timed iterations) for one batch of images. row_seconds > 0
    caps the timed iterations at about that many seconds (at least 2 iterations).  A training
    iteration is forward, loss, backward and an AdamW step; autocast: the autocast dtype or None."""
    x = torch.randn(batch, 3, res, res, device=device, dtype=dtype)
    target = torch.randint(0, 1000, (batch,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None
    amp = (torch.autocast(device.type, dtype=autocast) if autocast is not None
           else contextlib.nullcontext())

    def step():
        if train:
            with amp:
                out = model(x)
            loss = torch.nn.functional.cross_entropy(out.float(), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), amp:
                model(x)

    # Warm-up, but no more of it than about one row budget: the reference backend takes
    # seconds per batch on the big models, the kernels milliseconds.
    t0 = time.perf_counter()
    for i in range(warmup):
        step()
        sync(device)
        if time.perf_counter() - t0 > row_seconds:
            break
    step_s = (time.perf_counter() - t0) / (i + 1) if warmup else None
    if step_s is not None and row_seconds > 0:
        iters = max(2, min(iters, int(row_seconds / max(step_s, 1e-6))))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / iters
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return dt, peak, iters


def is_oom(e):
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def run_one(name, backend, dtype_name, mode, a, device):
    row = dict(model=name, backend=backend, dtype=dtype_name, mode=mode)
    reason = skip_reason(backend, device)
    if reason:
        row["skipped"] = reason
        return row
    dtype = DTYPES[dtype_name]
    train = mode == "train"
    rpb = backend == "unfused+rpb"
    model = copy.deepcopy(master(name, rpb))
    na_layers = [m for m in model.modules() if isinstance(m, NeighborhoodAttentionND)]
    assert na_layers, f"{name}: no NeighborhoodAttentionND layer to set the backend of"
    for m in na_layers:  # the backend is a plain attribute of every NA layer
        m.backend = None if rpb or backend == "auto" else backend
    row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    model = model.to(device=device, dtype=dtype).train(train)
    if a.batch == "auto":
        batch = AUTO_BATCH.get(name, 64)
        if dtype == torch.float32:
            batch //= 2
        if train:
            batch //= 2
        batch = max(batch, 1)
    else:
        batch = int(a.batch)
    while True:
        try:
            dt, peak, n = measure(model, batch, a.res, dtype, device, train, a.warmup, a.iters,
                                  a.row_seconds, AUTOCAST.get(dtype_name))
            break
        except Exception as e:  # OOM: halve (auto only); anything else: report
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if is_oom(e) and a.batch == "auto" and batch > 1:
                batch //= 2
                continue
            row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            return row
    row.update(batch=batch, iters=n, ms=dt * 1e3, img_s=batch / dt,
               peak_gib=None if peak is None else peak / 2**30)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def commit():
    c = os.environ.get("FASTNA_COMMIT")
    if c:
        return c
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=_HERE).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def provenance(dev_name, script, argv):
    """The lines a results table opens with: GPU, date, commit, versions, the command."""
    args = " ".join(sys.argv[1:] if argv is None else argv)
    return (f"- GPU: {dev_name}\n- date: {datetime.date.today()}\n- commit: {commit()}\n"
            f"- torch {torch.__version__}, fastna {fastna.__version__}\n"
            f"- command: python benchmarks/{script} {args}\n")


def table(rows, baseline):
    head = ["model", "params (M)", "mode", "dtype", "backend", "batch", "steps", "img/s", "ms/batch",
            "peak GiB", f"vs {baseline}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = {(r["model"], r["mode"], r["dtype"]): r["img_s"] for r in rows
            if r["backend"] == baseline and "img_s" in r}
    notes = []
    for r in rows:
        if "img_s" not in r:
            why = r.get("skipped") or r.get("error")
            notes.append(f"- {r['model']} {r['mode']} {r['dtype']} {r['backend']}: "
                         f"{'skipped' if 'skipped' in r else 'error'}: {why}")
            continue
        b = base.get((r["model"], r["mode"], r["dtype"]))
        cells = [r["model"], f"{r['params_m']:.1f}", r["mode"], r["dtype"], r["backend"],
                 str(r["batch"]), str(r.get("iters", "—")), f"{r['img_s']:.1f}", f"{r['ms']:.2f}",
                 "—" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}",
                 f"{r['img_s'] / b:.2f}x" if b else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    # one line per skipped backend is enough (same reason for every model/dtype)
    seen, uniq = set(), []
    for n in notes:
        key = n.split(":", 1)[0].split()[-1] + n.split(":", 2)[-1]
        if "skipped" in n and key in seen:
            continue
        seen.add(key)
        uniq.append(n)
    return "\n".join(lines + ([""] + uniq if uniq else []))


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed; no plot written"
    ok = [r for r in rows if "img_s" in r]
    if not ok:
        return "nothing to plot"
    groups = list(dict.fromkeys((r["mode"], r["dtype"]) for r in ok))
    models = list(dict.fromkeys(r["model"] for r in ok))
    names = list(dict.fromkeys(r["backend"] for r in ok))
    fig, axes = plt.subplots(1, len(groups), figsize=(max(6, 1.4 * len(models)) * len(groups), 4.5),
                             squeeze=False)
    width = 0.8 / len(names)
    for ax, (mode, dt) in zip(axes[0], groups):
        for j, n in enumerate(names):
            ys = [next((r["img_s"] for r in ok if r["model"] == m and r["backend"] == n and
                        r["mode"] == mode and r["dtype"] == dt), 0.0) for m in models]
            ax.bar([i + j * width for i in range(len(models))], ys, width, label=n)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))])
        ax.set_xticklabels(models, rotation=30, ha="right")
        ax.set_ylabel("images / s (higher is better)")
        ax.set_title(f"{mode}, {dt}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def write(out, header, rows, dev_name, baseline=None, plot_too=True):
    """Renders the table (ratios vs `baseline`: default reference if it ran, else the first
    backend that ran) and, with `out`, writes out/bench_models.{md,json[,png]}."""
    names = list(dict.fromkeys(r["backend"] for r in rows))
    ran = [b for b in names if any(r["backend"] == b and "img_s" in r for r in rows)]
    baseline = baseline or ("reference" if "reference" in ran else (ran[0] if ran else "—"))
    text = header + table(rows, baseline) + "\n"
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "bench_models.md"), "w") as f:
            f.write(text)
        with open(os.path.join(out, "bench_models.json"), "w") as f:
            json.dump(dict(device=dev_name, date=str(datetime.date.today()), commit=commit(),
                           header=header, rows=rows), f, indent=1)
        if plot_too:
            err = plot(rows, os.path.join(out, "bench_models.png"))
            if err:
                print(f"note: {err}", file=sys.stderr)
    return text


def render(path, out, baseline=None):
    """Table and plot again from a run's bench_models.json (e.g. one a device call returned
    without its plot, or cut short by a time limit)."""
    with open(path) as f:
        d = json.load(f)
    header = d.get("header") or (f"# Model throughput\n\n- GPU: {d['device']}\n- date: {d['date']}\n"
                                 f"- commit: {d['commit']}\n\n")
    return write(out, header, d["rows"], d["device"], baseline)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="nat_mini,nat_tiny,nat_small,nat_base,dinat_mini,"
                                        "dinat_tiny,dinat_small,dinat_base,dinat_large",
                    help=f"comma list of {', '.join(M.list_models() + ['tiny'])}")
    ap.add_argument("--backends", default="all",
                    help="comma list (reference, naive, gemm, fused, hopper, unfused+rpb, auto, "
                         "flex) or all")
    ap.add_argument("--rpb", action="store_true", help="also run the models with RPB (unfused)")
    ap.add_argument("--dtypes", default="fp32,fp16,bf16")
    ap.add_argument("--mode", default="infer", help="infer, train or infer,train")
    ap.add_argument("--batch", default="auto", help="images per step, or auto (fill the GPU)")
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--row-seconds", type=float, default=0.0,
                    help="if > 0: time each row for about this long (2..--iters iterations, "
                         "fewer warm-up steps for slow rows); keeps a 9-model sweep short")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--baseline", default=None, help="backend the ratios are relative to "
                                                     "(default: reference if run, else the first)")
    ap.add_argument("--out", default=None, help="output directory (markdown, json, png)")
    ap.add_argument("--render", metavar="JSON", default=None,
                    help="only re-render table and plot from a run's bench_models.json into --out")
    ap.add_argument("--no-tf32", action="store_true",
                    help="keep float32 matmuls in full fp32 (then the gemm backend declines fp32)")
    a = ap.parse_args(argv)
    if a.render:
        print(render(a.render, a.out or os.path.dirname(os.path.abspath(a.render)), a.baseline))
        return 0
    # One TF32 setting for every float32 row: the gemm backend computes fp32 on TF32 tensor
    # cores and runs only while torch allows TF32 matmuls; the models' linear layers follow it.
    torch.backends.cuda.matmul.allow_tf32 = not a.no_tf32
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device (use --device cpu for a smoke run)")
    if a.batch != "auto" and not (a.batch.isdigit() and int(a.batch) > 0):
        ap.error(f"--batch must be a positive integer or auto, got {a.batch!r}")
    models = [m for m in a.models.split(",") if m]
    for m in models:
        if m != "tiny" and m not in M.list_models():
            ap.error(f"unknown model {m!r}; choose from {', '.join(M.list_models() + ['tiny'])}")
    if a.backends == "all":
        names = list(_backends.KNOWN)
    else:
        names = [b for b in a.backends.split(",") if b]
    if "flex" in names:
        sys.path.insert(0, _HERE)
        import flex_backend
        flex_backend.register()
    if a.rpb and "unfused+rpb" not in names:
        names.append("unfused+rpb")
    dtypes = [d for d in a.dtypes.split(",") if d]
    for d in dtypes:
        if d not in DTYPES:
            ap.error(f"unknown dtype {d!r}; use fp32, fp16, bf16, amp-bf16")
    modes = [m for m in a.mode.split(",") if m]
    for m in modes:
        if m not in ("infer", "train"):
            ap.error(f"--mode: {m!r} is neither infer nor train")

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = (f"# Model throughput at {a.res}x{a.res}\n\n" + provenance(dev_name, "bench_models.py", argv)
              + f"- models without RPB (fused path through the named backend) unless the backend "
              f"is unfused+rpb; " + (f"{a.warmup} warm-up + {a.iters} timed steps" if a.row_seconds <= 0
                                     else f"up to {a.warmup} warm-up steps, timed steps for about "
                                          f"{a.row_seconds:g} s per row (2..{a.iters}; column 'steps')")
              + "\n"
              f"- float32 matmuls (linear layers, the gemm backend) in TF32: {not a.no_tf32}\n\n")
    rows = []
    total = len(models) * len(names) * len(dtypes) * len(modes)
    i = 0
    for name in models:
        for mode in modes:
            for dt in dtypes:
                for b in names:
                    i += 1
                    print(f"[{i}/{total}] {name} {mode} {dt} {b}", file=sys.stderr, flush=True)
                    rows.append(run_one(name, b, dt, mode, a, device))
                    print(json.dumps(rows[-1]), flush=True)
                    # After every row, so that a run cut short still leaves what it measured.
                    text = write(a.out, header, rows, dev_name, a.baseline, plot_too=False)
        master.cache_clear()
    text = write(a.out, header, rows, dev_name, a.baseline, plot_too=True)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
