"""``python -m fastna profile``: time any neighborhood-attention problem on every backend.

Examples::

    python -m fastna profile --preset flux
    python -m fastna profile --preset all --mode fwd --json > sweep.json
    python -m fastna profile --shape 56x56 --kernel 7 --dilation 4 --heads 4 --dim 32 --batch 32
    python -m fastna profile --shape 16x48x80 --kernel 8x16x24 --causal 1x0x0 --plot out.png

For every problem and every contender (each available fastna backend, cuDNN SDPA dense
attention and FlexAttention with the NA mask), forward and forward+backward: median time,
speedup over dense attention, % of the FLOP bound (N / prod(K): the speedup NA would have if
time scaled with FLOPs), effective TFLOP/s (the FLOPs NA needs, i.e. exact window sizes, per
second; the same numerator for every contender) and peak memory beyond the inputs.

Without a CUDA device it runs the reference backend (and dense SDPA as the baseline) on the
CPU, on a small default problem, and says so.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import statistics
import sys
import time
from math import prod
from typing import Dict, List, Optional, Sequence

import torch

from ._args import check_window
from .presets import PRESETS, Problem, get_preset, preset_names

__all__ = ["main", "profile", "parse_axes", "exact_attended_pairs", "format_table"]

DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "half": "float16", "fp32": "float32", "float32": "float32", "float": "float32",
          "fp64": "float64", "float64": "float64"}
MODES = {"fwd": ("fwd",), "fwdbwd": ("fwd+bwd",), "fwd+bwd": ("fwd+bwd",), "bwd": ("fwd+bwd",),
         "both": ("fwd", "fwd+bwd")}
# The naive backend materializes fp32 attention weights [B, N, H, window]; skip it beyond this.
NAIVE_MAX_BYTES = 8 << 30
# Backward FLOPs ~ 2.5x forward (5 GEMMs instead of 2), as in the FlashAttention papers.
BWD_FLOP_FACTOR = 2.5
CPU_DEFAULT = dict(shape=(32, 32), kernel=(7, 7), heads=2, dim=32, batch=1, dtype="float32")


# ----------------------------------------------------------------------------- arguments

def parse_axes(text: str, name: str, rank: Optional[int] = None, kind=int) -> tuple:
    """'7' or '7x7' -> per-axis tuple (broadcast to rank); kind=bool reads 1/0/true/false."""
    parts = [p.strip() for p in str(text).lower().split("x")]
    if not parts or any(p == "" for p in parts):
        raise ValueError(f"--{name}: cannot parse {text!r} (expected e.g. 7 or 7x7)")
    out = []
    for p in parts:
        if kind is bool:
            if p in ("1", "true", "t", "yes", "y"):
                out.append(True)
            elif p in ("0", "false", "f", "no", "n"):
                out.append(False)
            else:
                raise ValueError(f"--{name}: {p!r} in {text!r} is not 1/0/true/false")
        else:
            try:
                out.append(int(p))
            except ValueError:
                raise ValueError(f"--{name}: {p!r} in {text!r} is not an integer") from None
    if rank is not None:
        if len(out) == 1:
            out = out * rank
        elif len(out) != rank:
            raise ValueError(f"--{name} {text!r} has {len(out)} axes but the shape has {rank}")
    return tuple(out)


def _split(text) -> List[str]:
    return [t for t in str(text).split(",") if t.strip()] if text is not None else [None]


def build_problems(a, cuda: bool) -> List[Problem]:
    """Problems from --preset (with overrides) or --shape (comma lists sweep their product)."""
    dtype = DTYPES.get(a.dtype.lower()) if a.dtype else None
    if a.dtype and dtype is None:
        raise ValueError(f"--dtype: unknown dtype {a.dtype!r}; use one of {', '.join(DTYPES)}")
    if dtype is None and not cuda:
        dtype = CPU_DEFAULT["dtype"]      # presets too: bf16 is their GPU dtype
    problems = _build(a, cuda, dtype)
    for p in problems:
        # The same window rule every NA call applies, before anything is timed.
        try:
            check_window(p.kernel, p.dilation, p.shape, p.stride)
        except ValueError as e:
            raise ValueError(f"problem {p.name}: {e}") from None
    return problems


def _build(a, cuda: bool, dtype: Optional[str]) -> List[Problem]:
    problems = []
    if a.preset:
        names = preset_names() if a.preset == "all" else _split(a.preset)
        for n in names:
            p = get_preset(n.strip())
            problems.append(_override(p, a, dtype))
        return problems
    if a.shape is None and not cuda:
        base = dict(CPU_DEFAULT)
    elif a.shape is None:
        return [_override(get_preset("nat"), a, dtype)]
    else:
        base = dict(shape=None, kernel=None, heads=4, dim=32, batch=1,
                    dtype="bfloat16" if cuda else "float32")
    shapes = [parse_axes(s, "shape") for s in _split(a.shape)] if a.shape else [base["shape"]]
    kernels = _split(a.kernel) if a.kernel else [None]
    dilations = _split(a.dilation) if a.dilation else [None]
    batches = _split(a.batch) if a.batch else [None]
    for shape, kt, dt, bt in itertools.product(shapes, kernels, dilations, batches):
        rank = len(shape)
        if kt is not None:
            kernel = parse_axes(kt, "kernel", rank)
        elif base["kernel"] is not None and len(base["kernel"]) == rank:
            kernel = base["kernel"]
        else:
            kernel = (min(7, min(shape)),) * rank
        stride = parse_axes(a.stride, "stride", rank) if a.stride else (1,) * rank
        dilation = parse_axes(dt, "dilation", rank) if dt else (1,) * rank
        causal = parse_axes(a.causal, "causal", rank, kind=bool) if a.causal else (False,) * rank
        batch = int(bt) if bt is not None else base["batch"]
        name = "x".join(map(str, shape)) + "/k" + "x".join(map(str, kernel))
        if any(d != 1 for d in dilation):
            name += "/d" + "x".join(map(str, dilation))
        if any(s != 1 for s in stride):
            name += "/s" + "x".join(map(str, stride))
        if any(causal):
            name += "/c" + "x".join(str(int(c)) for c in causal)
        problems.append(Problem(name, shape, kernel, stride, dilation, causal, batch=batch,
                                heads=a.heads or base["heads"], dim=a.dim or base["dim"],
                                dtype=dtype or base["dtype"]))
    return problems


def _override(p: Problem, a, dtype) -> Problem:
    kw = dict(name=p.name, shape=p.shape, kernel=p.kernel, stride=p.stride, dilation=p.dilation,
              causal=p.causal, batch=p.batch, heads=p.heads, dim=p.dim, dtype=p.dtype)
    r = p.rank
    if a.kernel:
        kw["kernel"] = parse_axes(a.kernel, "kernel", r)
    if a.stride:
        kw["stride"] = parse_axes(a.stride, "stride", r)
    if a.dilation:
        kw["dilation"] = parse_axes(a.dilation, "dilation", r)
    if a.causal:
        kw["causal"] = parse_axes(a.causal, "causal", r, kind=bool)
    if a.batch:
        kw["batch"] = int(a.batch)
    if a.heads:
        kw["heads"] = a.heads
    if a.dim:
        kw["dim"] = a.dim
    if dtype:
        kw["dtype"] = dtype
    return Problem(**kw)


# ----------------------------------------------------------------------------- FLOPs

def exact_attended_pairs(p: Problem) -> int:
    """Number of (query, key) pairs NA computes per batch and head: the neighborhood is a
    Cartesian product, so it is the product over axes of the summed per-axis window sizes."""
    from .index_math import window
    total = 1
    for L, K, s, d, c in zip(p.shape, p.kernel, p.stride, p.dilation, p.causal):
        total *= sum(e - b for b, e in (window(L, K, s, d, c, i) for i in range(L)))
    return total


def problem_flops(p: Problem, mode: str) -> float:
    fwd = 4.0 * p.batch * p.heads * p.dim * exact_attended_pairs(p)
    return fwd * (1 + BWD_FLOP_FACTOR) if mode == "fwd+bwd" else fwd


# ----------------------------------------------------------------------------- contenders

class Skip(Exception):
    """A contender that cannot run this problem; the message says why."""


def _heads_first(t):
    b, h, d = t.shape[0], t.shape[-2], t.shape[-1]
    return t.reshape(b, -1, h, d).transpose(1, 2)


def _fastna_fn(name: str, p: Problem, q, k, v):
    from . import backends
    from ._api import neighborhood_attention
    from ._args import normalize
    try:
        mod = backends.get(name)
    except (ValueError, NotImplementedError) as e:
        raise Skip(str(e)) from None
    if not mod.available():
        raise Skip(f"backend {name!r} is not available on this machine")
    params = normalize(q, k, v, **p.kwargs())
    reason = mod.check(q, k, v, params)
    if reason is not None:
        raise Skip(str(reason))
    if name == "naive":
        need = 4 * p.batch * p.tokens * p.heads * p.window
        if need > NAIVE_MAX_BYTES:
            raise Skip(f"attention-weight buffer would take {need / 2**30:.1f} GiB")
    kw = p.kwargs()
    return lambda q, k, v: neighborhood_attention(q, k, v, backend=name, **kw)


def _cudnn_fn(p: Problem, q, k, v):
    if q.device.type != "cuda":
        raise Skip("cuDNN SDPA needs a CUDA device")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run(q, k, v):
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return torch.nn.functional.scaled_dot_product_attention(
                _heads_first(q), _heads_first(k), _heads_first(v))
    return run


def _sdpa_fn(p: Problem, q, k, v):
    def run(q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(
            _heads_first(q), _heads_first(k), _heads_first(v))
    return run


def _flex_fn(p: Problem, q, k, v):
    if q.device.type != "cuda":
        raise Skip("FlexAttention is profiled on CUDA only (CPU compile is not representative)")
    try:
        from .flex import flex_na
    except ImportError as e:
        raise Skip(f"FlexAttention unavailable: {e}") from None
    return flex_na(p, device=q.device)


def contender_names(requested: Optional[str], cuda: bool) -> List[str]:
    from . import backends
    if requested and requested != "all":
        return [n.strip() for n in requested.split(",") if n.strip()]
    if not cuda:
        return ["sdpa", "reference"]
    fastna_names = [n for n in backends.available_backends() if n != "reference"]
    return ["cudnn", "flex"] + fastna_names


def _make_fn(name, p, q, k, v):
    if name == "cudnn":
        return _cudnn_fn(p, q, k, v)
    if name == "flex":
        return _flex_fn(p, q, k, v)
    if name == "sdpa":
        return _sdpa_fn(p, q, k, v)
    return _fastna_fn(name, p, q, k, v)


# ----------------------------------------------------------------------------- timing

def _step(fn, inputs, bwd: bool):
    if not bwd:
        return lambda: fn(*inputs)
    state = {}

    def run():
        out = fn(*inputs)
        if "g" not in state:
            state["g"] = torch.randn_like(out)
        out.backward(state["g"])
        for t in inputs:
            t.grad = None
    return run


def _time_cuda(run, warmup, rep) -> float:
    try:
        from triton.testing import do_bench
        return float(do_bench(run, warmup=warmup, rep=rep, return_mode="median"))
    except ImportError:
        pass
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    times = []
    deadline = time.perf_counter() + rep / 1e3
    while len(times) < 5 or time.perf_counter() < deadline:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        run()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
        if len(times) >= 1000:
            break
    return statistics.median(times)


def _time_cpu(run, warmup, rep) -> float:
    times = []  # profile() already made the warm-up call
    deadline = time.perf_counter() + rep / 1e3
    while len(times) < 2 or (time.perf_counter() < deadline and len(times) < 100):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _peak_bytes(run, device) -> Optional[int]:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


# ----------------------------------------------------------------------------- progress

class _PlainBar:
    """Minimal progress bar on stderr when tqdm is not installed."""

    def __init__(self, total, enabled=True, stream=None):
        self.total, self.n, self.enabled = total, 0, enabled
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.desc = ""

    def set_description(self, desc):
        self.desc = desc
        self._draw()

    def update(self, n=1):
        self.n += n
        self._draw()

    def _draw(self):
        if not self.enabled:
            return
        width = 24
        filled = int(width * self.n / max(self.total, 1))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.n}/{self.total} "
                          f"{time.perf_counter() - self.t0:5.1f}s {self.desc[:48]:<48}")
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _progress(total, enabled):
    try:
        from tqdm import tqdm
        return tqdm(total=total, disable=not enabled, file=sys.stderr, leave=False,
                    dynamic_ncols=True)
    except ImportError:
        return _PlainBar(total, enabled)


# ----------------------------------------------------------------------------- profiling

def profile(problems: Sequence[Problem], contenders: Sequence[str], modes=("fwd", "fwd+bwd"),
            device=None, warmup: int = 25, rep: int = 100, progress: bool = True,
            seed: int = 0) -> List[Dict]:
    """Run every (problem, contender, mode); returns one dict per run (see main's --json)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    baseline = "cudnn" if "cudnn" in contenders else ("sdpa" if "sdpa" in contenders else None)
    rows = []
    bar = _progress(len(problems) * len(contenders) * len(modes), progress)
    try:
        for p in problems:
            dtype = getattr(torch, p.dtype)
            gen = torch.Generator(device="cpu").manual_seed(seed)
            shape = (p.batch, *p.shape, p.heads, p.dim)
            base = [torch.randn(shape, generator=gen, dtype=torch.float32).to(device, dtype)
                    for _ in range(3)]
            pflops = {m: problem_flops(p, m) for m in modes}
            for mode in modes:
                bwd = mode == "fwd+bwd"
                inputs = [t.detach().requires_grad_(bwd) for t in base]
                for name in contenders:
                    bar.set_description(f"{p.name} {mode} {name}")
                    row = dict(problem=p.name, contender=name, mode=mode, ms=None,
                               flop_bound=p.flop_bound)
                    try:
                        fn = _make_fn(name, p, *inputs)
                        run = _step(fn, inputs, bwd)
                        run()  # compile / first call outside the timing
                        row["ms"] = (_time_cuda if cuda else _time_cpu)(run, warmup, rep)
                        peak = _peak_bytes(run, device)
                        row["peak_mib"] = None if peak is None else peak / 2**20
                        row["tflops"] = pflops[mode] / (row["ms"] * 1e-3) / 1e12
                    except Skip as e:
                        row["skipped"] = str(e)
                    except Exception as e:  # report, don't hide: the table shows the reason
                        row["error"] = f"{type(e).__name__}: {e}"[:300]
                    finally:
                        if cuda:
                            torch.cuda.empty_cache()
                    rows.append(row)
                    bar.update(1)
                base_ms = next((r["ms"] for r in rows if r["problem"] == p.name and
                                r["mode"] == mode and r["contender"] == baseline), None)
                for r in rows:
                    if r["problem"] == p.name and r["mode"] == mode and r["ms"]:
                        r["baseline"] = baseline
                        r["speedup"] = base_ms / r["ms"] if base_ms else None
                        r["pct_flop_bound"] = (100.0 * r["speedup"] / p.flop_bound
                                               if r["speedup"] else None)
    finally:
        bar.close()
    return rows


def _fmt(x, spec):
    return "—" if x is None else format(x, spec)


def format_table(rows: List[Dict], problems: Sequence[Problem]) -> str:
    lines = []
    for p in problems:
        lines.append(f"\n{p.describe()}  (FLOP bound {p.flop_bound:.1f}x)")
        head = ["mode", "contender", "time ms", "speedup", "% FLOP bound", "TFLOP/s", "peak MiB"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in rows:
            if r["problem"] != p.name:
                continue
            if r.get("ms") is None:
                why = r.get("skipped") or r.get("error") or "?"
                tag = "skipped" if "skipped" in r else "error"
                lines.append(f"| {r['mode']} | {r['contender']} | {tag}: {why} | | | | |")
                continue
            sp = r.get("speedup")
            lines.append(
                f"| {r['mode']} | {r['contender']} | {r['ms']:.4f} | "
                f"{_fmt(sp, '.2f') + 'x' if sp else '—'} | {_fmt(r.get('pct_flop_bound'), '.1f')} | "
                f"{_fmt(r.get('tflops'), '.3g')} | {_fmt(r.get('peak_mib'), '.1f')} |")
    return "\n".join(lines)


def plot(rows: List[Dict], path: str) -> Optional[str]:
    """Bar chart of time (log scale) per problem, contender and mode; returns an error or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed; no plot written"
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    probs = list(dict.fromkeys(r["problem"] for r in rows))
    names = list(dict.fromkeys(r["contender"] for r in rows))
    fig, axes = plt.subplots(1, len(modes), figsize=(max(6, 1.6 * len(probs) * len(modes)), 4.5),
                             squeeze=False)
    width = 0.8 / max(len(names), 1)
    for ax, mode in zip(axes[0], modes):
        for j, n in enumerate(names):
            ys = []
            for pr in probs:
                r = next((r for r in rows if r["problem"] == pr and r["mode"] == mode
                          and r["contender"] == n), None)
                ys.append(r["ms"] if r and r.get("ms") else 0.0)
            ax.bar([i + j * width for i in range(len(probs))], ys, width, label=n)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(probs))])
        ax.set_xticklabels(probs, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("time (ms, lower is better)")
        ax.set_title(mode)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


# ----------------------------------------------------------------------------- CLI

def _parser():
    ap = argparse.ArgumentParser(
        prog="python -m fastna profile",
        description="Time a neighborhood-attention problem on every available backend, cuDNN "
                    "SDPA (dense) and FlexAttention (NA mask), forward and forward+backward.")
    ap.add_argument("--preset", help=f"anchor case(s), comma-separated, or 'all': "
                                     f"{', '.join(preset_names())}")
    ap.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    ap.add_argument("--shape", help="spatial shape, e.g. 56x56 (comma list = sweep)")
    ap.add_argument("--kernel", help="window size, e.g. 7 or 7x7 (comma list = sweep)")
    ap.add_argument("--stride", help="e.g. 1 or 2x2")
    ap.add_argument("--dilation", help="e.g. 1 or 4x4 (comma list = sweep)")
    ap.add_argument("--causal", help="per-axis causal flags, e.g. 1x0")
    ap.add_argument("--heads", type=int)
    ap.add_argument("--dim", type=int, help="head dim")
    ap.add_argument("--batch", help="batch size (comma list = sweep)")
    ap.add_argument("--dtype", help="bf16 (GPU default), fp16, fp32 (CPU default)")
    ap.add_argument("--backends", default="all",
                    help="comma list among fastna backends, cudnn, flex, sdpa; default: all "
                         "available (GPU) or sdpa,reference (CPU)")
    ap.add_argument("--mode", default="both", choices=sorted(MODES),
                    help="fwd, fwd+bwd (= fwdbwd, bwd) or both (default)")
    ap.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N or cpu")
    ap.add_argument("--warmup", type=int, default=25, help="warm-up ms (GPU)")
    ap.add_argument("--rep", type=int, default=100, help="measurement ms per timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    ap.add_argument("--plot", metavar="OUT.png", help="write a bar chart (needs matplotlib)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv=None) -> int:
    ap = _parser()
    a = ap.parse_args(argv)
    if a.list_presets:
        for p in PRESETS:
            print(f"{p.describe()}  (FLOP bound {p.flop_bound:.1f})")
        return 0
    if a.preset and a.shape:
        ap.error("--preset and --shape are exclusive (a preset's fields can be overridden with "
                 "--kernel, --batch, ...)")
    if a.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(a.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA device is available")
    cuda = device.type == "cuda"
    try:
        problems = build_problems(a, cuda)
        names = contender_names(a.backends, cuda)
    except ValueError as e:
        ap.error(str(e))
    notes = []
    if not cuda:
        notes.append("no CUDA device: running the reference backend on the CPU (dense SDPA as "
                     "the baseline); timings say nothing about the GPU kernels"
                     if torch.cuda.is_available() is False else
                     "running on the CPU (--device cpu)")
        big = [p.name for p in problems if 4.0 * p.batch * p.heads * p.dim * p.tokens * p.window
               > 2e10]
        if big:
            notes.append(f"large for the CPU reference (expect minutes): {', '.join(big)}")
        if not a.json:
            for n in notes:
                print("note: " + n, file=sys.stderr)
    baseline = "cudnn" if "cudnn" in names else ("sdpa" if "sdpa" in names else None)
    if baseline is None:
        notes.append("no dense baseline among the contenders: no speedups")
    from . import __version__
    rows = profile(problems, names, MODES[a.mode], device=device, warmup=a.warmup, rep=a.rep,
                   progress=not a.no_progress, seed=a.seed)
    info = dict(
        device=torch.cuda.get_device_name(device) if cuda else "cpu",
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        torch=torch.__version__, fastna=__version__, baseline=baseline, notes=notes,
        problems=[dict(name=p.name, shape=list(p.shape), kernel=list(p.kernel),
                       stride=list(p.stride), dilation=list(p.dilation), causal=list(p.causal),
                       batch=p.batch, heads=p.heads, dim=p.dim, dtype=p.dtype,
                       flop_bound=p.flop_bound, attended_pairs=exact_attended_pairs(p))
                  for p in problems],
        rows=rows)
    if a.plot:
        err = plot(rows, a.plot)
        if err:
            notes.append(err)
            print("note: " + err, file=sys.stderr)
    if a.json:
        print(json.dumps(info, indent=1, default=lambda x: None if isinstance(x, float) and
                         math.isnan(x) else str(x)))
    else:
        print(f"device: {info['device']}  torch {info['torch']}  fastna {info['fastna']}  "
              f"baseline: {baseline or 'none'}")
        print(format_table(rows, problems))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
