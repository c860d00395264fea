"""The child side of tests/test_distributed_cpu.py: one gloo process group per launch, many
cases inside it. Each rank rebuilds the full random tensors from the case's seed, runs
fastna.distributed on its slab and compares forward and gradients with the single-process
fastna.neighborhood_attention of the full tensors (float64).

A rank never raises mid-protocol (the others would wait forever): failures are collected and
written to `<out_dir>/rank<r>.txt`, which the parent reads.
"""
from __future__ import annotations

import os
import time
import traceback

import torch
import torch.distributed as dist

TOL = 1e-10


def launch(world: int, store_path: str, out_dir: str, cases, backend: str = "gloo"):
    """Start `world` processes running the cases (backend "nccl": one GPU each); returns the
    started context."""
    import torch.multiprocessing as mp
    return mp.start_processes(_main, args=(world, store_path, out_dir, cases, backend),
                              nprocs=world, join=False, start_method="spawn")


def run_group(world: int, cases, tmp_path, backend: str = "gloo", timeout: float = 240) -> None:
    """Run the cases in a fresh process group of `world` ranks; fail with every rank's
    failures (or when the group does not finish in `timeout` seconds)."""
    import pytest

    out_dir = tmp_path / f"world{world}"
    out_dir.mkdir()
    ctx = launch(world, str(tmp_path / f"store{world}"), str(out_dir), cases, backend)
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"world size {world}: the process group did not finish in "
                            f"{timeout} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    failures = []
    for r in range(world):
        path = out_dir / f"rank{r}.txt"
        assert path.exists(), f"rank {r} wrote no result"
        if path.read_text():
            failures.append(path.read_text())
    assert not failures, "\n".join(failures)


def _main(rank: int, world: int, store_path: str, out_dir: str, cases, backend: str) -> None:
    torch.set_num_threads(1)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    store = dist.FileStore(store_path, world)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world)
    failures = []
    from fastna.distributed import _halo_whole
    default_slack = _halo_whole.OVERLAP_SLACK
    try:
        for case in cases:
            _halo_whole.OVERLAP_SLACK = case.get("overlap_slack", default_slack)
            try:
                failures += [f"{case['name']}: {msg}" for msg in _RUN[case["kind"]](case)]
            except Exception:   # a bug in a case that every rank hits the same way
                failures.append(f"{case['name']}: raised\n{traceback.format_exc()}")
            finally:
                _halo_whole.OVERLAP_SLACK = default_slack
        dist.barrier()
    finally:
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
            f.write("\n".join(failures))
        # Leave only when every rank is done with gloo: a rank tearing its connections down
        # while a peer still reads them aborts that peer.
        store.add("finished", 1)
        while store.add("finished", 0) < world:
            time.sleep(0.01)
        dist.destroy_process_group()
    # Skip the interpreter's teardown: torch 2.13's gloo occasionally aborts there ("terminate
    # called without an active exception") after a clean destroy_process_group; the results
    # are on disk already.
    os._exit(0)


def _full(case):
    """The case's full q, k, v, dout: float64 on the CPU, then to its device and dtype."""
    g = torch.Generator().manual_seed(case["seed"])
    B, shape, H, Hkv, D, Dv = (case[k] for k in ("batch", "shape", "heads", "heads_kv", "dim",
                                                   "dim_v"))
    dtype = getattr(torch, case.get("dtype", "float64"))
    device = f"cuda:{dist.get_rank()}" if case.get("device") == "cuda" else "cpu"
    return tuple(torch.randn(B, *shape, h, d, generator=g, dtype=torch.float64)
                 .to(device=device, dtype=dtype)
                 for h, d in ((H, D), (Hkv, D), (Hkv, Dv), (H, Dv)))


def _err(a, b) -> float:
    return (a - b).abs().max().item() if a.numel() else 0.0


