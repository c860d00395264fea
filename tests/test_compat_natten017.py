"""The NATTEN 0.17 surface of the `natten` shim: switches and probes, nn modules, and the call
patterns of StyleNAT, NAT/DiNAT and k-diffusion's HDiT, on the CPU.

Expected numbers come from a dense implementation written here from the window definition of
fastna.reference (itself checked against fastna.reference.attention), not from the ops under
test. Every test restores what it touches: the shim (installed and removed per test), the
shim's switches, torch's TF32 and deterministic flags.
"""
import inspect
import itertools
import logging

import pytest
import torch

import fastna
from fastna import compat, reference
from fastna import NAParams
from fastna.compat import natten_context as ctx

REQ = inspect.Parameter.empty


@pytest.fixture
def natten():
    saved = ctx.snapshot()
    saved_tf32 = torch.backends.cuda.matmul.allow_tf32
    saved_det = torch.are_deterministic_algorithms_enabled()
    mod = compat.install_natten_shim()
    try:
        yield mod
    finally:
        compat.uninstall_natten_shim()
        ctx.restore(saved)
        torch.backends.cuda.matmul.allow_tf32 = saved_tf32
        torch.use_deterministic_algorithms(saved_det)


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------- the dense reference

def _slots(L, K, d, causal):
    """Per query i: for each window slot t, (absolute key or None, rpb index)."""
    table = []
    for i in range(L):
        start, end = reference.window(L, K, 1, d, causal, i)
        g, il = i % d, i // d
        table.append([((start + t) * d + g if start + t < end else None, start + t - il + K - 1)
                      for t in range(K)])
    return table


def dense_weights(q, k, kernel, dil, causal, rpb=None):
    """Heads-last q, k [B, *S, H, D] -> [B, *S, H, prod(K)]: q.k (+ rpb), -inf off-window."""
    spatial = q.shape[1:-2]
    tables = [_slots(L, K, d, c) for L, K, d, c in zip(spatial, kernel, dil, causal)]
    out = torch.full((*q.shape[:-1], len(list(itertools.product(*map(range, kernel))))),
                     float("-inf"), dtype=q.dtype)
    for i in itertools.product(*map(range, spatial)):
        for w, slot in enumerate(itertools.product(*(tables[a][i[a]] for a in range(len(i))))):
            if any(key is None for key, _ in slot):
                continue
            j = tuple(key for key, _ in slot)
            val = (q[(slice(None), *i)] * k[(slice(None), *j)]).sum(-1)
            if rpb is not None:
                val = val + rpb[(slice(None), *(r for _, r in slot))]
            out[(slice(None), *i, slice(None), w)] = val
    return out


def dense_av(p, v, kernel, dil, causal):
    spatial = v.shape[1:-2]
    tables = [_slots(L, K, d, c) for L, K, d, c in zip(spatial, kernel, dil, causal)]
    out = torch.zeros_like(v)
    for i in itertools.product(*map(range, spatial)):
        for w, slot in enumerate(itertools.product(*(tables[a][i[a]] for a in range(len(i))))):
            if any(key is None for key, _ in slot):
                continue
            j = tuple(key for key, _ in slot)
            out[(slice(None), *i)] += p[(slice(None), *i, slice(None), w)][..., None] * \
                v[(slice(None), *j)]
    return out


def dense_na(q, k, v, kernel, dil, causal, scale, rpb=None):
    """Heads-last neighborhood attention with optional rpb."""
    return dense_av(dense_weights(q * scale, k, kernel, dil, causal, rpb).softmax(-1), v,
                    kernel, dil, causal)


@pytest.mark.parametrize("spatial,kernel,dil,causal", [
    ((9, 10), (3, 5), (2, 1), (False, True)),
    ((5, 6, 7), (3, 3, 3), (1, 2, 2), (True, False, False)),
])
def test_dense_reference_matches_fastna_reference(spatial, kernel, dil, causal):
    q, k, v = (rand(2, *spatial, 2, 4, seed=s) for s in (1, 2, 3))
    params = NAParams(len(spatial), kernel, (1,) * len(spatial), dil, causal, 0.5)
    torch.testing.assert_close(dense_na(q, k, v, kernel, dil, causal, 0.5),
                               reference.attention(q, k, v, params))


