"""Context parallelism (fastna.distributed): halo vs ulysses on one problem sharded along one
spatial axis, at the world size it is launched with.

    torchrun --nproc-per-node 8 benchmarks/bench_context_parallel.py [--preset hunyuan]
        [--shard-axis 0] [--modes halo,ulysses] [--iters 10] [--warmup 3] [--backend NAME]
        [--json out.json]
    torchrun --nproc-per-node 2 benchmarks/bench_context_parallel.py --small      # CPU / gloo
    python benchmarks/bench_context_parallel.py --model [--ranks 2,4,8]           # no GPU needed

Per mode: step time forward and fwd+bwd (max over ranks of the median), bytes moved per rank
(predicted from the plan, and counted by fastna.distributed.count_traffic: the busiest rank),
and the scaling efficiency t1 / (P * tP) against fastna.neighborhood_attention of the whole
problem on one device (rank 0; backend as given). For halo also the pieces: the exchange alone
and the local compute alone (rows already there), so the overlap can be judged.

--model prints, without GPUs or a process group, the *predicted* bytes per rank and halo
widths for 2/4/8 ranks along every spatial axis (fastna.distributed.axis_plan; no timing).

A benchmark, not a test. Without torchrun it runs as a group of one. On CUDA halo mode computes
with the "embedded" slab implementation (fastna's kernels on ordinary problems that reproduce
the global windows; --halo-backend reference for the pure-PyTorch one, slow on hunyuan: try
--iters 3 --warmup 1); --model's "embedded query rows / slab rows" is the query positions it
computes per row it keeps. CUDA tensors use NCCL, CPU tensors gloo; --small is a small fp32
problem for a CPU smoke run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist

_HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import fastna
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(_HERE, "..", "python"))
    import fastna
import fastna.distributed as fd  # noqa: E402
from fastna import _args, presets  # noqa: E402
from fastna.distributed import _comm, _halo, _halo_whole, _slab  # noqa: E402
from fastna.distributed._plan import key_bounds  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SMALL = dict(shape=(8, 12, 16), kernel=(5, 7, 7), stride=(1, 1, 1), dilation=(1, 1, 1),
             causal=(False, False, False), batch=1, heads=4, heads_kv=4, dim=16, dim_v=16,
             dtype="float32", name="small")


def problem(args) -> dict:
    if args.small:
        return dict(SMALL)
    p = presets.get_preset(args.preset)
    return dict(name=p.name, shape=p.shape, kernel=p.kernel, stride=p.stride,
                dilation=p.dilation, causal=p.causal, batch=p.batch, heads=p.heads,
                heads_kv=p.heads, dim=p.dim, dim_v=p.dim, dtype=p.dtype)


def _plan(prob, axis, lengths):
    return fd.axis_plan(tuple(lengths), prob["kernel"][axis], prob["stride"][axis],
                        prob["dilation"][axis], prob["causal"][axis])


def predicted_bytes(prob, axis, lengths):
    """Per rank {mode: {"fwd" / "bwd": (bytes sent, bytes received)}}.

    halo: the rows of k and v each rank receives (and sends) in the forward, the same rows'
    dK / dV back in the backward. ulysses: q, k, v to heads and out back in the forward; dout to
    heads and dq, dk, dv back in the backward; each all-to-all keeps 1/P of a slab at home.
    """
    elem = torch.finfo(DTYPES[prob["dtype"]]).bits // 8
    others = math.prod(x for a, x in enumerate(prob["shape"]) if a != axis)
    row = prob["batch"] * others * elem        # bytes of one shard-axis row per head per channel
    kv_row = row * prob["heads_kv"] * (prob["dim"] + prob["dim_v"])
    plan = _plan(prob, axis, lengths)
    P, L = len(lengths), sum(lengths)
    out = []
    for r in range(P):
        recv = len(plan.halo(r)) * kv_row
        sent = sum(len(plan.sends(r, dst)) for dst in range(P)) * kv_row
        n = lengths[r]

        def to_heads(heads, dim):      # (sent, received) of one space -> heads all-to-all
            return (n * (P - 1) * heads // P * dim * row, (L - n) * heads // P * dim * row)

        def add(*pairs):
            return tuple(sum(p[i] for p in pairs) for i in (0, 1))

        q, o = to_heads(prob["heads"], prob["dim"]), to_heads(prob["heads"], prob["dim_v"])
        kv = add(to_heads(prob["heads_kv"], prob["dim"]), to_heads(prob["heads_kv"], prob["dim_v"]))
        back = (o[1], o[0])                         # heads -> space mirrors space -> heads
        uly_fwd = add(q, kv, back)
        uly_bwd = add(o, (q[1], q[0]), (kv[1], kv[0]))   # dout to heads; dq, dk, dv back
        out.append({"halo": {"fwd": (sent, recv), "bwd": (recv, sent)},
                    "ulysses": {"fwd": uly_fwd, "bwd": uly_bwd}})
    return out


def own_share(prob, axis, lengths, r) -> float:
    """Share of rank r's query-key pairs (along the shard axis) whose key is its own row: the
    compute halo mode runs while the transfers fly."""
    L, K, s, d, c = (sum(lengths), prob["kernel"][axis], prob["stride"][axis],
                     prob["dilation"][axis], prob["causal"][axis])
    s0 = sum(lengths[:r])
    s1 = s0 + lengths[r]
    own = total = 0
    for i in range(s0, s1):
        lo, hi = key_bounds(L, K, s, d, c, i)
        rows = range(lo, hi, d)
        total += len(rows)
        own += sum(1 for j in rows if s0 <= j < s1)
    return own / total if total else 1.0


def level_profile(prob, axis, lengths, r):
    """Rank r's halo timeline inputs: [(share of its compute, bytes sent, bytes received)] for
    its own rows (level 0, no bytes) and each level of peers (distance 1, 2, ...), as
    fastna.distributed's halo mode orders them."""
    L, K, s, d, c = (sum(lengths), prob["kernel"][axis], prob["stride"][axis],
                     prob["dilation"][axis], prob["causal"][axis])
    plan = _plan(prob, axis, lengths)
    elem = torch.finfo(DTYPES[prob["dtype"]]).bits // 8
    others = math.prod(x for a, x in enumerate(prob["shape"]) if a != axis)
    kv_row = prob["batch"] * others * elem * prob["heads_kv"] * (prob["dim"] + prob["dim_v"])
    owner = [p for p, n in enumerate(lengths) for _ in range(n)]
    pairs = {}
    for i in range(*plan.owned(r)):
        lo, hi = key_bounds(L, K, s, d, c, i)
        for j in range(lo, hi, d):
            level = abs(owner[j] - r)
            pairs[level] = pairs.get(level, 0) + 1
    total = sum(pairs.values()) or 1
    out = [(pairs.get(0, 0) / total, 0, 0)]
    for level in range(1, len(lengths)):
        peers = [p for p in (r - level, r + level) if 0 <= p < len(lengths)]
        sent = sum(len(plan.sends(r, p)) for p in peers) * kv_row
        recv = sum(len(plan.sends(p, r)) for p in peers) * kv_row
        if sent or recv or pairs.get(level):
            out.append((pairs.get(level, 0) / total, sent, recv))
    return out