def _attention_case(case):
    import fastna
    import fastna.distributed as fd

    q, k, v, dout = _full(case)
    args = dict(kernel_size=case["kernel"], stride=case["stride"], dilation=case["dilation"],
                is_causal=case["causal"])
    # the oracle in float64 from the same (rounded) inputs
    leaves = [t.double().requires_grad_() for t in (q, k, v)]
    ref = fastna.neighborhood_attention(*leaves, **args, backend="reference")
    ref_grads = torch.autograd.grad(ref, leaves, dout.double())
    tol = case.get("tol", TOL)

    axis, lengths = case["shard_axis"], case["lengths"]
    me = dist.get_rank()
    dim = 1 + axis
    start, n = sum(lengths[:me]), lengths[me]
    slabs = [fd.shard(t, axis, lengths=lengths).clone().requires_grad_() for t in (q, k, v)]
    out = fd.neighborhood_attention(*slabs, **args, shard_axis=axis, mode=case["mode"],
                                    backend=case.get("backend"))
    grads = torch.autograd.grad(out, slabs, dout.narrow(dim, start, n))
    problems = []
    e = _err(out.double(), ref.narrow(dim, start, n))
    if e > tol:
        problems.append(f"rank {me} forward max error {e:.3g}")
    for name, g, rg in zip("qkv", grads, ref_grads):
        e = _err(g.double(), rg.narrow(dim, start, n))
        if e > tol:
            problems.append(f"rank {me} d{name} max error {e:.3g}")
    if case.get("gather"):
        whole = fd.gather(out.detach(), axis)
        e = _err(whole.double(), ref.detach())
        if e > tol:
            problems.append(f"rank {me} gather max error {e:.3g}")
    return problems


def _expect_error(fn, exc, text):
    try:
        fn()
    except exc as e:
        if text not in str(e):
            return [f"rank {dist.get_rank()}: expected {text!r} in the message, got {e}"]
        return []
    except Exception as e:   # noqa: BLE001 - reported, not raised
        return [f"rank {dist.get_rank()}: expected {exc.__name__}, got {type(e).__name__}: {e}"]
    return [f"rank {dist.get_rank()}: expected {exc.__name__} ({text!r}), nothing raised"]


def _errors_case(case):
    import fastna.distributed as fd

    me, world = dist.get_rank(), dist.get_world_size()
    q = torch.randn(1, 3, 5, 2 * world + 1, 4, dtype=torch.float64)
    problems = []

    def call(**kw):
        base = dict(kernel_size=3, shard_axis=0)
        base.update(kw)
        tensors = base.pop("tensors", (q, q, q))
        return fd.neighborhood_attention(*tensors, **base)

    # heads not divisible by the group size
    problems += _expect_error(lambda: call(mode="ulysses"), ValueError, "divisible by")
    # shard axis out of range (every rank)
    problems += _expect_error(lambda: call(shard_axis=2), ValueError, "shard_axis must be")
    # an argument that differs between ranks
    problems += _expect_error(lambda: call(kernel_size=3 if me else 5), ValueError,
                              "kernel_size (axis 0) differs")
    # a window wider than the global length: fastna's own message, on the global shape
    problems += _expect_error(lambda: call(kernel_size=(3 * world + 1, 3)), ValueError,
                              "kernel_size * dilation must not exceed")
    # one rank's slabs disagree: it raises its own error, the others name it
    bad_k = q.narrow(1, 0, 2) if me == world - 1 else q
    problems += _expect_error(lambda: call(tensors=(q, bad_k, q)), ValueError,
                              "rows of shard_axis" if me == world - 1 else
                              f"rank(s) [{world - 1}]")
    # one rank's key has another dtype: caught before any transfer
    odd_k = q.float() if me == 0 else q
    problems += _expect_error(lambda: call(tensors=(q, odd_k, q)),
                              TypeError if me == 0 else ValueError,
                              "does not match query dtype" if me == 0 else "rank(s) [0]")
    # halo mode has only the reference slab implementation
    problems += _expect_error(lambda: call(backend="fused"), NotImplementedError,
                              "offset-slab")
    # one rank names a halo backend that does not exist: it raises, the others name it
    problems += _expect_error(lambda: call(backend="fused" if me == 1 else None),
                              NotImplementedError if me == 1 else ValueError,
                              "offset-slab" if me == 1 else "rank(s) [1]")
    problems += _expect_error(lambda: call(mode="ring"), ValueError, "mode must be one of")
    # gather of slabs whose other dims differ
    x = torch.zeros(1, 2, 3 + (me == 0), 4)
    problems += _expect_error(lambda: fd.gather(x, 0), ValueError,
                              "extent of dim 2 (not gathered) differs")
    problems += _expect_error(lambda: fd.shard(q, 0, lengths=[1] * (world + 1)), ValueError,
                              "one per rank")
    return problems