# --------------------------------------------------------------------- switches and probes

def _params(fn):
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


# NATTEN 0.17.4's signatures (natten/context.py): name -> [(param, default or REQ)].
SWITCHES = {
    "use_fused_na": [("mode", True), ("kv_parallel", True)],
    "use_fna": [("mode", True), ("kv_parallel", True)],
    "use_kv_parallelism_in_fused_na": [("mode", True)],
    "use_deterministic_algorithms": [("mode", True)],
    "set_memory_usage_preference": [("pref", "default")],
    "use_autotuner": [(n, None) for n in (
        "forward_pass", "backward_pass", "thorough_mode_forward", "thorough_mode_backward",
        "warmup_steps_forward", "warmup_steps_backward", "steps_forward", "steps_backward")],
    "use_tf32_in_gemm_na": [("mode", True)],
    "use_tiled_na": [("mode", True)],
    "use_gemm_na": [("mode", True)],
    **{n: [("device_index", None)] for n in (
        "has_half", "has_bfloat", "has_gemm", "has_fna", "has_fused_na", "has_tf32_gemm",
        "has_fp32_gemm", "has_fp64_gemm")},
    **{n: [] for n in (
        "has_cuda", "is_fused_na_enabled", "is_fna_enabled", "are_deterministic_algorithms_enabled",
        "is_kv_parallelism_in_fused_na_enabled", "get_memory_usage_preference",
        "is_memory_usage_default", "is_memory_usage_strict", "is_memory_usage_unrestricted",
        "disable_autotuner", "is_autotuner_enabled", "is_autotuner_enabled_for_forward",
        "is_autotuner_enabled_for_backward", "is_autotuner_thorough_for_forward",
        "is_autotuner_thorough_for_backward", "is_tf32_in_gemm_na_enabled",
        "is_tiled_na_enabled", "is_gemm_na_enabled", "enable_tf32", "disable_tf32",
        "enable_gemm_na", "disable_gemm_na", "enable_tiled_na", "disable_tiled_na")},
}


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_switch_signatures_match_natten_0_17_4(natten, name):
    assert _params(getattr(natten, name)) == SWITCHES[name]
    assert getattr(natten.context, name) is getattr(natten, name)


def test_fused_na_and_kv_parallel_switches(natten):
    assert not natten.is_fused_na_enabled() and natten.is_kv_parallelism_in_fused_na_enabled()
    natten.use_fused_na()
    assert natten.is_fused_na_enabled() and natten.is_fna_enabled()
    assert natten.is_kv_parallelism_in_fused_na_enabled()
    natten.use_fna(False)
    assert not natten.is_fused_na_enabled() and not natten.is_kv_parallelism_in_fused_na_enabled()
    natten.use_fused_na(True, kv_parallel=False)
    assert natten.is_fused_na_enabled() and not natten.is_kv_parallelism_in_fused_na_enabled()


def test_deterministic_mode_refuses_what_0_17_refused(natten):
    natten.use_deterministic_algorithms()
    assert natten.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError, match="deterministic"):
        natten.use_kv_parallelism_in_fused_na(True)
    with pytest.raises(RuntimeError, match="deterministic"):
        natten.use_fused_na(True)  # asks for KV parallelism by default
    with pytest.raises(RuntimeError, match="deterministic"):
        natten.use_autotuner(True)
    natten.use_fused_na(True, kv_parallel=False)
    natten.use_deterministic_algorithms(False)
    # torch's own deterministic mode: 0.17 ignored the request (with a warning).
    torch.use_deterministic_algorithms(True)
    natten.use_kv_parallelism_in_fused_na(True)
    natten.use_autotuner(True, True)
    assert not natten.is_kv_parallelism_in_fused_na_enabled()
    assert not natten.is_autotuner_enabled()


def test_autotuner_switch(natten):
    natten.use_autotuner(True)  # StyleNAT's call
    assert natten.is_autotuner_enabled_for_forward()
    assert not natten.is_autotuner_enabled_for_backward()
    natten.use_autotuner(backward_pass=True, thorough_mode_forward=True, steps_forward=3)
    assert natten.is_autotuner_enabled() and natten.is_autotuner_thorough_for_forward()
    assert ctx.STATE.steps_forward == 3
    natten.use_autotuner(False, False)
    assert not natten.is_autotuner_enabled() and natten.is_autotuner_thorough_for_forward()
    natten.disable_autotuner()
    assert not natten.is_autotuner_thorough_for_forward()
    with pytest.raises(ValueError, match="forward_pass"):
        natten.use_autotuner(forward_pass=1)
    with pytest.raises(ValueError, match="steps_backward"):
        natten.use_autotuner(steps_backward=2.0)