def embedded_rows(prob, axis, lengths, r) -> int:
    """Shard-axis rows of the ordinary problems the "embedded" slab implementation runs on rank r
    (fastna.distributed._halo_whole.calls): its query positions per slab row is their sum /
    lengths[r] (the rest are computed and dropped)."""
    shape = list(prob["shape"])
    shape[axis] = sum(lengths)
    meta = [torch.empty(prob["batch"], *shape, h, dim, device="meta")
            for h, dim in ((prob["heads"], prob["dim"]), (prob["heads_kv"], prob["dim"]),
                           (prob["heads_kv"], prob["dim_v"]))]
    params = _args.normalize(*meta, **_kwargs(prob))
    impl = _slab.implementation("embedded", torch.device("cpu"))
    setup = _halo.HaloSetup(params, axis, _plan(prob, axis, lengths), None, impl)
    return sum(_halo_whole.row_count(seg, setup) for seg in _halo_whole.calls(setup, r))


def predicted_step(prob, axis, lengths, mode, t1_fwd, t1_bwd, gbps):
    """(fwd ms, fwd+bwd ms) of the slowest rank. Compute is split by queries (halo) or heads
    (ulysses) at the single-device speed; one transfer at a time per rank at gbps per direction.
    halo: forward, its own rows' part first, then level by level as the level arrives (levels
    transfer nearest first); backward, level by level farthest first, each level's gradients
    sent when computed, its own rows' part last. ulysses: transfers and compute in sequence."""
    P, L = len(lengths), sum(lengths)
    worst = [0.0, 0.0]
    for r in range(P):
        if mode == "ulysses":
            b = predicted_bytes(prob, axis, lengths)[r]["ulysses"]
            fwd = t1_fwd / P + max(b["fwd"]) / (gbps * 1e6)
            bwd = t1_bwd / P + max(b["bwd"]) / (gbps * 1e6)
        else:
            prof = level_profile(prob, axis, lengths, r)
            frac = lengths[r] / L
            arrive = done = 0.0
            for i, (share, sent, recv) in enumerate(prof):
                if i:      # level i's rows are there after the levels before it and itself
                    arrive += max(sent, recv) / (gbps * 1e6)
                done = max(done, arrive) + share * t1_fwd * frac
            fwd = done
            done = sent_end = 0.0
            for share, sent, recv in reversed(prof[1:]):
                done += share * t1_bwd * frac
                sent_end = max(sent_end, done) + max(sent, recv) / (gbps * 1e6)
            done += prof[0][0] * t1_bwd * frac
            bwd = max(done, sent_end)
        worst[0] = max(worst[0], fwd)
        worst[1] = max(worst[1], fwd + bwd)
    return worst[0], worst[1]