def _gather_grad_case(case):
    import fastna.distributed as fd

    me, world = dist.get_rank(), dist.get_world_size()
    lengths = case["lengths"]
    x = torch.randn(2, lengths[me], 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, sum(lengths), 3, 4, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(case["seed"]))
    (grad,) = torch.autograd.grad((fd.gather(x, 0) * w).sum(), x)
    start = sum(lengths[:me])
    e = _err(grad, world * w.narrow(1, start, lengths[me]))
    return [f"rank {me} gather gradient max error {e:.3g}"] if e > TOL else []


def _module_case(case):
    import fastna
    import fastna.distributed as fd

    me = dist.get_rank()
    axis, lengths = case["shard_axis"], case["lengths"]
    torch.manual_seed(case["seed"])
    C = 4 * case["heads"]
    full = fastna.NeighborhoodAttention2D(dim=C, num_heads=case["heads"],
                                          kernel_size=case["kernel"], dilation=case["dilation"],
                                          is_causal=case["causal"], dtype=torch.float64)
    torch.manual_seed(case["seed"])
    sharded = fastna.NeighborhoodAttention2D(dim=C, num_heads=case["heads"],
                                             kernel_size=case["kernel"],
                                             dilation=case["dilation"], is_causal=case["causal"],
                                             dtype=torch.float64, shard_axis=axis,
                                             context_parallel_mode=case["mode"])
    x = torch.randn(2, *case["shape"], C, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(case["seed"] + 1))
    y = full(x)
    y.sum().backward()
    ys = sharded(fd.shard(x, axis, lengths=lengths))
    ys.sum().backward()
    problems = []
    e = _err(ys, fd.shard(y, axis, lengths=lengths))
    if e > TOL:
        problems.append(f"rank {me} module forward max error {e:.3g}")
    for (name, p), ps in zip(full.named_parameters(), sharded.parameters()):
        total = ps.grad.clone()
        dist.all_reduce(total)     # each rank holds its slab's share of the weight gradient
        e = _err(total, p.grad)
        if e > TOL:
            problems.append(f"rank {me} module d{name} max error {e:.3g}")
    return problems


def _traffic_case(case):
    """Halo mode moves exactly the planned rows: k and v rows in the forward, their gradients
    back in the backward, nothing else but the argument exchange."""
    import fastna.distributed as fd

    q, k, v, dout = _full(case)
    me, axis, lengths = dist.get_rank(), case["shard_axis"], case["lengths"]
    slabs = [fd.shard(t, axis, lengths=lengths).clone().requires_grad_() for t in (q, k, v)]
    with fd.count_traffic() as traffic:
        out = fd.neighborhood_attention(*slabs, case["kernel"], case["stride"], case["dilation"],
                                        case["causal"], shard_axis=axis,
                                        backend=case.get("backend"))
        out.backward(fd.shard(dout, axis, lengths=lengths))
    plan = fd.axis_plan(tuple(lengths), case["kernel"][axis], case["stride"][axis],
                        case["dilation"][axis], case["causal"][axis])
    row = (k[0].select(axis, 0).numel() + v[0].select(axis, 0).numel()) * q.shape[0] * 8
    sent = sum(len(plan.sends(me, p)) for p in range(len(lengths))) * row
    received = len(plan.halo(me)) * row
    want = {"halo kv": (sent, received), "halo dkv": (received, sent)}
    got = {kind: traffic.by_kind.get(kind, (0, 0)) for kind in want}
    extra = set(traffic.by_kind) - set(want) - {"metadata"}
    if got != want or extra:
        return [f"rank {me}: moved {traffic.by_kind}, planned {want}"]
    return []


_RUN = {"attention": _attention_case, "traffic": _traffic_case, "errors": _errors_case, "gather_grad": _gather_grad_case,
        "module": _module_case}