def test_memory_preference(natten):
    assert natten.is_memory_usage_default()
    natten.set_memory_usage_preference("strict")
    assert natten.is_memory_usage_strict()
    assert natten.get_memory_usage_preference() == ctx.MemoryUsagePreference.Strict
    natten.set_memory_usage_preference("unrestricted")
    assert natten.is_memory_usage_unrestricted()
    with pytest.raises(ValueError, match="'loose'"):
        natten.set_memory_usage_preference("loose")


def test_kernel_switches(natten):
    assert natten.is_gemm_na_enabled() and natten.is_tiled_na_enabled()
    assert natten.disable_gemm_na() is False and natten.disable_tiled_na() is False
    # use_gemm_na(False) sends the unfused ops to fastna's reference backend.
    from fastna.compat import natten as F
    assert F._unfused_backend() == "reference"
    assert natten.enable_gemm_na() and F._unfused_backend() is None
    # TF32 in the GEMM kernels is torch's switch.
    natten.use_tf32_in_gemm_na(False)
    assert not torch.backends.cuda.matmul.allow_tf32 and not natten.is_tf32_in_gemm_na_enabled()
    assert natten.enable_tf32() and torch.backends.cuda.matmul.allow_tf32


def test_probes_answer_for_fastna(natten):
    cuda = torch.cuda.is_available()
    assert natten.has_cuda() == cuda and natten.has_half() == cuda
    assert natten.has_fused_na is natten.has_fna and natten.has_fp32_gemm is natten.has_tf32_gemm
    fused_built = any(b in ("fused", "hopper") for b in fastna.available_backends())
    assert natten.has_fused_na() == (cuda and fused_built)
    gemm_built = "gemm" in fastna.ops_unfused.available_backends()
    assert natten.has_gemm() == (cuda and gemm_built)
    assert not natten.has_fp64_gemm()


def test_package_layout(natten):
    import natten.context
    import natten.functional
    import natten.na2d
    import natten.types
    import natten.utils
    from natten.utils import check_all_args, log

    assert hasattr(natten, "context")  # how NAT/DiNAT code tells 0.17 from older releases
    assert natten.na2d.NeighborhoodAttention2D is natten.NeighborhoodAttention2D
    assert natten.experimental.na2d is natten.functional.na2d
    assert check_all_args(2, 7, None, None) == ((7, 7), (1, 1), (False, False))
    assert check_all_args(3, [3, 5, 7], (1, 2, 1), [True, False, False]) == \
        ((3, 5, 7), (1, 2, 1), (True, False, False))
    assert isinstance(log.get_logger("x"), logging.Logger)
    assert natten.types.Dimension2DTypeOrDed is not None and natten.types.NoneType is type(None)
    with pytest.raises(ValueError, match="kernel_size"):
        check_all_args(2, (7,), 1, False)


# --------------------------------------------------------------------------------- modules

MODULE_PARAMS = [("dim", REQ), ("num_heads", REQ), ("kernel_size", REQ), ("dilation", 1),
                 ("is_causal", False), ("rel_pos_bias", False), ("qkv_bias", True),
                 ("qk_scale", None), ("attn_drop", 0.0), ("proj_drop", 0.0)]


@pytest.mark.parametrize("rank,kernel,rpb_shape", [
    (1, 5, (4, 9)), (2, (3, 5), (4, 5, 9)), (3, 3, (4, 5, 5, 5))])