def predicted_embedded_step(prob, axis, lengths, t1_fwd, t1_fwdbwd, gbps):
    """(fwd ms, fwd+bwd ms) of the slowest rank on the "embedded" slab implementation: its
    ordinary problems' rows (embedded_rows) at the single-device speed per row, after its
    transfers (no overlap counted: conservative where an interior call runs first)."""
    L = sum(lengths)
    b = predicted_bytes(prob, axis, lengths)
    worst = [0.0, 0.0]
    for r in range(len(lengths)):
        share = embedded_rows(prob, axis, lengths, r) / L
        fwd = share * t1_fwd + max(b[r]["halo"]["fwd"]) / (gbps * 1e6)
        both = share * t1_fwdbwd + sum(max(b[r]["halo"][p]) for p in ("fwd", "bwd")) / (gbps * 1e6)
        worst = [max(worst[0], fwd), max(worst[1], both)]
    return worst[0], worst[1]


def model(args) -> None:
    prob = problem(args)
    ranks = [int(x) for x in args.ranks.split(",")]
    t1 = [float(x) for x in args.compute_ms.split(",")] if args.compute_ms else None
    print(f"PREDICTION (fastna.distributed.axis_plan; no measurement): {prob['name']} "
          f"{'x'.join(map(str, prob['shape']))}, window {'x'.join(map(str, prob['kernel']))}, "
          f"{prob['heads']} heads, D {prob['dim']}, {prob['dtype']}, batch {prob['batch']}. "
          f"MB: 10^6 bytes sent + received by the busiest rank.")
    if t1:
        print(f"Efficiency t1 / (P tP) with t1 = {t1[0]} ms fwd, {t1[1]} ms fwd+bwd on one "
              f"device, compute split evenly at that speed, {args.link_gbps} GB/s per direction, "
              f"halo overlapping each level's transfer with the compute before it (see "
              f"predicted_step), ulysses overlapping none.")
    print()
    head = ("| shard axis | ranks | slab rows | halo rows received (max) | "
            "own-rows compute (min) | embedded query rows / slab rows (max) | "
            "halo fwd MB | ulysses fwd MB | halo fwd+bwd MB | ulysses fwd+bwd MB |")
    if t1:
        head += (" halo eff. fwd / fwd+bwd | embedded halo eff. fwd / fwd+bwd | "
                 "ulysses eff. fwd / fwd+bwd |")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for axis in range(len(prob["shape"])):
        for P in ranks:
            lengths = fd.even_lengths(prob["shape"][axis], P)
            plan = _plan(prob, axis, lengths)
            b = predicted_bytes(prob, axis, lengths)
            halo_rows = max(len(plan.halo(r)) for r in range(P))
            share = min(own_share(prob, axis, lengths, r) for r in range(P))
            waste = max(embedded_rows(prob, axis, lengths, r) / lengths[r]
                        for r in range(P) if lengths[r])

            def mb(mode, passes):
                return max(sum(sum(x[mode][p]) for p in passes) for x in b) / 1e6

            slab = f"{min(lengths)}-{max(lengths)}" if min(lengths) != max(lengths) \
                else str(lengths[0])
            line = (f"| {axis} | {P} | {slab} | {halo_rows} | {100 * share:.0f}% | "
                    f"{waste:.2f} | "
                    f"{mb('halo', ['fwd']):.0f} | {mb('ulysses', ['fwd']):.0f} | "
                    f"{mb('halo', ['fwd', 'bwd']):.0f} | {mb('ulysses', ['fwd', 'bwd']):.0f} |")
            if t1:
                for mode in ("halo", "embedded", "ulysses"):
                    if mode == "ulysses" and prob["heads"] % P:
                        line += " - |"
                        continue
                    if mode == "embedded":
                        f, fb = predicted_embedded_step(prob, axis, lengths, t1[0], t1[1],
                                                        args.link_gbps)
                    else:
                        f, fb = predicted_step(prob, axis, lengths, mode, t1[0],
                                               t1[1] - t1[0], args.link_gbps)
                    line += f" {100 * t1[0] / (P * f):.0f}% / {100 * t1[1] / (P * fb):.0f}% |"
            print(line)


