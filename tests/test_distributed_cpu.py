"""fastna.distributed on the CPU: the shard-axis plan and the offset-slab reference in this
process, then real process groups (gloo; world sizes 2, 3 and 4, one launch each, many cases per
launch: tests/distributed_worker.py) against the single-process fastna.neighborhood_attention of
the gathered tensors, forward and gradients, float64: uneven and empty slabs, 1D/2D/3D, windows
reaching several ranks, stride, dilation, causal on and off the shard axis, GQA, Dv != D,
shard_axis != 0, both modes, the modules, and the errors."""
import os
import random

import pytest
import torch

import distributed_worker
import fastna
from fastna import _args
from fastna.distributed import _plan, _slab


# ------------------------------------------------------------------ in-process: plan and slab

def _random_axis(rng, L):
    d = rng.randint(1, max(1, L // 3))
    K = rng.randint(2, L // d)
    return K, rng.randint(1, K), d, rng.random() < 0.5


def test_needed_rows_are_the_union_of_the_windows():
    rng = random.Random(0)
    for _ in range(300):
        L = rng.randint(2, 40)
        K, s, d, c = _random_axis(rng, L)
        q0 = rng.randrange(L)
        q1 = rng.randint(q0 + 1, L)
        brute = set()
        for i in range(q0, q1):
            lo, hi = _plan.key_bounds(L, K, s, d, c, i)
            brute |= set(range(lo, hi, d))
        assert _plan.needed_rows(L, K, s, d, c, q0, q1) == tuple(sorted(brute)), (L, K, s, d, c)


def test_plan_segments_and_transfers():
    rng = random.Random(1)
    for _ in range(100):
        P = rng.randint(1, 5)
        L = rng.randint(2, 30)
        K, s, d, c = _random_axis(rng, L)
        cuts = sorted(rng.randint(0, L) for _ in range(P - 1))
        lengths = tuple(b - a for a, b in zip([0] + cuts, cuts + [L]))
        plan = _plan.axis_plan(lengths, K, s, d, c)
        for r in range(P):
            s0, s1 = plan.owned(r)
            segs = plan.segments[r]
            # the segments tile the rank's queries in order, and hold their windows
            assert [x for seg in segs for x in range(seg.q0, seg.q1)] == list(range(s0, s1))
            for seg in segs:
                rows = _plan.needed_rows(L, K, s, d, c, seg.q0, seg.q1)
                assert seg.k0 == rows[0] and seg.k1 == rows[-1] + 1
                assert seg.local == (s0 <= seg.k0 and seg.k1 <= s1)
            # what r receives is exactly what it needs beyond its slab, each row from its owner
            received = sorted(x for src in range(P) for x in plan.sends(src, r))
            assert tuple(received) == plan.halo(r)
            for src in range(P):
                a, b = plan.owned(src)
                assert all(a <= x < b for x in plan.sends(src, r))


def test_even_lengths():
    assert _plan.even_lengths(30, 8) == (4, 4, 4, 4, 4, 4, 3, 3)
    assert _plan.even_lengths(2, 3) == (1, 1, 0)


@pytest.mark.parametrize("seed", range(3))
def test_slab_attention_matches_the_full_problem(seed):
    """Offset query slabs against offset kv slabs (any axis, tiles forced small) give the rows
    of the full problem, forward and gradients."""
    rng = random.Random(seed)
    for _ in range(6):
        rank = rng.randint(1, 3)
        shape = [rng.randint(3, 8) for _ in range(rank)]
        kernel, stride, dilation, causal = zip(*(_random_axis(rng, L) for L in shape))
        H, Hkv = rng.choice([(2, 2), (4, 2), (3, 1)])
        D, Dv = 3, rng.choice([3, 5])
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(2, *shape, H, D, generator=g, dtype=torch.float64, requires_grad=True)
        k = torch.randn(2, *shape, Hkv, D, generator=g, dtype=torch.float64, requires_grad=True)
        v = torch.randn(2, *shape, Hkv, Dv, generator=g, dtype=torch.float64,
                        requires_grad=True)
        ref, ref_lse = fastna.neighborhood_attention(q, k, v, kernel, stride, dilation, causal,
                                                     return_lse=True, backend="reference")
        params = _args.normalize(q, k, v, kernel, stride, dilation, causal)
        a = rng.randrange(rank)
        L = shape[a]
        q0 = rng.randrange(L)
        q1 = rng.randint(q0 + 1, L)
        rows = _plan.needed_rows(L, kernel[a], stride[a], dilation[a], causal[a], q0, q1)
        k0, k1 = rng.randint(0, rows[0]), rng.randint(rows[-1] + 1, L)   # a wider kv slab too
        qo, ko = [0] * rank, [0] * rank
        qo[a], ko[a] = q0, k0

        def sl(t, x0, x1):
            return t.narrow(1 + a, x0, x1 - x0)

        out, lse = _slab.slab_attention(sl(q, q0, q1), sl(k, k0, k1), sl(v, k0, k1), params,
                                        qo, ko)
        torch.testing.assert_close(out, sl(ref, q0, q1), rtol=0, atol=1e-12)
        torch.testing.assert_close(lse, sl(ref_lse, q0, q1), rtol=0, atol=1e-12)
        small = _slab.reference_forward(sl(q, q0, q1), sl(k, k0, k1), sl(v, k0, k1), params, qo,
                                        ko, max_bytes=1)[0]
        torch.testing.assert_close(small, out, rtol=0, atol=1e-12)
        w = torch.randn_like(out)
        want = torch.autograd.grad((sl(ref, q0, q1) * w).sum(), (q, k, v))
        got = torch.autograd.grad((out * w).sum(), (q, k, v))
        for x, y in zip(got, want):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_partial_slabs_merge_to_the_full_problem(seed):
    """A neighborhood split over two or three kv slabs (partial=True): the merged forward, and
    the backward of each part from the merged out / lse, summed, are the full problem's."""
    rng = random.Random(100 + seed)
    for _ in range(6):
        rank = rng.randint(1, 3)
        shape = [rng.randint(3, 8) for _ in range(rank)]
        kernel, stride, dilation, causal = zip(*(_random_axis(rng, L) for L in shape))
        H, Hkv = rng.choice([(2, 2), (4, 2), (3, 1)])
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(2, *shape, H, 3, generator=g, dtype=torch.float64, requires_grad=True)
        k = torch.randn(2, *shape, Hkv, 3, generator=g, dtype=torch.float64, requires_grad=True)
        v = torch.randn(2, *shape, Hkv, 2, generator=g, dtype=torch.float64, requires_grad=True)
        ref = fastna.neighborhood_attention(q, k, v, kernel, stride, dilation, causal,
                                            backend="reference")
        params = _args.normalize(q, k, v, kernel, stride, dilation, causal)
        a = rng.randrange(rank)
        L = shape[a]
        cuts = sorted(set([0, L] + [rng.randint(1, L - 1) for _ in range(rng.randint(1, 2))]))
        off = [0] * rank

        def at(x):
            o = list(off)
            o[a] = x
            return tuple(o)

        kv = [(x0, x1) for x0, x1 in zip(cuts, cuts[1:])]
        parts = [_slab.reference_forward(q, k.narrow(1 + a, x0, x1 - x0),
                                         v.narrow(1 + a, x0, x1 - x0), params, at(0), at(x0),
                                         partial=True) for x0, x1 in kv]
        out, lse = _slab.merge(parts)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        dout = torch.randn_like(out)
        want = torch.autograd.grad(ref, (q, k, v), dout)
        dq = torch.zeros_like(q)
        dk, dv = torch.zeros_like(k), torch.zeros_like(v)
        for x0, x1 in kv:
            gq, gk, gv = _slab.reference_backward(dout, q, k.narrow(1 + a, x0, x1 - x0),
                                                  v.narrow(1 + a, x0, x1 - x0), out, lse,
                                                  params, at(0), at(x0), max_bytes=1 << 12)
            dq += gq
            dk.narrow(1 + a, x0, x1 - x0).add_(gk)
            dv.narrow(1 + a, x0, x1 - x0).add_(gv)
        for x, y in zip((dq, dk, dv), want):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-12)


def test_slab_attention_refuses_a_kv_slab_missing_neighbors():
    q = torch.randn(1, 10, 2, 4)
    params = _args.normalize(q, q, q, 5)
    with pytest.raises(ValueError, match=r"need key rows \[2, 7\)"):
        _slab.slab_attention(q[:, 4:5], q[:, 3:7], q[:, 3:7], params, (4,), (3,))


def test_halo_backends_and_errors_without_a_process_group():
    assert fastna.distributed.slab_backends("cpu") == ["reference", "embedded"]
    import torch.distributed as dist
    if not dist.is_initialized():
        q = torch.randn(1, 4, 2, 4)
        with pytest.raises(RuntimeError, match="init_process_group"):
            fastna.distributed.neighborhood_attention(q, q, q, 3)
        with pytest.raises(ValueError, match="process_group is given without shard_axis"):
            fastna.NeighborhoodAttention1D(dim=8, num_heads=2, kernel_size=3,
                                           process_group=object())
        with pytest.raises(ValueError, match="rel_pos_bias=True runs the unfused ops"):
            fastna.NeighborhoodAttention1D(dim=8, num_heads=2, kernel_size=3, shard_axis=0,
                                           rel_pos_bias=True)


# ------------------------------------------------------------------ process groups

def _lengths(rng, L, P, with_empty):
    """Random uneven slab lengths summing to L; with_empty: one rank holds no rows."""
    parts = P - 1 if with_empty else P
    cuts = sorted(rng.sample(range(1, L), parts - 1))
    lengths = [b - a for a, b in zip([0] + cuts, cuts + [L])]
    if with_empty:
        lengths.insert(rng.randrange(P), 0)
    return lengths


def _attention_cases(P, count, seed):
    """Random valid problems whose shard axis holds 1-3 rows per rank, so windows often reach
    several ranks away; every parameter drawn per axis."""
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        rank = 1 + i % 3
        axis = rng.randrange(rank)
        shape = [rng.randint(2, 5) if rank == 3 else rng.randint(3, 7) for _ in range(rank)]
        shape[axis] = rng.randint(P + 1, 3 * P + 2)
        kernel, stride, dilation, causal = zip(*(_random_axis(rng, L) for L in shape))
        ulysses = i % 4 == 3
        heads_kv = P if ulysses else rng.choice([1, 2])
        heads = heads_kv * rng.choice([1, 2])
        # halo: every other case on the slab implementation CUDA takes by default
        backend = "embedded" if not ulysses and i % 3 == 1 else None
        mode = "ulysses" if ulysses else f"halo, {backend or 'reference'}"
        cases.append(dict(
            kind="attention", name=f"P{P} case {i} ({mode})", backend=backend,
            seed=seed * 1000 + i, batch=rng.choice([1, 2]), shape=shape, heads=heads,
            heads_kv=heads_kv, dim=rng.choice([2, 4]), dim_v=rng.choice([2, 3]),
            kernel=kernel, stride=stride, dilation=dilation, causal=causal, shard_axis=axis,
            lengths=_lengths(rng, shape[axis], P, with_empty=i % 5 == 4 or i % 7 == 6),
            mode="ulysses" if ulysses else "halo", gather=i % 6 == 0))
    return cases


def _special_cases(P):
    """Hand-picked: a window over the whole axis (every rank needs every row), dilation larger
    than a slab, causal only on the shard axis, hunyuan-like 3D proportions."""
    base = dict(kind="attention", batch=1, heads=2, heads_kv=1, dim=4, dim_v=3, gather=True,
                mode="halo")
    L = 2 * P + 1
    return [
        dict(base, name=f"P{P} whole-axis window", seed=1, shape=[L, 4], kernel=(L, 3),
             stride=(1, 1), dilation=(1, 1), causal=(False, False), shard_axis=0,
             lengths=_plan.even_lengths(L, P)),
        dict(base, name=f"P{P} dilation > slab", seed=2, shape=[4, L + 3], kernel=(2, 2),
             stride=(1, 2), dilation=(1, 3), causal=(False, False), shard_axis=1,
             lengths=_plan.even_lengths(L + 3, P)),
        dict(base, name=f"P{P} causal shard axis, strided", seed=3, shape=[L + 2, 3, 4],
             kernel=(4, 2, 3), stride=(3, 1, 2), dilation=(1, 1, 1), causal=(True, False, False),
             shard_axis=0, lengths=_plan.even_lengths(L + 2, P)),
        dict(base, name=f"P{P} slabs wider than the window (interior overlapped)", seed=5,
             shape=[6 * P, 3], kernel=(3, 2), stride=(1, 1), dilation=(2, 1),
             causal=(False, True), shard_axis=0, lengths=_plan.even_lengths(6 * P, P)),
        dict(base, name=f"P{P} ulysses with an empty slab", seed=6, shape=[3, 2 * P + 1],
             heads=2 * P, heads_kv=P, kernel=(2, 3), stride=(1, 2), dilation=(1, 1),
             causal=(False, True), shard_axis=1, lengths=[0] + [2] * (P - 2) + [5],
             mode="ulysses"),
        dict(base, name=f"P{P} hunyuan-like", seed=4, shape=[2 * P + 2, 4, 5], heads=2 * P,
             heads_kv=P, kernel=(P + 2, 3, 3), stride=(1, 1, 1), dilation=(1, 1, 1),
             causal=(False, False, False), shard_axis=0, lengths=_plan.even_lengths(2 * P + 2, P),
             mode="ulysses"),
    ]


def _embedded(cases):
    """The halo cases again on the "embedded" slab implementation, each rank's interior as a
    call of its own wherever there is one (the other cases take the default choice,
    fastna.distributed._halo_whole.calls)."""
    return [dict(c, name=c["name"] + " (embedded)", backend="embedded",
                 overlap_slack=float("inf")) for c in cases
            if c.get("mode") == "halo" and c["kind"] in ("attention", "traffic")]


def _extra_cases(P, seed):
    rng = random.Random(seed)
    lengths = _lengths(rng, 2 * P + 1, P, with_empty=False)
    module = dict(kind="module", seed=seed, heads=2 * P, shape=[2 * P + 1, 5], kernel=(3, 3),
                  dilation=(1, 2), causal=(True, False), shard_axis=0, lengths=lengths)
    traffic = dict(kind="traffic", name=f"P{P} traffic", mode="halo", seed=seed, batch=2,
                   shape=[3 * P + 1, 3], heads=2, heads_kv=1, dim=4, dim_v=3, kernel=(P + 1, 2),
                   stride=(2, 1), dilation=(2, 1), causal=(False, True), shard_axis=0,
                   lengths=_lengths(rng, 3 * P + 1, P, with_empty=False))
    return [traffic, dict(kind="errors", name=f"P{P} errors"),
            dict(kind="gather_grad", name=f"P{P} gather gradient", seed=seed,
                 lengths=_lengths(rng, 2 * P + 1, P, with_empty=True)),
            dict(module, name=f"P{P} module halo", mode="halo"),
            dict(module, name=f"P{P} module ulysses", mode="ulysses")]


def _coverage(cases):
    """What the halo cases exercise: (a rank receiving from a rank 2+ away, an interior
    segment next to a border one, an empty slab)."""
    far = interior = empty = False
    for c in cases:
        if c["kind"] != "attention" or c["mode"] != "halo":
            continue
        a = c["shard_axis"]
        plan = _plan.axis_plan(tuple(c["lengths"]), c["kernel"][a], c["stride"][a],
                               c["dilation"][a], c["causal"][a])
        P = plan.world
        far |= any(plan.sends(src, dst) for src in range(P) for dst in range(P)
                   if abs(src - dst) >= 2)
        interior |= any(len({seg.local for seg in segs}) == 2 for segs in plan.segments)
        empty |= 0 in c["lengths"]
    return far, interior, empty


@pytest.mark.parametrize("P,count", [(2, 14), (3, 12), (4, 9)])
def test_process_group(P, count, tmp_path):
    extra = _extra_cases(P, seed=P)
    cases = _attention_cases(P, count, seed=P) + _special_cases(P) + extra
    cases += _embedded(_special_cases(P) + extra)
    for backend in (None, "embedded"):
        far, interior, empty = _coverage([c for c in cases if c.get("backend") == backend])
        assert interior and empty and (far or P == 2), backend
    distributed_worker.run_group(P, cases, tmp_path)


def test_worker_module_is_importable_by_children():
    # spawn children import the worker by name from the parent's sys.path
    here = os.path.dirname(os.path.abspath(__file__))
    assert os.path.exists(os.path.join(here, "distributed_worker.py"))
