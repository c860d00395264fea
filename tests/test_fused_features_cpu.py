"""The fused backend's wrapper logic on CPU: head-dim padding, Dv != D, additional KV tokens.

The compiled kernel table is faked (tests/fake_kernels.py: rows with the head dims of DIMS, a
can_implement stub) and the fused launches replaced by the reference run on exactly what the
kernel would receive, so the padding, the lse merge, the policy's tile choice and their
autograd are checked against the reference in CI without a GPU.  The kernels themselves are
checked in tests/test_fused_gpu.py.
"""
import math

import pytest
import torch

from fake_kernels import faked, row, rows_for
import fastna
from fastna import _args, _policy, _table, reference
from fastna.backends import _fused_autograd, _layout, _merge, fused, hopper
from numerics import random_inputs as _inputs, rel_error as _rel

FAST = _policy.FAST_TILE
DIMS = {32: {"default"}, 64: {"default"}, 128: {"default", FAST}}


@pytest.fixture
def fake_kernel():
    """Compiled fused_fwd head dims DIMS (every rank and dtype); the kernel = the reference.
    Returns the list of kernel calls."""
    with faked(rows_for("fused_fwd", DIMS)) as table:
        yield table.forward_calls


# ----------------------------------------------------------------------------- merge math

def test_merge_is_softmax_over_the_union():
    g = torch.Generator().manual_seed(1)
    sa = torch.randn(3, 5, 7, generator=g, dtype=torch.float64) * 4
    sb = torch.randn(3, 5, 4, generator=g, dtype=torch.float64) * 4
    va = torch.randn(7, 6, generator=g, dtype=torch.float64)
    vb = torch.randn(4, 6, generator=g, dtype=torch.float64)

    def part(s, v):
        lse = torch.logsumexp(s, -1)
        return torch.softmax(s, -1) @ v, lse

    out, lse = _merge.merge(*part(sa, va), *part(sb, vb))
    ref_out, ref_lse = part(torch.cat([sa, sb], -1), torch.cat([va, vb], 0))
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-12, atol=1e-12)


def test_merge_with_far_apart_lse_is_finite():
    out_a = torch.ones(4, 2)
    out_b = torch.full((4, 2), 3.0)
    lse_a = torch.tensor([0.0, 200.0, -200.0, 80.0])
    lse_b = torch.tensor([0.0, -200.0, 200.0, 80.0])
    out, lse = _merge.merge(out_a, lse_a, out_b, lse_b)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    torch.testing.assert_close(out[:, 0], torch.tensor([2.0, 1.0, 3.0, 2.0]))
    torch.testing.assert_close(lse, torch.tensor([math.log(2), 200, 200, 80 + math.log(2)]))


