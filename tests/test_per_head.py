"""Per-head-group window parameters (fastna.neighborhood_attention(..., head_groups=...)) on the
CPU: against one ordinary call per group, concatenated along the heads (1D/2D/3D, 1-4 groups,
shared and per-group parameters, every causal combination, stride, dilation, GQA / MQA with
groups inside one key/value head, Dv != D, additional keys / values, return_lse, gradients,
autocast, torch.compile fullgraph), the merging of equal groups, the errors; the fused
backend's interim path on the faked kernel table; the Hydra modules against a per-group
composition written here.  The GPU kernels: tests/test_per_head_gpu.py."""
import itertools
import random

import pytest
import torch

import fastna
from fake_kernels import faked, rows_for
from fastna import _dispatch, ops_unfused
from numerics import random_inputs as _inputs, random_window_params as _group_params
from numerics import rel_error as _rel


def _random_groups(rng, H, Hkv, count):
    """count head counts summing to H whose groups map to whole key/value heads (or lie inside
    one): cut the heads at random multiples of H/Hkv, or inside one key/value head."""
    G = H // Hkv
    if Hkv == 1:
        cuts = sorted(rng.sample(range(1, H), min(count, H) - 1))
    else:
        cuts = sorted(rng.sample(range(1, Hkv), min(count, Hkv) - 1))
        cuts = [c * G for c in cuts]
    bounds = [0] + cuts + [H]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def _views(t, start, stop):
    return t[..., start:stop, :]