# ---------------------------------------------------------------------------- measuring

def _init():
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if cuda else "gloo"
    if "RANK" in os.environ:
        dist.init_process_group(backend)
    else:
        store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
        dist.init_process_group(backend, store=store, rank=0, world_size=1)
    return torch.device("cuda") if cuda else torch.device("cpu")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, iters, warmup, device) -> float:
    """Median ms of fn over iters (ranks aligned by a barrier before each), max over ranks."""
    times = []
    for i in range(warmup + iters):
        dist.barrier()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    mine = torch.tensor([statistics.median(times)], dtype=torch.float64, device=device)
    dist.all_reduce(mine, op=dist.ReduceOp.MAX)
    return mine.item()


def _tensors(prob, device, generator_seed=0):
    g = torch.Generator(device=device).manual_seed(generator_seed)
    dtype = DTYPES[prob["dtype"]]
    B, S = prob["batch"], prob["shape"]

    def rnd(h, d):
        return torch.randn(B, *S, h, d, generator=g, device=device, dtype=dtype)

    return (rnd(prob["heads"], prob["dim"]), rnd(prob["heads_kv"], prob["dim"]),
            rnd(prob["heads_kv"], prob["dim_v"]), rnd(prob["heads"], prob["dim_v"]))


def _kwargs(prob):
    return dict(kernel_size=prob["kernel"], stride=prob["stride"], dilation=prob["dilation"],
                is_causal=prob["causal"])


def _step(fn, slabs, dout, backward: bool):
    if not backward:
        with torch.no_grad():
            fn(*slabs)
        return
    leaves = [t.detach().requires_grad_() for t in slabs]
    fn(*leaves).backward(dout)


def _halo_pieces(q, k, v, prob, axis, lengths, backend, iters, warmup, device):
    """(exchange alone, local compute alone) ms of the halo forward."""
    grp = _comm.resolve_group(None)
    full = list(q.shape)
    full[1 + axis] = sum(lengths)
    meta = torch.empty(full, device="meta", dtype=q.dtype)
    params = _args.normalize(meta, meta.new_empty((*full[:-2], k.shape[-2], k.shape[-1])),
                             meta.new_empty((*full[:-2], v.shape[-2], v.shape[-1])),
                             **_kwargs(prob))
    impl = _slab.implementation(backend, q.device)
    setup = _halo.HaloSetup(params, axis, _plan(prob, axis, lengths), grp, impl)
    schedule = _halo_whole if impl.whole is not None else _halo

    def exchange():
        return _halo.exchange(k, v, setup)

    krows, vrows = exchange()

    def compute():
        with torch.no_grad():
            schedule.compute(q, krows, vrows, setup)

    return (_timed(exchange, iters, warmup, device), _timed(compute, iters, warmup, device))