@pytest.mark.parametrize("H,Hkv", [(4, 4), (4, 2), (3, 1)])
def test_extra_attention_matches_direct_softmax(H, Hkv):
    g = torch.Generator().manual_seed(2)
    B, N, E, D, Dv = 2, 6, 5, 8, 3
    q = torch.randn(B, N, H, D, generator=g, dtype=torch.float64)
    ek = torch.randn(B, E, Hkv, D, generator=g, dtype=torch.float64)
    ev = torch.randn(B, E, Hkv, Dv, generator=g, dtype=torch.float64)
    out, lse = _merge.extra_attention(q, ek, ev, 0.3)
    assert out.dtype == lse.dtype == torch.float64
    G = H // Hkv
    for h in range(H):
        s = torch.einsum("bnd,bed->bne", q[:, :, h], ek[:, :, h // G]) * 0.3
        torch.testing.assert_close(lse[:, :, h], torch.logsumexp(s, -1))
        torch.testing.assert_close(out[:, :, h], torch.softmax(s, -1) @ ev[:, :, h // G])


def test_extra_attention_accumulates_in_fp32_for_half_inputs():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 2, 64, generator=g).to(torch.bfloat16)
    ek = torch.randn(1, 3, 2, 64, generator=g).to(torch.bfloat16)
    out, lse = _merge.extra_attention(q, ek, ek, 0.125)
    assert out.dtype == lse.dtype == torch.float32
    s = torch.einsum("bnhd,behd->bnhe", q.double(), ek.double()) * 0.125
    torch.testing.assert_close(lse.double(), torch.logsumexp(s, -1), rtol=0, atol=1e-5)


def test_chunk_tokens():
    # per token: B*H*4*(2E + D + 3Dv + 4) bytes
    per = 2 * 4 * 4 * (2 * 7 + 16 + 3 * 8 + 4)
    assert _merge.chunk_tokens(2, 1000, 4, 16, 8, 7, 4, max_bytes=per * 10) == 10
    assert _merge.chunk_tokens(2, 1000, 4, 16, 8, 7, 4, max_bytes=per // 2) == 1
    assert _merge.chunk_tokens(2, 5, 4, 16, 8, 7, 4, max_bytes=1 << 30) == 5


def test_attend_and_merge_chunked_equals_unchunked_with_grads():
    g = torch.Generator().manual_seed(4)
    B, S, H, Hkv, D, Dv, E = 2, (5, 6), 4, 2, 8, 4, 3
    leaves = [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in
              [(B, *S, H, D), (B, *S, H, Dv), (B, *S, H), (B, E, Hkv, D), (B, E, Hkv, Dv)]]
    q, o, l, ek, ev = leaves
    res = []
    for max_bytes in (1 << 30, 1000):        # one chunk; chunks of one or a few tokens
        out, lse = _merge.attend_and_merge(q, o, l, ek, ev, 0.4, max_bytes=max_bytes)
        assert out.shape == (B, *S, H, Dv) and lse.shape == (B, *S, H)
        gr = torch.autograd.grad([out, lse], leaves, [torch.ones_like(out) * 0.3,
                                                       torch.ones_like(lse) * 0.7])
        res.append((out, lse, gr))
    for a, b in zip(res[0][:2] + tuple(res[0][2]), res[1][:2] + tuple(res[1][2])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- padding logic

def test_padded_head_dim():
    dims = {32: 0, 64: 0, 128: 0}
    assert _table.padded_head_dim(32, 32, dims) == 32
    assert _table.padded_head_dim(8, 8, dims) == 32
    assert _table.padded_head_dim(40, 40, dims) == 64
    assert _table.padded_head_dim(64, 32, dims) == 64
    assert _table.padded_head_dim(32, 128, dims) == 128
    assert _table.padded_head_dim(5, 3, dims) == 32
    assert _table.padded_head_dim(200, 200, dims) is None
    assert _table.padded_head_dim(200, 200, {**dims, 256: 0}) == 256
    assert _table.padded_head_dim(64, 64, {}) is None


def test_check_accepts_padding_and_declines_too_large(fake_kernel):
    p = _args.normalize(*_inputs((8, 8), 2, 2, 64, 64, 0)[:3], 3)
    for D, Dv in [(64, 64), (40, 40), (8, 8), (64, 32), (32, 128), (5, 3)]:
        q, k, v, _, _ = _inputs((8, 8), 2, 2, D, Dv, 0, dtype=torch.float16)
        assert fused.check(q, k, v, p) is None, (D, Dv)
    q, k, v, _, _ = _inputs((8, 8), 2, 2, 200, 200, 0, dtype=torch.float16)
    why = fused.check(q, k, v, p)
    assert why is not None and "head dim 200 not instantiated" in why
    assert "built: 32, 64, 128" in why and ">= 200" in why
    assert isinstance(why.error("fused"), NotImplementedError)
    q, k, v, _, _ = _inputs((8, 8), 2, 2, 64, 144, 0, dtype=torch.float16)
    assert "D=64, Dv=144" in fused.check(q, k, v, p)


def test_check_passes_on_what_can_implement_says():
    """What the kernel can run is can_implement's answer, reason included."""
    rule = (lambda op, pd: "batch*heads 70000 > 65535" if pd["batch"] * pd["heads"] > 65535
            else "")
    with faked(rows_for("fused_fwd", DIMS), rule=rule):
        q, k, v, _, _ = _inputs((8, 8), 2, 2, 32, 32, 0, dtype=torch.float16)
        p = _args.normalize(q, k, v, 3)
        assert fused.check(q, k, v, p) is None
        qb = q.new_zeros(1, 8, 8, 70000, 32)
        why = fused.check(qb, qb, qb, p)
        assert why == "batch*heads 70000 > 65535" and why.exc is NotImplementedError


def test_forward_declines_without_a_large_enough_head_dim(fake_kernel):
    q, k, v, _, _ = _inputs((12,), 2, 2, 136, 136, 0)
    p = _args.normalize(q, k, v, 3)
    with pytest.raises(NotImplementedError, match="backend='fused'.*head dim 136"):
        fused.forward(q, k, v, p)
    assert not fake_kernel


# (spatial shape, kernel, stride, dilation, causal, H, H_kv)
CASES = [
    ((17,), 5, 2, 2, True, 4, 2),
    ((9, 10), (3, 4), (1, 2), (2, 1), (False, True), 2, 1),
    ((5, 6, 4), (2, 3, 3), (1, 2, 1), (2, 1, 1), (True, False, False), 2, 2),
]


def _case_id(c):
    return f"{'x'.join(map(str, c[0]))}-c{c[4]}-H{c[5]}/{c[6]}"


def _reference(q, k, v, ek, ev, p):
    return reference.attention(q, k, v, p, ek, ev, return_lse=True)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("D,Dv", [(32, 32), (8, 8), (40, 40), (96, 96), (64, 32), (32, 128),
                                  (5, 3)])
@pytest.mark.parametrize("E", [0, 1, 7])
def test_forward_and_gradients_vs_reference(case, D, Dv, E, fake_kernel):
    shape, kernel, stride, dilation, causal, H, Hkv = case
    leaves = [t for t in _inputs(shape, H, Hkv, D, Dv, E, seed=D + Dv + E) if t is not None]
    for t in leaves:
        t.requires_grad_()
    q, k, v = leaves[:3]
    ek, ev = (leaves[3], leaves[4]) if E else (None, None)
    p = _args.normalize(q, k, v, kernel, stride, dilation, causal, None, ek, ev)
    assert p.scale == D ** -0.5
    out, lse = fused.forward(q, k, v, p, ek, ev, return_lse=True)
    (call,) = fake_kernel
    assert call["P"] == _table.padded_head_dim(D, Dv, DIMS)
    assert call["pd"]["scale"] == D ** -0.5            # the caller's D, not the padded one
    assert out.shape == (*q.shape[:-1], Dv) and out.is_contiguous()
    assert lse.shape == q.shape[:-1]
    rout, rlse = _reference(*[t.detach() for t in leaves[:3]],
                            *(t.detach() for t in leaves[3:]) if E else (None, None), p)
    torch.testing.assert_close(out, rout, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lse, rlse, rtol=1e-10, atol=1e-10)

    g = torch.Generator().manual_seed(99)
    dout = torch.randn(out.shape, generator=g, dtype=out.dtype)
    dlse = torch.randn(lse.shape, generator=g, dtype=lse.dtype)
    grads = torch.autograd.grad([out, lse], leaves, [dout, dlse])
    ref = [t.detach().clone().requires_grad_() for t in leaves]
    rout, rlse = _reference(*ref[:3], *(ref[3:] if E else (None, None)), p)
    rgrads = torch.autograd.grad([rout, rlse], ref, [dout, dlse])
    for name, a, b in zip(["q", "k", "v", "ek", "ev"], grads, rgrads):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("E", [0, 3])
def test_gradient_of_out_only(E, fake_kernel, monkeypatch):
    """No lse gradient from the caller: with extras the merge still sends one into the
    kernel's lse (and the backward must use it)."""
    q, k, v, ek, ev = _inputs((11, 7), 4, 2, 40, 24, E, seed=5)
    leaves = [t.requires_grad_() for t in (q, k, v, ek, ev) if t is not None]
    p = _args.normalize(q, k, v, (3, 5), 1, (2, 1), False, None, ek, ev)
    seen = []
    orig = _fused_autograd.reference

    def spy(q_, k_, v_, params, dout, dlse):
        seen.append(dlse is not None)
        return orig(q_, k_, v_, params, dout, dlse)

    monkeypatch.setattr(_fused_autograd, "reference", spy)
    out = fused.forward(q, k, v, p, ek, ev)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, dout)
    assert seen == [bool(E)]
    ref = [t.detach().clone().requires_grad_() for t in leaves]
    rout = reference.attention(*ref[:3], p, *(ref[3:] if E else (None, None)))
    for a, b in zip(grads, torch.autograd.grad(rout, ref, dout)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_dtypes(dtype, fake_kernel):
    q, k, v, ek, ev = _inputs((6, 7), 4, 2, 40, 24, 5, dtype=dtype, seed=6)
    p = _args.normalize(q, k, v, 3, 1, 1, (True, False), None, ek, ev)
    out, lse = fused.forward(q, k, v, p, ek, ev, return_lse=True)
    assert out.dtype == dtype and lse.dtype == torch.float32
    rout, rlse = reference.attention(q.double(), k.double(), v.double(), p, ek.double(),
                                     ev.double(), return_lse=True)
    assert _rel(out, rout) < {torch.float16: 2e-3, torch.bfloat16: 1.5e-2}[dtype]
    assert (lse.double() - rlse).abs().max().item() < 1e-3


def test_explicit_scale_and_packed_inputs(fake_kernel):
    g = torch.Generator().manual_seed(7)
    qkv = torch.randn(2, 10, 3, 3, 24, generator=g, dtype=torch.float64)
    q, k, v = qkv.unbind(-2)                 # non-contiguous slices, D = 24 (padded to 32)
    ek = torch.randn(2, 2, 3, 24, generator=g, dtype=torch.float64)
    p = _args.normalize(q, k, v, 4, 1, 1, False, 0.37, ek, ek)
    out, lse = fused.forward(q, k, v, p, ek, ek, return_lse=True)
    assert fake_kernel[0]["pd"]["scale"] == 0.37 and fake_kernel[0]["P"] == 32
    # padded columns are zero, the original ones are the inputs
    kq = fake_kernel[0]["q"]
    assert (kq[..., 24:] == 0).all() and torch.equal(kq[..., :24], q)
    rout, rlse = reference.attention(q, k, v, p, ek, ek, return_lse=True)
    torch.testing.assert_close(out, rout, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lse, rlse, rtol=1e-10, atol=1e-10)


def test_no_padding_no_copy_and_tile_of_padded_dim(fake_kernel):
    q, k, v, _, _ = _inputs((16, 16), 2, 2, 64, 64, 0)
    p = _args.normalize(q, k, v, 5)
    fused.forward(q, k, v, p)
    assert fake_kernel[0]["q"] is q and fake_kernel[0]["v"] is v
    # D = 96 runs at P = 128, where the build has the fast tile
    q, k, v, _, _ = _inputs((16, 16), 2, 2, 96, 96, 0)
    fused.forward(q, k, v, p)
    assert fake_kernel[1]["P"] == 128 and fake_kernel[1]["pd"]["tile"] == FAST
    fused.forward(q, k, v, p, tile="default")
    assert fake_kernel[2]["pd"]["tile"] == "default"


def _tile_of(table, mod, q, p, **kw):
    mod.forward(q, q, q, p, **kw)
    return table.forward_calls[-1]["pd"]["tile"]


def test_tiles_on_request_only(monkeypatch):
    """A compiled tile the policy never picks (q128w8 here) runs only through tile= or
    FASTNA_FUSED_TILE; an env tile that is not compiled falls back to "default"."""
    wide = "q128w8"
    monkeypatch.delenv("FASTNA_FUSED_TILE", raising=False)
    with faked(rows_for("fused_fwd", {32: {"default"}, 64: {"default", wide},
                                      128: {"default", FAST, wide}})) as table:
        q64 = _inputs((300,), 2, 2, 64, 64, 0)[0]
        q32 = _inputs((300,), 2, 2, 32, 32, 0)[0]
        q128 = _inputs((12, 12), 2, 2, 128, 128, 0)[0]
        p1 = _args.normalize(q64, q64, q64, 33, stride=4, dilation=2, is_causal=True)
        p2 = _args.normalize(q128, q128, q128, 5)
        assert _tile_of(table, fused, q64, p1) == "default"
        assert _tile_of(table, fused, q128, p2) == FAST
        assert _tile_of(table, fused, q64, p1, tile=wide) == wide
        with pytest.raises(ValueError, match="q128w8.*not compiled"):
            fused.forward(q32, q32, q32, _args.normalize(q32, q32, q32, 33), tile=wide)
        monkeypatch.setenv("FASTNA_FUSED_TILE", wide)
        assert _tile_of(table, fused, q128, p2) == wide
        assert _tile_of(table, fused, q32, _args.normalize(q32, q32, q32, 3)) == "default"
        out = fused.forward(q64, q64, q64, p1)
        assert table.forward_calls[-1]["pd"]["tile"] == wide
        torch.testing.assert_close(out, reference.attention(q64, q64, q64, p1), rtol=1e-10,
                                   atol=1e-10)


def test_small_window_policy(monkeypatch):
    """The policy picks the small-window tile where can_implement accepts it (here: windows
    up to 7), for the automatic tile of backends fused and hopper; FASTNA_SMALL_WINDOW=0,
    an explicit tile and FASTNA_FUSED_TILE keep it off; explain() says why it was not taken."""
    monkeypatch.delenv("FASTNA_FUSED_TILE", raising=False)
    monkeypatch.delenv("FASTNA_SMALL_WINDOW", raising=False)

    def rule(op, pd):
        if pd["tile"] == "small" and max(pd["kernel"]) > 7:
            return "window 9x9 does not fit the small tile"
        return ""

    rows = rows_for("fused_fwd", {64: {"default", "small", "hopper"}})
    with faked(rows, rule=rule) as table:
        q, k, v, _, _ = _inputs((16, 16), 2, 2, 64, 64, 0)
        p5, p9 = _args.normalize(q, k, v, 5), _args.normalize(q, k, v, 9)
        assert _tile_of(table, fused, q, p5) == "small"
        assert _tile_of(table, hopper, q, p5) == "small"
        assert _tile_of(table, fused, q, p9) == "default"
        assert _tile_of(table, hopper, q, p9) == "hopper"
        assert _tile_of(table, fused, q, p5, tile="default") == "default"
        choice = fused.choose(q, k, v, p9, notes=[])
        assert choice.tile == "default" and "does not fit the small tile" in choice.notes[0]
        monkeypatch.setenv("FASTNA_SMALL_WINDOW", "0")
        assert _tile_of(table, fused, q, p5) == "default"
        monkeypatch.delenv("FASTNA_SMALL_WINDOW")
        monkeypatch.setenv("FASTNA_FUSED_TILE", "default")
        assert _tile_of(table, fused, q, p5) == "default"
        assert _tile_of(table, hopper, q, p5) == "small"      # backend fused's knob only


def test_hopper_backward_tile_where_can_implement_takes_it():
    rows = rows_for("fused_fwd", {64: {"default", "hopper"}}) + \
        rows_for("fused_bwd", {64: {"default", "hopper"}})
    rule = (lambda op, pd: "dilation: no TMA map" if op == "fused_bwd" and pd["tile"] == "hopper"
            and max(pd["dilation"]) > 1 else "")
    with faked(rows, rule=rule):
        q, k, v, _, _ = _inputs((16, 16), 2, 2, 64, 64, 0)
        assert hopper.choose(q, k, v, _args.normalize(q, k, v, 3)).bwd_tile == "hopper"
        assert hopper.choose(q, k, v, _args.normalize(q, k, v, 3, dilation=2)).bwd_tile == \
            "default"
        assert fused.choose(q, k, v, _args.normalize(q, k, v, 3)).bwd_tile == "default"


def test_zero_extra_tokens_and_empty_batch(fake_kernel):
    q, k, v, _, _ = _inputs((9,), 2, 1, 16, 8, 0)
    ek, ev = q.new_zeros(2, 0, 1, 16), q.new_zeros(2, 0, 1, 8)
    p = _args.normalize(q, k, v, 3, additional_keys=ek, additional_values=ev)
    out, lse = fused.forward(q, k, v, p, ek, ev, return_lse=True)
    rout, rlse = reference.attention(q, k, v, p, return_lse=True)
    torch.testing.assert_close(out, rout, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lse, rlse, rtol=1e-10, atol=1e-10)
    q0, k0, v0, ek0, ev0 = _inputs((9,), 2, 1, 16, 8, 3, B=0)
    out, lse = fused.forward(q0, k0, v0, p, ek0, ev0, return_lse=True)
    assert out.shape == (0, 9, 2, 8) and lse.shape == (0, 9, 2)


def test_extras_chunked_through_forward(fake_kernel, monkeypatch):
    """A small memory budget forces the query chunking (with checkpoint) inside forward."""
    orig = _merge.attend_and_merge
    monkeypatch.setattr(_merge, "attend_and_merge",
                        lambda *a, **kw: orig(*a, max_bytes=4096))
    q, k, v, ek, ev = _inputs((6, 5), 2, 2, 8, 8, 4, seed=8)
    leaves = [t.requires_grad_() for t in (q, k, v, ek, ev)]
    p = _args.normalize(q, k, v, 3, 1, 1, False, None, ek, ev)
    assert _merge.chunk_tokens(2, 30, 2, 8, 8, 4, 8, 4096) < 30
    out, lse = fused.forward(q, k, v, p, ek, ev, return_lse=True)
    grads = torch.autograd.grad([out, lse], leaves, [torch.ones_like(out), torch.ones_like(lse)])
    ref = [t.detach().clone().requires_grad_() for t in leaves]
    rout, rlse = reference.attention(*ref[:3], p, *ref[3:], return_lse=True)
    torch.testing.assert_close(out, rout, rtol=1e-10, atol=1e-10)
    rgrads = torch.autograd.grad([rout, rlse], ref, [torch.ones_like(rout), torch.ones_like(rlse)])
    for a, b in zip(grads, rgrads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------- float32 (TF32) policy

@pytest.mark.parametrize("tf32", [False, True])
def test_float32_auto_selection_follows_allow_tf32(tf32, set_tf32):
    """backend=None runs float32 on the fused (TF32) kernel only while torch allows TF32
    matmuls; an explicit backend="fused" always does; 16-bit dtypes ignore the switch.
    (Only fused_fwd rows: hopper, gemm and naive decline.)"""
    from fastna import backends
    set_tf32(tf32)
    q, k, v, _, _ = _inputs((8, 8), 2, 2, 32, 32, 0, dtype=torch.float32)
    p = _args.normalize(q, k, v, 3)
    with faked(rows_for("fused_fwd", {32: {"default"}})) as table:
        want = fused if tf32 else backends.reference
        assert backends.select(None, q, k, v, p) is want
        assert backends.select("fused", q, k, v, p) is fused
        why = fused.check_auto(q, k, v, p)
        assert (why is None) == tf32
        if why is not None:
            assert "allow_tf32" in why and why.exc is TypeError
            assert "allow_tf32" in fastna.explain(q, k, v, 3)
        for dtype in (torch.float16, torch.bfloat16):
            qh, kh, vh = (t.to(dtype) for t in (q, k, v))
            assert fused.check_auto(qh, kh, vh, p) is None
            assert backends.select(None, qh, kh, vh, p) is fused
        # through the public API: the reference when declined, the (fake) kernel when taken
        fastna.na2d(q, k, v, 3)
        assert [c["q"].dtype for c in table.forward_calls] == ([torch.float32] if tf32 else [])


def test_float32_dtype_checks():
    """fused.check takes float32 (TF32) and names float64; hopper declines float32 itself;
    CPU tensors are not CUDA tensors."""
    rows = [row("fused_fwd", "default", 2, torch.float32, 32),
            row("fused_fwd", "hopper", 2, torch.float16, 32, sm=90, arch="90a")]
    with faked(rows, cpu_cc=None, machine_cc=90):
        q, k, v, _, _ = _inputs((8, 8), 2, 2, 32, 32, 0)
        p = _args.normalize(q, k, v, 3)
        why = fused.check(q, k, v, p)                        # float64
        assert why.exc is TypeError and "float16, bfloat16 and float32" in why
        q32, k32, v32 = q.float(), k.float(), v.float()
        why = fused.check(q32, k32, v32, p)                  # past the dtype: the CPU device
        assert why.exc is ValueError and "CUDA tensors" in why
        why = hopper.check(q32, k32, v32, p)
        assert why.exc is TypeError and "float16 and bfloat16" in why and "backend='fused'" in why


def test_float32_rows_are_4_element_chunks():
    """16-byte rows: float32 strides in multiples of 4 elements, 16-bit ones of 8."""
    big = torch.zeros(2, 10, 3, 36)
    q = big[..., :32]                                   # strides (1080, 108, 36, 1)
    assert _layout.aligned(q) and _layout.aligned(big)
    assert not _layout.aligned(big.half()[..., :32])
    assert not _layout.aligned(torch.zeros(2, 10, 3, 34)[..., :32])
    assert not _layout.aligned(torch.zeros(2, 10, 3, 33)[..., 1:])


def test_float32_backward_falls_back_to_naive(monkeypatch):
    """No fused_bwd instance exists for float32: the backward mode is "naive" (or "reference"
    with a gradient into the lse), while 16-bit inputs take the fused backward."""
    monkeypatch.delenv("FASTNA_FUSED_BACKWARD", raising=False)
    rows = rows_for("fused_fwd", {32: {"default"}}) + \
        rows_for("fused_bwd", {32: {"default"}}, dtypes=(torch.float16, torch.bfloat16)) + \
        rows_for("naive_bwd", {0: {"default"}})
    with faked(rows):
        for dtype, want in ((torch.float32, "naive"), (torch.float16, "fused")):
            q, k, v, _, _ = _inputs((8, 8), 2, 2, 32, 32, 0, dtype=dtype)
            p = _args.normalize(q, k, v, 3)
            runs = fused.choose(q, k, v, p).bwd_runs
            assert runs == (dtype != torch.float32)
            assert _policy.backward_mode(q, p, runs, False) == want
            assert _policy.backward_mode(q, p, runs, True) == ("reference" if want == "naive"
                                                                else want)
