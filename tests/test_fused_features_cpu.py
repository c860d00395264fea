"""The fused backend's wrapper logic on CPU: head-dim padding, Dv != D, additional KV tokens.

The compiled kernel is replaced (monkeypatched fastna.backends.fused._kernel) by the
reference run on exactly what the kernel would receive, and the compiled head dims by a fixed
list, so the padding, the lse merge and their autograd are checked against the reference in
CI without a GPU.  The kernel itself is checked in tests/test_fused_gpu.py.
"""
import math

import pytest
import torch

from fastna import _args, reference
from fastna.backends import _merge, fused

DIMS = {32: {"default"}, 64: {"default"}, 128: {"default", fused.FAST_TILE}}


@pytest.fixture
def fake_kernel(monkeypatch):
    """Compiled head dims DIMS; the kernel = the reference.  Returns the list of kernel calls."""
    calls = []

    def kernel(q, k, v, params, pd):
        P = q.shape[-1]
        assert k.shape[-1] == v.shape[-1] == P == pd["dim"] == pd["dim_v"]
        assert P in DIMS and pd["num_extra"] == 0
        assert pd["scale"] == params.scale
        assert pd["tile"] in DIMS[P]
        assert fused._aligned(q) and fused._aligned(k) and fused._aligned(v)
        # Never where it could record a graph: inside the autograd Function, or without grads.
        assert not torch.is_grad_enabled() or not (q.requires_grad or k.requires_grad or v.requires_grad)
        calls.append(dict(P=P, pd=pd, q=q, k=k, v=v))
        out, lse = reference.attention(q, k, v, params, return_lse=True)
        return out, lse.float() if q.dtype != torch.float64 else lse

    monkeypatch.setattr(fused, "_kernel", kernel)
    monkeypatch.setattr(fused, "_device_instances", lambda rank, dtype, device: DIMS)
    return calls


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _inputs(shape, H, Hkv, D, Dv, E, dtype=torch.float64, seed=0, B=2):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)

    q, k, v = r(B, *shape, H, D), r(B, *shape, Hkv, D), r(B, *shape, Hkv, Dv)
    ek = r(B, E, Hkv, D) if E else None
    ev = r(B, E, Hkv, Dv) if E else None
    return q, k, v, ek, ev


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

def test_head_dim_for():
    dims = {32: 0, 64: 0, 128: 0}
    assert fused._head_dim_for(32, 32, dims) == 32
    assert fused._head_dim_for(8, 8, dims) == 32
    assert fused._head_dim_for(40, 40, dims) == 64
    assert fused._head_dim_for(64, 32, dims) == 64
    assert fused._head_dim_for(32, 128, dims) == 128
    assert fused._head_dim_for(5, 3, dims) == 32
    assert fused._head_dim_for(200, 200, dims) is None
    assert fused._head_dim_for(200, 200, {**dims, 256: 0}) == 256
    assert fused._head_dim_for(64, 64, {}) is None


def test_check_problem_accepts_padding_and_declines_too_large():
    p = _args.normalize(*_inputs((8, 8), 2, 2, 64, 64, 0)[:3], 3)
    for D, Dv in [(64, 64), (40, 40), (8, 8), (64, 32), (32, 128), (5, 3)]:
        q, k, v, _, _ = _inputs((8, 8), 2, 2, D, Dv, 0, dtype=torch.float16)
        assert fused._check_problem(q, v, p, DIMS) is None, (D, Dv)
    q, k, v, _, _ = _inputs((8, 8), 2, 2, 200, 200, 0, dtype=torch.float16)
    why = fused._check_problem(q, v, p, DIMS)
    assert why is not None and "head dim 200 not instantiated" in why
    assert "built: 32, 64, 128" in why and ">= 200" in why
    assert isinstance(why.error("fused"), NotImplementedError)
    q, k, v, _, _ = _inputs((8, 8), 2, 2, 64, 144, 0, dtype=torch.float16)
    assert "D=64, Dv=144" in fused._check_problem(q, v, p, DIMS)


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
    assert call["P"] == fused._head_dim_for(D, Dv, DIMS)
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
def test_gradient_of_out_only(E, fake_kernel):
    """No lse gradient from the caller: with extras the merge still sends one into the
    kernel's lse (and the backward must use it)."""
    q, k, v, ek, ev = _inputs((11, 7), 4, 2, 40, 24, E, seed=5)
    leaves = [t.requires_grad_() for t in (q, k, v, ek, ev) if t is not None]
    p = _args.normalize(q, k, v, (3, 5), 1, (2, 1), False, None, ek, ev)
    seen = []
    orig = fused._reference_backward

    def spy(q_, k_, v_, params, dout, dlse):
        seen.append(dlse is not None)
        return orig(q_, k_, v_, params, dout, dlse)

    fused._reference_backward, saved = spy, fused._reference_backward
    try:
        out = fused.forward(q, k, v, p, ek, ev)
        dout = torch.randn_like(out)
        grads = torch.autograd.grad(out, leaves, dout)
    finally:
        fused._reference_backward = saved
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
    # D = 96 runs at P = 128, where rank 2 has the fast tile
    q, k, v, _, _ = _inputs((16, 16), 2, 2, 96, 96, 0)
    fused.forward(q, k, v, p)
    assert fake_kernel[1]["P"] == 128 and fake_kernel[1]["pd"]["tile"] == fused.FAST_TILE
    fused.forward(q, k, v, p, tile="default")
    assert fake_kernel[2]["pd"]["tile"] == "default"