def run(args) -> None:
    device = _init()
    me, P = dist.get_rank(), dist.get_world_size()
    prob = problem(args)
    axis = args.shard_axis
    lengths = fd.even_lengths(prob["shape"][axis], P)
    q, k, v, dout = _tensors(prob, device)
    kw = _kwargs(prob)
    results = {"problem": prob, "world": P, "shard_axis": axis, "lengths": lengths,
               "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "modes": {}}
    # world size 1: the whole problem on one device (rank 0 only; the others wait)
    base = {}
    for backward in (False, True):
        if me == 0:
            def single():
                _step(lambda a, b, c: fastna.neighborhood_attention(a, b, c, **kw,
                                                                     backend=args.backend),
                      (q, k, v), dout, backward)
            times = []
            for i in range(args.warmup + args.iters):
                _sync(device)
                t0 = time.perf_counter()
                single()
                _sync(device)
                if i >= args.warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
            base["fwd+bwd" if backward else "fwd"] = statistics.median(times)
        dist.barrier()
    results["single_device_ms"] = base
    # copies, so that the full tensors' memory goes
    slabs = [fd.shard(t, axis, lengths=lengths).clone() for t in (q, k, v, dout)]
    q = k = v = dout = None
    predicted = predicted_bytes(prob, axis, lengths)
    for mode in args.modes.split(","):
        if mode == "ulysses" and (prob["heads"] % P or prob["heads_kv"] % P):
            results["modes"][mode] = {"skipped": f"{prob['heads']} heads not divisible by {P}"}
            continue
        backend = args.backend if mode == "ulysses" else args.halo_backend

        def attn(a, b, c, mode=mode, backend=backend):
            return fd.neighborhood_attention(a, b, c, **kw, shard_axis=axis, mode=mode,
                                             backend=backend)

        entry = {}
        for backward in (False, True):
            name = "fwd+bwd" if backward else "fwd"
            with fd.count_traffic() as traffic:
                _step(attn, slabs[:3], slabs[3], backward)
            moved = torch.tensor([float(sum(traffic.by_kind.get(kind, (0, 0))[i]
                                            for kind in traffic.by_kind if kind != "metadata"
                                            for i in (0, 1)))], device=device,
                                 dtype=torch.float64)
            dist.all_reduce(moved, op=dist.ReduceOp.MAX)
            ms = _timed(lambda: _step(attn, slabs[:3], slabs[3], backward), args.iters,
                        args.warmup, device)
            single = base.get(name)
            entry[name] = {
                "ms": ms,
                "bytes_counted": moved.item(),
                "bytes_predicted": max(sum(sum(p[mode][x]) for x in
                                           (("fwd", "bwd") if backward else ("fwd",)))
                                       for p in predicted),
                "efficiency": None if single is None else single / (P * ms)}
        if mode == "halo":
            ex, comp = _halo_pieces(*slabs[:3], prob, axis, lengths, args.halo_backend,
                                    args.iters, args.warmup, device)
            entry["pieces_fwd_ms"] = {"exchange": ex, "compute": comp}
        results["modes"][mode] = entry
    if me == 0:
        _report(results, args)
    dist.destroy_process_group()


def _report(r, args) -> None:
    prob = r["problem"]
    print(f"{prob['name']} {'x'.join(map(str, prob['shape']))} window "
          f"{'x'.join(map(str, prob['kernel']))}, {prob['heads']} heads, D {prob['dim']}, "
          f"{prob['dtype']}; {r['world']} ranks on {r['device']}, shard axis {r['shard_axis']} "
          f"(slabs {r['lengths']})")
    print(f"one device: fwd {r['single_device_ms']['fwd']:.2f} ms, fwd+bwd "
          f"{r['single_device_ms']['fwd+bwd']:.2f} ms (fastna.neighborhood_attention, backend "
          f"{args.backend or 'auto'})\n")
    print("| mode | pass | step ms | efficiency | MB/rank counted | MB/rank predicted |")
    print("|---|---|---|---|---|---|")
    for mode, entry in r["modes"].items():
        if "skipped" in entry:
            print(f"| {mode} | - | skipped: {entry['skipped']} | | | |")
            continue
        for name in ("fwd", "fwd+bwd"):
            e = entry[name]
            print(f"| {mode} | {name} | {e['ms']:.2f} | {100 * e['efficiency']:.0f}% | "
                  f"{e['bytes_counted'] / 1e6:.2f} | {e['bytes_predicted'] / 1e6:.2f} |")
        if "pieces_fwd_ms" in entry:
            p = entry["pieces_fwd_ms"]
            print(f"| {mode} | fwd pieces | exchange {p['exchange']:.2f}, compute "
                  f"{p['compute']:.2f} | | | |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="hunyuan", help="a fastna.presets problem")
    ap.add_argument("--small", action="store_true", help="a small fp32 problem (CPU smoke run)")
    ap.add_argument("--shard-axis", type=int, default=0)
    ap.add_argument("--modes", default="halo,ulysses")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--backend", default=None,
                    help="fastna backend of the single-device baseline and of ulysses")
    ap.add_argument("--halo-backend", default=None,
                    help="offset-slab implementation of halo mode (fd.slab_backends())")
    ap.add_argument("--json", default=None, help="write the results here (rank 0)")
    ap.add_argument("--model", action="store_true",
                    help="print the predicted bytes per rank and halo widths; no run")
    ap.add_argument("--ranks", default="2,4,8", help="world sizes of --model")
    ap.add_argument("--compute-ms", default=None,
                    help="--model: one device's fwd,fwd+bwd ms, for predicted efficiencies "
                         "(hunyuan on an H100, hopper backend, docs/PERFORMANCE.md sections 3-4: "
                         "45.51,187.8)")
    ap.add_argument("--link-gbps", type=float, default=450.0,
                    help="--model: GB/s per direction between two GPUs (NVLink 4: 450)")
    args = ap.parse_args(argv)
    if args.model:
        model(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