def test_module_constructor_and_state_dict(natten, rank, kernel, rpb_shape):
    cls = getattr(natten, f"NeighborhoodAttention{rank}D")
    assert _params(cls.__init__)[1:] == MODULE_PARAMS
    m = cls(32, 4, kernel, rel_pos_bias=True)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "qkv.weight": (96, 32), "qkv.bias": (96,), "rpb": rpb_shape, "proj.weight": (32, 32),
        "proj.bias": (32,)}
    assert m.rpb.abs().max() <= 2 and m.head_dim == 8 and m.scale == 8 ** -0.5
    assert m.kernel_size == (kernel,) * rank if isinstance(kernel, int) else kernel
    plain = cls(32, 4, kernel, qkv_bias=False, qk_scale=0.25)
    assert set(plain.state_dict()) == {"qkv.weight", "proj.weight", "proj.bias"}
    assert plain.rpb is None and plain.scale == 0.25
    # A checkpoint with 0.17's keys loads strictly.
    cls(32, 4, kernel, rel_pos_bias=True).load_state_dict(m.state_dict())


def _module_reference(m, x):
    r = m.rank
    B, *spatial, C = x.shape
    q, k, v = torch.nn.functional.linear(x, m.qkv.weight, m.qkv.bias).reshape(
        B, *spatial, 3, m.num_heads, m.head_dim).unbind(r + 1)
    out = dense_na(q, k, v, m.kernel_size, m.dilation, m.is_causal, m.scale,
                   None if m.rpb is None else m.rpb.detach())
    return torch.nn.functional.linear(out.reshape(B, *spatial, C), m.proj.weight, m.proj.bias)


@pytest.mark.parametrize("rank,spatial,kw", [
    (1, (11,), dict(kernel_size=5, dilation=2, rel_pos_bias=True)),
    (2, (7, 9), dict(kernel_size=(3, 5), dilation=(2, 1), rel_pos_bias=True)),
    (2, (7, 9), dict(kernel_size=3, is_causal=(True, False))),
    (3, (4, 5, 6), dict(kernel_size=3, dilation=(1, 1, 2), rel_pos_bias=True)),
])
@pytest.mark.parametrize("fused", [False, True])
def test_module_forward_matches_reference(natten, rank, spatial, kw, fused):
    torch.manual_seed(0)
    m = getattr(natten, f"NeighborhoodAttention{rank}D")(16, 2, **kw).double().eval()
    natten.use_fused_na(fused)
    x = rand(2, *spatial, 16, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _module_reference(m, x))


def test_module_training_paths(natten):
    torch.manual_seed(1)
    m = natten.NeighborhoodAttention2D(16, 2, 3, rel_pos_bias=True).double()
    x = rand(1, 6, 7, 16, seed=2)
    m(x).sum().backward()  # unfused: trains rpb
    assert m.rpb.grad is not None and m.rpb.grad.abs().sum() > 0
    natten.use_fused_na(True)
    with pytest.raises(NotImplementedError, match="positional biases"):
        m(x).sum().backward()  # 0.17's fused kernels ran rpb in inference only
    m.rpb = None
    m(x).sum().backward()
    assert m.qkv.weight.grad is not None


def test_module_attention_dropout_on_the_unfused_path(natten):
    torch.manual_seed(3)
    m = natten.NeighborhoodAttention2D(16, 2, 3, attn_drop=0.5).double()
    x = rand(1, 5, 6, 16, seed=4)
    m.eval()
    ref = m(x)
    m.train()
    assert not torch.allclose(m(x), ref)


def test_module_rejections_and_dropout_notice(natten, caplog):
    with pytest.raises(NotImplementedError, match="causal"):
        natten.NeighborhoodAttention2D(16, 2, 3, is_causal=True, rel_pos_bias=True)
    with pytest.raises(ValueError, match="odd kernel"):
        natten.NeighborhoodAttention1D(16, 2, 4)
    m = natten.NeighborhoodAttention2D(16, 2, 7, dilation=2)
    with pytest.raises(ValueError, match="does not pad"):
        m(torch.randn(1, 13, 14, 16))  # 0.17 modules do not pad small inputs
    with pytest.raises(ValueError, match="rank-4"):
        m(torch.randn(1, 14, 16))
    natten.use_fused_na(True)
    d = natten.NeighborhoodAttention1D(16, 2, 3, attn_drop=0.5)
    with caplog.at_level(logging.ERROR, logger="natten.modules"):
        d(torch.randn(1, 5, 16))
    assert "attention dropout" in caplog.text


# ------------------------------------------------------- the three codebases' call patterns