def test_wide_tile_only_on_request(fake_kernel, monkeypatch):
    """q128w8 (8 warps, 128-query box) is compiled for ranks 1, 2 at head dims 64, 128 but never
    picked automatically: only through tile= or FASTNA_FUSED_TILE."""
    monkeypatch.setitem(DIMS, 64, {"default", fused.WIDE_TILE})
    monkeypatch.setitem(DIMS, 128, {"default", fused.FAST_TILE, fused.WIDE_TILE})
    monkeypatch.delenv("FASTNA_FUSED_TILE", raising=False)
    assert fused._QBOX[fused.WIDE_TILE] == {1: (128,), 2: (16, 8)}
    dev = torch.device("cpu")
    # (the fake instance list is the same for every rank)
    assert fused._pick_tile(1, torch.bfloat16, 64, dev) == "default"
    assert fused._pick_tile(2, torch.bfloat16, 128, dev) == fused.FAST_TILE
    assert fused._pick_tile(1, torch.bfloat16, 64, dev, fused.WIDE_TILE) == fused.WIDE_TILE
    with pytest.raises(ValueError, match="q128w8.*not compiled"):
        fused._pick_tile(1, torch.bfloat16, 32, dev, fused.WIDE_TILE)
    monkeypatch.setenv("FASTNA_FUSED_TILE", fused.WIDE_TILE)
    assert fused._pick_tile(2, torch.bfloat16, 128, dev) == fused.WIDE_TILE
    assert fused._pick_tile(1, torch.bfloat16, 32, dev) == "default"   # not built there
    # through forward(): the tile reaches the kernel, results are the reference's
    q, k, v, _, _ = _inputs((300,), 2, 1, 64, 64, 0)
    p = _args.normalize(q, k, v, 33, stride=4, dilation=2, is_causal=True)
    out = fused.forward(q, k, v, p)
    assert fake_kernel[-1]["pd"]["tile"] == fused.WIDE_TILE
    torch.testing.assert_close(out, reference.attention(q, k, v, p), rtol=1e-10, atol=1e-10)
    monkeypatch.delenv("FASTNA_FUSED_TILE")
    fused.forward(q, k, v, p, tile=fused.WIDE_TILE)
    assert fake_kernel[-1]["pd"]["tile"] == fused.WIDE_TILE
    fused.forward(q, k, v, p)
    assert fake_kernel[-1]["pd"]["tile"] == "default"
    # the grid check knows the tile's query box (128 tokens per CTA in 1D)
    assert fused._grid_ok(p, (300,), fused.WIDE_TILE)


def test_small_window_allowed_only_for_the_automatic_tile(fake_kernel, monkeypatch):
    """The wrapper runs the small-window tile (pd["forward_tile"] = "small", where the compiled
    module's can_implement takes the problem) only in place of its own choice or "hopper";
    FASTNA_SMALL_WINDOW=0 and explicit tiles keep it off."""
    monkeypatch.delenv("FASTNA_FUSED_TILE", raising=False)
    monkeypatch.delenv("FASTNA_SMALL_WINDOW", raising=False)
    monkeypatch.setitem(DIMS, 64, {"default", "hopper"})
    monkeypatch.setattr(fused._ext, "can_implement", lambda op, pd: "" if pd["tile"] == fused.SMALL_TILE else "no")
    q, k, v, _, _ = _inputs((16, 16), 2, 2, 64, 64, 0)
    p = _args.normalize(q, k, v, 5)
    fused.forward(q, k, v, p)
    assert fake_kernel[-1]["pd"].get("forward_tile") == fused.SMALL_TILE
    fused.forward(q, k, v, p, tile="hopper")
    assert fake_kernel[-1]["pd"].get("forward_tile") == fused.SMALL_TILE
    assert fake_kernel[-1]["pd"]["tile"] == "hopper"   # the backward's
    fused.forward(q, k, v, p, tile="default")
    assert "forward_tile" not in fake_kernel[-1]["pd"]
    monkeypatch.setenv("FASTNA_SMALL_WINDOW", "0")
    fused.forward(q, k, v, p)
    assert "forward_tile" not in fake_kernel[-1]["pd"]
    monkeypatch.delenv("FASTNA_SMALL_WINDOW")
    monkeypatch.setenv("FASTNA_FUSED_TILE", "default")
    fused.forward(q, k, v, p)
    assert "forward_tile" not in fake_kernel[-1]["pd"]


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