def _one_call_per_group(q, k, v, counts, params, ek=None, ev=None, scale=None,
                        backend="reference"):
    """The definition: an ordinary fastna call per group on its heads, concatenated."""
    H, Hkv = q.shape[-2], k.shape[-2]
    G = H // Hkv
    outs, lses, start = [], [], 0
    for n, (kernel, stride, dilation, causal) in zip(counts, params):
        stop = start + n
        ka, kb = start // G, max(start // G + 1, stop // G)
        extras = [None if t is None else t[:, :, ka:kb] for t in (ek, ev)]
        out, lse = fastna.neighborhood_attention(
            _views(q, start, stop), _views(k, ka, kb), _views(v, ka, kb), kernel, stride,
            dilation, causal, scale, *extras, return_lse=True, backend=backend)
        outs.append(out)
        lses.append(lse)
        start = stop
    return torch.cat(outs, -2), torch.cat(lses, -1)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("per_group", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_matches_one_call_per_group(rank, per_group, seed):
    rng = random.Random(1000 * rank + 10 * seed + per_group)
    H, Hkv = rng.choice([(4, 4), (6, 3), (8, 2), (5, 1), (4, 1)])
    D, Dv = rng.choice([(8, 8), (8, 5)])
    E = rng.choice([0, 0, 3])
    shape = tuple(rng.randint(4, 9 if rank < 3 else 6) for _ in range(rank))
    counts = _random_groups(rng, H, Hkv, rng.randint(1, 4))
    if per_group:
        params = [_group_params(rng, shape) for _ in counts]
        args = [list(x) for x in zip(*params)]
    else:
        params = [_group_params(rng, shape)] * len(counts)
        args = list(params[0])
    q, k, v, ek, ev = _inputs(shape, H, Hkv, D, Dv, E=E, seed=seed)
    out, lse = fastna.neighborhood_attention(q, k, v, *args, additional_keys=ek,
                                             additional_values=ev, return_lse=True,
                                             head_groups=counts)
    want_out, want_lse = _one_call_per_group(q, k, v, counts, params, ek, ev)
    assert out.shape == (*q.shape[:-1], Dv) and lse.shape == q.shape[:-1]
    assert _rel(out, want_out) < 1e-12 and _rel(lse, want_lse) < 1e-12
    alone = fastna.neighborhood_attention(q, k, v, *args, additional_keys=ek,
                                          additional_values=ev, head_groups=counts)
    assert torch.equal(alone, out)


@pytest.mark.parametrize("causal", list(itertools.product([False, True], repeat=2)))
def test_every_causal_combination_with_gradients(causal):
    """Two groups of 2D, each with its own causal mask (every pair of per-axis masks), stride
    and dilation; gradients of out and lse into q, k, v and the additional tokens."""
    other = tuple(not c for c in causal)
    params = [((3, 4), (1, 2), (1, 2), causal), ((2, 3), (2, 1), (3, 1), other)]
    leaves = [t.requires_grad_() for t in _inputs((7, 9), 6, 3, 6, 4, E=2, seed=7)]
    q, k, v, ek, ev = leaves
    out, lse = fastna.na2d(q, k, v, [p[0] for p in params], [p[1] for p in params],
                           [p[2] for p in params], [p[3] for p in params],
                           additional_keys=ek, additional_values=ev, return_lse=True,
                           head_groups=[2, 4])
    g = torch.Generator().manual_seed(1)
    dout = torch.randn(out.shape, generator=g, dtype=out.dtype)
    dlse = torch.randn(lse.shape, generator=g, dtype=lse.dtype)
    got = torch.autograd.grad([out, lse], leaves, [dout, dlse])
    want_out, want_lse = _one_call_per_group(q, k, v, [2, 4], params, ek, ev)
    want = torch.autograd.grad([want_out, want_lse], leaves, [dout, dlse])
    assert _rel(out, want_out) < 1e-12 and _rel(lse, want_lse) < 1e-12
    for name, a, b in zip("q k v ek ev".split(), got, want):
        assert _rel(a, b) < 1e-12, name


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_na_nd_and_scale(rank):
    fn = {1: fastna.na1d, 2: fastna.na2d, 3: fastna.na3d}[rank]
    shape = (9, 8, 6)[:rank]
    q, k, v, _, _ = _inputs(shape, 4, 2, 8, 8, seed=rank)
    out = fn(q, k, v, [3, 2], dilation=[2, 1], scale=0.3, head_groups=(2, 2))
    want, _ = _one_call_per_group(q, k, v, [2, 2], [(3, 1, 2, False), (2, 1, 1, False)],
                                  scale=0.3)
    assert _rel(out, want) < 1e-12
    with pytest.raises(ValueError, match="query must have"):
        {1: fastna.na2d, 2: fastna.na3d, 3: fastna.na1d}[rank](q, k, v, 3, head_groups=[2, 2])


def test_mqa_groups_inside_one_key_value_head():
    """H_kv = 1: every group reads the one key/value head, whatever its size."""
    q, k, v, _, _ = _inputs((10, 7), 7, 1, 8, 3, seed=3)
    params = [(3, 1, 1, False), ((5, 3), 1, (2, 2), False), (2, (2, 1), 1, (True, False))]
    out = fastna.na2d(q, k, v, *[list(x) for x in zip(*params)], head_groups=[1, 4, 2])
    want, _ = _one_call_per_group(q, k, v, [1, 4, 2], params)
    assert _rel(out, want) < 1e-12


def test_gqa_group_inside_one_key_value_head():
    """H = 8, H_kv = 2: groups [0, 2) and [2, 4) both read key/value head 0."""
    q, k, v, _, _ = _inputs((12,), 8, 2, 4, 4, seed=4)
    params = [(3, 1, 1, False), (5, 1, 2, False), (4, 2, 1, True)]
    out = fastna.na1d(q, k, v, *[list(x) for x in zip(*params)], head_groups=[2, 2, 4])
    want, _ = _one_call_per_group(q, k, v, [2, 2, 4], params)
    assert _rel(out, want) < 1e-12


def test_lists_stay_per_axis_without_head_groups():
    q, k, v, _, _ = _inputs((9, 7), 2, 2, 4, 4)
    a = fastna.na2d(q, k, v, [3, 5], dilation=[2, 1])
    b = fastna.na2d(q, k, v, (3, 5), dilation=(2, 1))
    assert torch.equal(a, b)


def _count_calls(monkeypatch):
    calls = []
    real = _dispatch.attention

    def spy(*args):
        calls.append(args[1].shape[-2])
        return real(*args)

    monkeypatch.setattr(_dispatch, "attention", spy)
    return calls


def test_groups_with_equal_parameters_run_as_one_call(monkeypatch):
    calls = _count_calls(monkeypatch)
    q, k, v, _, _ = _inputs((9, 9), 8, 4, 4, 4)
    fastna.na2d(q, k, v, 3, head_groups=[2, 2, 4])
    assert calls == [8]
    calls.clear()
    fastna.na2d(q, k, v, [3, 3, 5, 5], head_groups=[2, 2, 2, 2])
    assert calls == [4, 4]
    calls.clear()
    # MQA: every group reads the one key/value head, so equal neighbours always merge
    q1, k1, v1, _, _ = _inputs((9, 9), 8, 1, 4, 4)
    fastna.na2d(q1, k1, v1, [3, 3, 5], head_groups=[2, 3, 3])
    assert calls == [5, 3]
    calls.clear()
    # GQA (2 query heads per key/value head): [1, 2) + [2, 4) would straddle: not merged
    q2, k2, v2, _, _ = _inputs((9, 9), 4, 2, 4, 4)
    fastna.na2d(q2, k2, v2, [5, 3, 3], head_groups=[1, 1, 2])
    assert calls == [1, 1, 2]


def test_autocast_and_half_precision():
    q, k, v, _, _ = _inputs((8, 8), 4, 4, 8, 8, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fastna.na2d(q, k.to(torch.bfloat16), v, [3, 5], head_groups=[2, 2])
    assert out.dtype == torch.bfloat16
    want, _ = _one_call_per_group(*(t.to(torch.bfloat16) for t in (q, k, v)), [2, 2],
                                  [(3, 1, 1, False), (5, 1, 1, False)])
    assert torch.equal(out, want)


def test_compile_fullgraph_traces_it():
    q, k, v, ek, ev = _inputs((8, 7), 4, 2, 8, 4, E=2, dtype=torch.float32)
    leaves = [t.requires_grad_() for t in (q, k, v)]

    def fn(q, k, v):
        return fastna.na2d(q, k, v, [3, (5, 3)], dilation=[1, (1, 2)],
                           is_causal=[False, (True, False)], additional_keys=ek,
                           additional_values=ev, return_lse=True, head_groups=[2, 2])

    torch._dynamo.reset()
    try:
        out, lse = torch.compile(fn, backend="aot_eager", fullgraph=True)(*leaves)
        got = torch.autograd.grad([out, lse], leaves, [torch.ones_like(out),
                                                       torch.ones_like(lse)])
    finally:
        torch._dynamo.reset()
    want_out, want_lse = fn(*leaves)
    want = torch.autograd.grad([want_out, want_lse], leaves, [torch.ones_like(want_out),
                                                              torch.ones_like(want_lse)])
    assert _rel(out, want_out) < 1e-6 and _rel(lse, want_lse) < 1e-6
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-6


def test_explain_names_each_group():
    q, k, v, _, _ = _inputs((11, 11), 4, 4, 8, 8, dtype=torch.float32)
    text = fastna.explain(q, k, v, [3, 3, 5], dilation=[1, 1, 2], head_groups=[1, 1, 2],
                          backend="reference")
    assert text.startswith("2 call(s)")
    assert "head groups 0-1 (query heads 0-1): kernel_size=(3, 3)" in text
    assert "head group 2 (query heads 2-3): kernel_size=(5, 5)" in text
    assert text.count("runs: backend 'reference'") == 2


Q, K, V = (torch.randn(1, 9, 8, h, 4) for h in (8, 2, 2))


@pytest.mark.parametrize("exc,match,kwargs", [
    (ValueError, r"head_groups must sum to the query heads H=8, got head_groups=\[4, 3\] "
                 r"\(sum 7\)", dict(head_groups=[4, 3])),
    (ValueError, r"head group 1 \(query heads 3-7\) does not map to whole key/value heads: "
                 r"with H=8 .* H_kv=2", dict(head_groups=[3, 5])),
    (ValueError, r"kernel_size as a list gives one entry per head group: expected 2 entries "
                 r"\(len\(head_groups\)\), got 3: \[3, 3, 3\]",
     dict(head_groups=[4, 4], kernel_size=[3, 3, 3])),
    (ValueError, r"dilation as a list gives one entry per head group",
     dict(head_groups=[4, 4], dilation=[1])),
    (ValueError, r"head group 1 \(query heads 4-7\): kernel_size \* dilation must not exceed "
                 r"the input length on every axis, got kernel_size=\(5, 5\), dilation=\(2, 2\)",
     dict(head_groups=[4, 4], kernel_size=[3, 5], dilation=[1, 2])),
    (ValueError, r"head group 0 \(query heads 0-3\): stride must satisfy",
     dict(head_groups=[4, 4], stride=[4, 1])),
    (TypeError, r"head group 1 \(query heads 4-7\): is_causal entries must be bools",
     dict(head_groups=[4, 4], is_causal=[False, (1, 0)])),
    (ValueError, r"head_groups entries must be positive ints .* \(entry 1: 0\)",
     dict(head_groups=[8, 0])),
    (ValueError, r"head_groups entries must be positive ints .* \(entry 0: True\)",
     dict(head_groups=[True, 7])),
    (TypeError, r"head_groups must be a non-empty list or tuple of head counts",
     dict(head_groups=2)),
    (TypeError, r"head_groups must be a non-empty list or tuple of head counts",
     dict(head_groups=[])),
    (TypeError, "return_lse must be a bool", dict(head_groups=[4, 4], return_lse=1)),
    (TypeError, "backend must be a str or None", dict(head_groups=[4, 4], backend=1)),
    (TypeError, "scale must be a real number", dict(head_groups=[4, 4], scale="1")),
])
def test_bad_input_names_the_group(exc, match, kwargs):
    kwargs = {"kernel_size": 3, **kwargs}
    with pytest.raises(exc, match=match):
        fastna.na2d(Q, K, V, **kwargs)
    if "return_lse" not in kwargs:
        with pytest.raises(exc, match=match):
            fastna.explain(Q, K, V, **kwargs)


def test_backend_errors_name_the_group():
    """A group the named backend cannot run (here: the faked kernels refuse 5x5 windows)."""
    q, k, v, _, _ = _inputs((9, 8), 4, 2, 32, 32, dtype=torch.float32)
    rows = rows_for("fused_fwd", {32: {"default"}})
    with faked(rows, rule=lambda op, pd: "5x5 refused" if pd["kernel"][0] == 5 else ""):
        with pytest.raises(NotImplementedError,
                           match=r"head group 1 \(query heads 2-3\): backend='fused' cannot "
                                 r"run this call: .*5x5 refused"):
            fastna.na2d(q, k, v, [3, 5], head_groups=[2, 2], backend="fused")


# ------------------------------------------------------- the interim path on a kernel backend

def test_fused_backend_runs_one_launch_per_group():
    """On the faked kernel table (launches = the reference on what the kernel gets): one
    forward launch per group, results and gradients as one call per group."""
    leaves = [t.requires_grad_() for t in _inputs((9, 8), 4, 2, 32, 32, seed=11,
                                                  dtype=torch.float32)[:3]]
    params = [((3, 3), (1, 1), (1, 2), (False, False)), ((5, 3), (2, 1), (1, 1), (True, False))]
    with faked(rows_for("fused_fwd", {32: {"default"}}) +
               rows_for("fused_bwd", {32: {"default"}})) as table:
        out, lse = fastna.na2d(*leaves, *[list(x) for x in zip(*params)], return_lse=True,
                               head_groups=[2, 2], backend="fused")
        assert len(table.forward_calls) == 2
        assert [c["q"].shape[-2] for c in table.forward_calls] == [2, 2]
        dout = torch.randn_like(out)
        got = torch.autograd.grad(out, leaves, dout)
        assert len(table.backward_calls) == 2
    want_out, want_lse = _one_call_per_group(*leaves, [2, 2], params)
    want = torch.autograd.grad(want_out, leaves, dout)
    assert _rel(out, want_out) < 1e-6 and _rel(lse, want_lse) < 1e-6
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-6


# ----------------------------------------------------------------------------- Hydra modules

def _hydra_by_hand(m, x):
    """The Hydra layer composed here from its parameters: the qkv projection, then per group
    q.k * scale (+ the group's bias) -> softmax -> av over the group's heads, then proj."""
    rank, H, hd = m.rank, m.num_heads, m.head_dim
    qkv = m.qkv(x).reshape(*x.shape[:-1], 3, H, hd)
    q, k, v = qkv.unbind(rank + 1)
    qk = getattr(ops_unfused, f"na{rank}d_qk")
    av = getattr(ops_unfused, f"na{rank}d_av")
    outs, start = [], 0
    for g, n in enumerate(m.head_groups):
        s = slice(start, start + n)
        rpb = None if m.rpb is None else m.rpb[g]
        w = qk(q[..., s, :], k[..., s, :], m.kernel_sizes[g], m.dilations[g],
               is_causal=m.is_causal[g]) * m.scale
        if rpb is not None:
            w = w + qk(torch.zeros_like(q[..., s, :]), k[..., s, :], m.kernel_sizes[g],
                       m.dilations[g], rpb=rpb)
        outs.append(av(w.softmax(-1), v[..., s, :], m.kernel_sizes[g], m.dilations[g],
                       is_causal=m.is_causal[g]))
        start += n
    return m.proj(torch.cat(outs, -2).reshape(x.shape))


@pytest.mark.parametrize("rank,shape,kwargs", [
    (1, (20,), dict(kernel_sizes=[3, 5], dilations=[1, 3])),
    (2, (14, 15), dict(kernel_sizes=7, dilations=[1, 2])),
    (2, (12, 11), dict(kernel_sizes=[3, (5, 3), 3], dilations=[(1, 2), 2, 3])),
    (3, (6, 5, 7), dict(kernel_sizes=[3, (3, 5, 3)], dilations=[(2, 1, 1), 1])),
    (2, (12, 11), dict(kernel_sizes=[3, 3, 5], dilations=[2, 2, 1])),
])
@pytest.mark.parametrize("rel_pos_bias", [False, True])
def test_hydra_vs_composition(rank, shape, kwargs, rel_pos_bias):
    torch.manual_seed(rank)
    cls = {1: fastna.HydraNeighborhoodAttention1D, 2: fastna.HydraNeighborhoodAttention2D,
           3: fastna.HydraNeighborhoodAttention3D}[rank]
    m = cls(dim=30, num_heads=5, rel_pos_bias=rel_pos_bias, dtype=torch.float64, **kwargs)
    assert m.uses_fused_path is not rel_pos_bias
    x = torch.randn(2, *shape, 30, dtype=torch.float64, requires_grad=True)
    y = m(x)
    want = _hydra_by_hand(m, x)
    assert _rel(y, want) < 1e-12
    params = [x] + list(m.parameters())
    for a, b in zip(torch.autograd.grad(y.sum(), params), torch.autograd.grad(want.sum(), params)):
        assert _rel(a, b) < 1e-12


def test_hydra_head_split_and_bias_tables():
    m = fastna.HydraNeighborhoodAttention2D(dim=80, num_heads=5, kernel_sizes=[7, 5, 3],
                                            dilations=1, rel_pos_bias=True)
    assert m.head_groups == (1, 2, 2)     # StyleNAT: the remainder goes to the last groups
    assert [tuple(t.shape) for t in m.rpb] == [(1, 13, 13), (2, 9, 9), (2, 5, 5)]
    assert list(m.state_dict()) == ["qkv.weight", "qkv.bias", "rpb.0", "rpb.1", "rpb.2",
                                    "proj.weight", "proj.bias"]
    m = fastna.HydraNeighborhoodAttention2D(dim=64, num_heads=8, kernel_sizes=[7],
                                            dilations=[1, 2], head_groups=[6, 2])
    assert m.head_groups == (6, 2) and m.kernel_sizes == ((7, 7), (7, 7))
    assert m.dilations == ((1, 1), (2, 2)) and m.rpb is None


def test_hydra_groups_with_one_window_run_as_one(monkeypatch):
    """StyleNAT's layers with one dilation hold two groups (two bias tables) of one window:
    one qk call with the tables stacked."""
    calls = []
    real = ops_unfused.na2d_qk

    def spy(q, k, kernel, dilation, is_causal=False, rpb=None, **kw):
        calls.append(None if rpb is None else tuple(rpb.shape))
        return real(q, k, kernel, dilation, is_causal=is_causal, rpb=rpb, **kw)

    monkeypatch.setattr(ops_unfused, "na2d_qk", spy)
    m = fastna.HydraNeighborhoodAttention2D(dim=48, num_heads=6, kernel_sizes=[5, 5, 3],
                                            dilations=[1, 1, 2], rel_pos_bias=True,
                                            dtype=torch.float64)
    x = torch.randn(1, 9, 10, 48, dtype=torch.float64)
    y = m(x)
    assert calls == [(4, 9, 9), (2, 5, 5)]
    calls.clear()
    assert _rel(y, _hydra_by_hand(m, x)) < 1e-12


def test_hydra_loads_stylenat_two_group_state_dict():
    """StyleNAT's two-group layer names its bias tables rpb0 / rpb1."""
    torch.manual_seed(0)
    m = fastna.HydraNeighborhoodAttention2D(dim=64, num_heads=4, kernel_sizes=[7, 7],
                                            dilations=[1, 2], rel_pos_bias=True)
    legacy = {k.replace("rpb.", "rpb"): v for k, v in m.state_dict().items()}
    assert "rpb0" in legacy and "rpb1" in legacy
    other = fastna.HydraNeighborhoodAttention2D(dim=64, num_heads=4, kernel_sizes=[7, 7],
                                                dilations=[1, 2], rel_pos_bias=True)
    other.load_state_dict(legacy)
    x = torch.randn(1, 16, 16, 64)
    assert torch.equal(other(x), m(x))


def test_hydra_pads_small_inputs_and_attention_dropout():
    torch.manual_seed(1)
    m = fastna.HydraNeighborhoodAttention2D(dim=32, num_heads=4, kernel_sizes=[3, 5],
                                            dilations=[1, 3], attn_drop=0.5)
    x = torch.randn(2, 10, 12, 32)   # 5 * 3 = 15 > 10, 12: padded to 15 x 15, cropped back
    m.eval()
    assert m.uses_fused_path and m(x).shape == x.shape
    m.train()
    assert not m.uses_fused_path and m(x).shape == x.shape


@pytest.mark.parametrize("rel_pos_bias", [False, True])
def test_hydra_compiles_fullgraph(rel_pos_bias):
    m = fastna.HydraNeighborhoodAttention2D(dim=32, num_heads=4, kernel_sizes=[3, 5],
                                            dilations=[2, 1], rel_pos_bias=rel_pos_bias)
    x = torch.randn(1, 11, 10, 32)
    torch._dynamo.reset()
    try:
        got = torch.compile(m, backend="eager", fullgraph=True)(x)
    finally:
        torch._dynamo.reset()
    assert _rel(got, m(x)) < 1e-6


@pytest.mark.parametrize("exc,match,kwargs", [
    (ValueError, r"the per-group lists must have the same length .* kernel_sizes=\[3, 5\], "
                 r"dilations=\[1, 2, 3\]", dict(kernel_sizes=[3, 5], dilations=[1, 2, 3])),
    (ValueError, r"dilations as a list gives one entry per head group: expected 2 entries",
     dict(kernel_sizes=3, dilations=[1, 2, 3], head_groups=[2, 2])),
    (ValueError, r"head_groups=\[3, 3\] must sum to num_heads=4",
     dict(kernel_sizes=3, head_groups=[3, 3])),
    (ValueError, r"num_heads=4 cannot be split into 5 head groups",
     dict(kernel_sizes=[3] * 5)),
    (ValueError, r"rel_pos_bias=True needs odd kernel sizes, got kernel_sizes\[1\]=\(4, 4\)",
     dict(kernel_sizes=[3, 4], rel_pos_bias=True)),
    (ValueError, r"rel_pos_bias=True is not defined for causal attention, got "
                 r"is_causal\[0\]=\(True, False\)",
     dict(kernel_sizes=3, is_causal=[(True, False), False], rel_pos_bias=True)),
    (ValueError, r"runs the unfused \(legacy\) ops, which have no stride; got "
                 r"strides\[1\]=\(2, 2\)", dict(kernel_sizes=3, strides=[1, 2],
                                                 rel_pos_bias=True)),
    (ValueError, r"kernel_sizes\[1\] must be >= 2", dict(kernel_sizes=[3, 1])),
    (ValueError, r"kernel_sizes\[0\] must be an int or a tuple of 2 ints",
     dict(kernel_sizes=[(3, 3, 3), 3])),
    (ValueError, r"dilations must not be an empty list", dict(kernel_sizes=3, dilations=[])),
    (TypeError, "missing required argument kernel_sizes", dict()),
])
def test_hydra_bad_arguments(exc, match, kwargs):
    with pytest.raises(exc, match=match):
        fastna.HydraNeighborhoodAttention2D(dim=32, num_heads=4, **kwargs)