def test_stylenat_hydra_attention_call_pattern(natten):
    """StyleNAT models/stylenat.py: imports and switches at module level, then per head group
    natten2dqkrpb(q, k, rpb, kernel, dilation) / natten2dav on chunks of a heads-first qkv."""
    from natten import use_autotuner, use_fused_na
    from natten.functional import natten2dav, natten2dqkrpb
    use_fused_na(True)
    use_autotuner(True)

    B, X, Y, heads, hd = 2, 8, 9, 6, 4
    kernels, dilations = [3, 3, 5], [1, 2, 1]
    # Uneven split of the heads as StyleNAT does when groups do not divide them.
    group_heads = [2, 2, 2]
    x = rand(B, X, Y, heads * hd, seed=3)
    w = rand(3 * heads * hd, heads * hd, seed=4) * 0.2
    rpbs = [rand(h, 2 * k - 1, 2 * k - 1, seed=10 + i) * 0.1
            for i, (h, k) in enumerate(zip(group_heads, kernels))]
    scale = hd ** -0.5
    qkv = (x @ w.T).reshape(B, X, Y, 3, heads, hd).permute(3, 0, 4, 1, 2, 5)
    q, k, v = qkv.chunk(3, dim=0)
    q, k, v = q.squeeze(0) * scale, k.squeeze(0), v.squeeze(0)
    outs, expect, h0 = [], [], 0
    for h, kern, dil, rpb in zip(group_heads, kernels, dilations, rpbs):
        qg, kg, vg = q[:, h0:h0 + h], k[:, h0:h0 + h], v[:, h0:h0 + h]
        attn = natten2dqkrpb(qg, kg, rpb, kern, dil).softmax(dim=-1)
        outs.append(natten2dav(attn, vg, kern, dil))
        expect.append(dense_na(*(t.movedim(1, -2) for t in (qg, kg, vg)), (kern, kern),
                               (dil, dil), (False, False), 1.0, rpb).movedim(-2, 1))
        h0 += h
    torch.testing.assert_close(torch.cat(outs, 1), torch.cat(expect, 1))


def test_nat_dinat_call_pattern(natten):
    """SHI-Labs NAT/DiNAT: `from natten import NeighborhoodAttention2D as NeighborhoodAttention`,
    rel_pos_bias chosen by hasattr(natten, "context"), dilation=None for NAT layers."""
    from natten import NeighborhoodAttention2D as NeighborhoodAttention
    extra_args = {"rel_pos_bias": True} if hasattr(natten, "context") else {"bias": True}

    class Layer(torch.nn.Module):
        def __init__(self, dim, heads, kernel, dilation):
            super().__init__()
            self.norm1 = torch.nn.LayerNorm(dim)
            self.attn = NeighborhoodAttention(dim, kernel_size=kernel, dilation=dilation,
                                              num_heads=heads, qkv_bias=True, qk_scale=None,
                                              attn_drop=0.0, proj_drop=0.0, **extra_args)

        def forward(self, x):
            return x + self.attn(self.norm1(x))

    torch.manual_seed(2)
    nat, dinat = Layer(16, 2, 3, None).double().eval(), Layer(16, 2, 3, 3).double().eval()
    assert set(dinat.state_dict()) == {"norm1.weight", "norm1.bias", "attn.qkv.weight",
                                       "attn.qkv.bias", "attn.rpb", "attn.proj.weight",
                                       "attn.proj.bias"}
    x = rand(2, 9, 10, 16, seed=5)
    with torch.no_grad():
        for layer in (nat, dinat):
            torch.testing.assert_close(layer(x), x + _module_reference(layer.attn,
                                                                       layer.norm1(x)))
    assert dinat.attn.dilation == (3, 3) and nat.attn.dilation == (1, 1)