@pytest.fixture
def fake_backends(monkeypatch):
    """Only "fused" (its check() passing: the kernel takes the call) and the reference are
    available; "hopper", "gemm" and "naive" are not."""
    from fastna.backends import gemm, hopper, naive
    monkeypatch.setattr(fused, "available", lambda: True)
    monkeypatch.setattr(fused, "check", lambda *a, **kw: None)
    for mod in (hopper, gemm, naive):
        monkeypatch.setattr(mod, "available", lambda: False)


@pytest.mark.parametrize("allow_tf32", [False, True])
def test_float32_auto_selection_follows_allow_tf32(allow_tf32, fake_backends, monkeypatch):
    """backend=None runs float32 on the fused (TF32) kernel only while torch allows TF32
    matmuls; an explicit backend="fused" always does; 16-bit dtypes ignore the switch."""
    from fastna import backends
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", allow_tf32)
    q, k, v, _, _ = _inputs((8, 8), 2, 2, 32, 32, 0, dtype=torch.float32)
    p = _args.normalize(q, k, v, 3)
    want = fused if allow_tf32 else backends.reference
    assert backends.select(None, q, k, v, p) is want
    assert backends.select("fused", q, k, v, p) is fused
    why = fused.check_auto(q, k, v, p)
    assert (why is None) == allow_tf32
    if why is not None:
        assert "allow_tf32" in why and why.exc is TypeError
    for dtype in (torch.float16, torch.bfloat16):
        qh, kh, vh = (t.to(dtype) for t in (q, k, v))
        assert fused.check_auto(qh, kh, vh, p) is None
        assert backends.select(None, qh, kh, vh, p) is fused
    # through the public API: the reference when declined, the (fake) kernel when taken
    calls = []
    monkeypatch.setattr(fused, "forward", lambda *a, **kw: calls.append(a[0].dtype) or a[0])
    import fastna
    fastna.na2d(q, k, v, 3)
    assert calls == ([torch.float32] if allow_tf32 else [])


def test_float32_dtype_checks(monkeypatch):
    """fused.check takes float32 (TF32) and names float64; hopper declines float32 itself."""
    from fastna.backends import hopper
    monkeypatch.setattr(fused, "instances", lambda: [(2, "float32", 32, "default", 80, "80")])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    q, k, v, _, _ = _inputs((8, 8), 2, 2, 32, 32, 0)
    p = _args.normalize(q, k, v, 3)
    why = fused.check(q, k, v, p)                        # float64
    assert why.exc is TypeError and "float16, bfloat16 and float32" in why
    q32, k32, v32 = q.float(), k.float(), v.float()
    why = fused.check(q32, k32, v32, p)                  # past the dtype: the CPU device
    assert why.exc is ValueError and "CUDA tensors" in why
    monkeypatch.setattr(fused, "check", lambda *a, **kw: None)   # say the kernel takes it
    why = hopper.check(q32, k32, v32, p)
    assert why.exc is TypeError and "float16 and bfloat16" in why and "backend='fused'" in why


def test_float32_rows_are_4_element_chunks():
    """16-byte rows: float32 strides in multiples of 4 elements, 16-bit ones of 8."""
    big = torch.zeros(2, 10, 3, 36)
    q = big[..., :32]                                   # strides (1080, 108, 36, 1)
    assert fused._aligned(q) and fused._aligned(big)
    assert not fused._aligned(big.half()[..., :32])
    assert not fused._aligned(torch.zeros(2, 10, 3, 34)[..., :32])
    assert not fused._aligned(torch.zeros(2, 10, 3, 33)[..., 1:])


def test_float32_backward_falls_back_to_naive(monkeypatch):
    """No fused_bwd instance exists for float32: the backward mode is "naive" (or "reference"
    with a gradient into the lse), while 16-bit inputs take the fused backward."""
    from fastna import _ext
    monkeypatch.setattr(fused, "bwd_instances", lambda: [
        (2, "float16", 32, "default", 80, "80"), (2, "bfloat16", 32, "default", 80, "80")])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (2**34, 2**35))
    monkeypatch.setattr(_ext, "has_instance", lambda kernel, rank, dtype, device: True)
    monkeypatch.delenv("FASTNA_FUSED_BACKWARD", raising=False)
    cuda = torch.device("cuda", 0)
    assert fused._bwd_head_dims(2, torch.float32, cuda) == set()
    assert fused._bwd_head_dims(2, torch.float16, cuda) == {32}
    # _fused_backward_ok reads the tensors' device: ask for the fake CUDA device's answer
    real = fused._bwd_head_dims
    monkeypatch.setattr(fused, "_bwd_head_dims", lambda r, dt, dev: real(r, dt, cuda))
    for dtype, want in ((torch.float32, "naive"), (torch.float16, "fused")):
        q, k, v, _, _ = _inputs((8, 8), 2, 2, 32, 32, 0, dtype=dtype)
        p = _args.normalize(q, k, v, 3)
        assert fused._backward_mode(q, k, p, False, v) == want
        assert fused._backward_mode(q, k, p, True, v) == ("reference" if want == "naive" else want)