@pytest.mark.parametrize("fused_branch", [False, True])
def test_kdiffusion_hdit_call_pattern(natten, fused_branch):
    """k-diffusion image_transformer_v2.py NeighborhoodSelfAttentionBlock: branches on
    natten.has_fused_na(); fused: heads-last na2d(q, k, v, kernel_size, scale=1.0); unfused:
    heads-first na2d_qk -> softmax -> .to(v.dtype) -> na2d_av."""
    assert natten.has_fused_na() == (torch.cuda.is_available() and any(
        b in ("fused", "hopper") for b in fastna.available_backends()))
    n, h, w, nh, e, kernel = 2, 7, 8, 2, 8, 5
    qkv = rand(n, h, w, 3 * nh * e, seed=6)
    if fused_branch:
        q, k, v = qkv.reshape(n, h, w, 3, nh, e).permute(3, 0, 1, 2, 4, 5)
        x = natten.functional.na2d(q, k, v, kernel, scale=1.0)
        x = x.reshape(n, h, w, nh * e)
    else:
        q, k, v = qkv.reshape(n, h, w, 3, nh, e).permute(3, 0, 4, 1, 2, 5)
        qk = natten.functional.na2d_qk(q, k, kernel)
        a = torch.softmax(qk, dim=-1).to(v.dtype)
        x = natten.functional.na2d_av(a, v, kernel)
        x = x.permute(0, 2, 3, 1, 4).reshape(n, h, w, nh * e)
    q, k, v = qkv.reshape(n, h, w, 3, nh, e).unbind(3)
    params = NAParams(2, (kernel, kernel), (1, 1), (1, 1), (False, False), 1.0)
    torch.testing.assert_close(x, reference.attention(q, k, v, params).reshape(n, h, w, nh * e))


# ------------------------------------------------------------------ 0.17.4's rejections

@pytest.mark.parametrize("call,exc,match", [
    (lambda F, q: F.na2d_qk(q, q, 4), ValueError, "odd kernel sizes"),
    (lambda F, q: F.na2d_qk(q, q, 1), ValueError, "odd kernel sizes"),
    (lambda F, q: F.na2d_qk(q, q, (3, 3), dilation=0), ValueError, "dilation"),
    (lambda F, q: F.na2d_qk(q, q, 7, dilation=1), ValueError, "does not pad"),
    (lambda F, q: F.na2d_qk(q, q[:, :1], 3), ValueError, "same shape"),
    (lambda F, q: F.na2d_qk(q, q, 3, is_causal=True, rpb=torch.zeros(2, 5, 5)),
     NotImplementedError, "causal"),
    (lambda F, q: F.na2d_av(q[..., :9], q[:, :1], 3), ValueError, "agree"),
    (lambda F, q: F.na2d(*(q.movedim(1, -2),) * 3, 3, additional_keys=q[:, :, 0]),
     ValueError, "both"),
    (lambda F, q: F.na2d(*(q.movedim(1, -2),) * 3, 3, is_causal=(True, False),
                         rpb=torch.zeros(2, 5, 5)), NotImplementedError, "causal"),
    (lambda F, q: F.na2d(q.movedim(1, -2), q.movedim(1, -2)[..., :1, :], q.movedim(1, -2), 3),
     ValueError, "same shape"),
    (lambda F, q: F.na2d_qk(q, q, 3, is_causal=1), ValueError, "is_causal"),
    (lambda F, q: F.na2d(*(q.movedim(1, -2),) * 3, 3, rpb=[0.0]), TypeError, "rpb"),
])
def test_rejections(natten, call, exc, match):
    with pytest.raises(exc, match=match):
        call(natten.functional, rand(2, 2, 6, 7, 4))


def test_dtype_casts_of_0_17():
    """qk casts rpb to the key's dtype and av casts the weights to the value's dtype."""
    from fastna.compat import natten as F
    q = rand(1, 2, 5, 6, 4)
    rpb = rand(2, 5, 5, dtype=torch.float32)
    attn = F.na2d_qk(q, q, 3, rpb=rpb)
    assert attn.dtype == torch.float64
    torch.testing.assert_close(attn, F.na2d_qk(q, q, 3, rpb=rpb.double()))
    out = F.na2d_av(attn.softmax(-1).float(), q, 3)
    assert out.dtype == torch.float64


def test_fused_additional_kv_and_scale_zero():
    from fastna.compat import natten as F
    q, k, v = (rand(2, 6, 7, 2, 4, seed=s) for s in (1, 2, 3))
    ek, ev = rand(2, 3, 2, 4, seed=4), rand(2, 3, 2, 4, seed=5)
    out = F.na2d(q, k, v, 3, additional_keys=ek, additional_values=ev, xformers_kwargs={})
    ref = fastna.neighborhood_attention(q, k, v, 3, additional_keys=ek, additional_values=ev,
                                        backend="reference")
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(F.na2d(q, k, v, 3, scale=0), F.na2d(q, k, v, 3, scale=None))
