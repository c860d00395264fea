"""HuggingFace transformers' DinatModel running on fastna through the NATTEN shim.

transformers decides whether natten exists when it is first imported, so the check runs in a
fresh interpreter: install the shim, import transformers, build a small random DiNAT, and
compare it against the same model whose natten calls are replaced by a dense masked
implementation written here from docs/SEMANTICS.md (no fastna code involved).
"""
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap

import pytest

import fastna


def _transformers_version():
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None


_TV = _transformers_version()
pytestmark = pytest.mark.skipif(
    _TV is None or not _TV.startswith("4.46."),
    reason=f"needs transformers 4.46.x (pip install transformers==4.46.3), found {_TV}")

SCRIPT = textwrap.dedent(r"""
    import json
    import os
    import torch

    import fastna
    import fastna.compat
    assert os.path.abspath(fastna.__file__) == os.environ["FASTNA_EXPECTED_FILE"], fastna.__file__
    fastna.compat.install_natten_shim()

    # CPU float32 by default; the GPU variant runs the model on CUDA in half precision, where
    # the shim's unfused ops pick the GEMM kernels (counted below), and compares it with the
    # same weights in float64 on the CPU through the dense implementation.
    DEVICE = os.environ.get("DINAT_DEVICE", "cpu")
    DTYPE = getattr(torch, os.environ.get("DINAT_DTYPE", "float32"))
    EMBED = int(os.environ.get("DINAT_EMBED", "16"))

    def counting(fn, counts, key):  # fn, its calls counted in counts[key]
        def counted(*args, **kwargs):
            counts[key] += 1
            return fn(*args, **kwargs)
        return counted

    gemm_calls = {"qk": 0, "av": 0}
    if DEVICE == "cuda":
        from fastna.backends import gemm_unfused as G
        G.GemmBackend.qk = staticmethod(counting(G.GemmBackend.qk, gemm_calls, "qk"))
        G.GemmBackend.av = staticmethod(counting(G.GemmBackend.av, gemm_calls, "av"))

    import natten.functional as NF

    calls = {"qk": 0, "av": 0}
    counting_qk = counting(NF.natten2dqkrpb, calls, "qk")
    counting_av = counting(NF.natten2dav, calls, "av")
    # Before transformers imports them: modeling_dinat binds these names at import time.
    NF.natten2dqkrpb, NF.natten2dav = counting_qk, counting_av

    import transformers
    from transformers import DinatConfig, DinatModel
    from transformers.models.dinat import modeling_dinat as M
    from transformers.utils import is_natten_available

    assert is_natten_available()
    assert M.natten2dqkrpb is counting_qk and M.natten2dav is counting_av


    # ---- dense masked NA from docs/SEMANTICS.md (non-causal, stride 1), independent of fastna ----
    def axis_mask(L, K, d):
        m = torch.zeros(L, L, dtype=torch.bool)
        for i in range(L):
            g, il = i % d, i // d
            Lg = -(-(L - g) // d)
            start = min(max(il - K // 2, 0), Lg - K)
            for jl in range(start, start + K):
                m[i, jl * d + g] = True
        return m

    def axis_rel(L, K, d):
        i = torch.arange(L)
        return (i[None, :] // d - i[:, None] // d + K - 1).clamp(0, 2 * K - 2)

    def dense_tables(X, Y, K, d):
        mask = (axis_mask(X, K, d)[:, None, :, None] &
                axis_mask(Y, K, d)[None, :, None, :]).reshape(X * Y, X * Y)
        # Window slots are row-major over (k_x, k_y) and keys increase with k on each axis,
        # so a query's keys in flat (row-major) order are its slots in order.
        slots = mask.nonzero()[:, 1].reshape(X * Y, K * K)
        return slots, axis_rel(X, K, d), axis_rel(Y, K, d)

    dense_calls = {"qk": 0, "av": 0}

    def dense_qk(query, key, rpb, kernel_size, dilation):
        dense_calls["qk"] += 1
        B, H, X, Y, D = query.shape
        slots, rx, ry = (t.to(query.device) for t in dense_tables(X, Y, kernel_size, dilation))
        s = torch.einsum("bhnd,bhmd->bhnm", query.reshape(B, H, X * Y, D),
                         key.reshape(B, H, X * Y, D))
        bias = rpb[:, rx[:, None, :, None], ry[None, :, None, :]].reshape(H, X * Y, X * Y)
        s = s + bias
        return s.gather(-1, slots.expand(B, H, -1, -1)).reshape(B, H, X, Y, -1)

    def dense_av(attn, value, kernel_size, dilation):
        dense_calls["av"] += 1
        B, H, X, Y, D = value.shape
        slots = dense_tables(X, Y, kernel_size, dilation)[0].to(attn.device)
        p = torch.zeros(B, H, X * Y, X * Y, dtype=attn.dtype, device=attn.device)
        p = p.scatter(-1, slots.expand(B, H, -1, -1), attn.reshape(B, H, X * Y, -1))
        return (p @ value.reshape(B, H, X * Y, D)).reshape(B, H, X, Y, D)


    # ---- the model ----
    torch.manual_seed(0)
    # 56x56 input -> 14x14, 7x7, 4x4, 2x2 feature maps. Dilation 3 on 14 and 2 on 7 give
    # dilation groups of unequal lengths; the 2x2 stage is padded by DiNAT to the 3x3 window.
    config = DinatConfig(patch_size=4, num_channels=3, embed_dim=EMBED, depths=[2, 1, 1, 1],
                         num_heads=[1, 2, 4, 8], kernel_size=3,
                         dilations=[[1, 3], [2], [1], [1]], mlp_ratio=2.0,
                         initializer_range=0.2)
    model = DinatModel(config).eval()
    rpbs = []
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, M.NeighborhoodAttention):
                mod.rpb.normal_(0.0, 1.0)  # zeros at init would leave the bias path untested
                rpbs.append(mod.rpb)
    pixels = torch.randn(2, 3, 56, 56)
    # A random projection: sums of LayerNorm outputs would be constant and give zero gradients.
    probe = torch.randn(2, 2, 2, 8 * config.embed_dim)  # last stage: 2x2 tokens

    def run():
        model.zero_grad()
        out = model(pixels, output_attentions=True)
        loss = (out.last_hidden_state * probe).sum()
        loss.backward()
        grads = [p.grad.clone() for p in rpbs]
        return out, grads

    model.to(DEVICE, DTYPE)
    pixels, probe = pixels.to(DEVICE, DTYPE), probe.to(DEVICE, DTYPE)
    out, grads = run()
    n_layers = sum(config.depths)
    shim_calls = dict(calls)

    M.natten2dqkrpb, M.natten2dav = dense_qk, dense_av
    low = None
    if DEVICE != "cpu":
        # PyTorch's own error in this dtype: the dense attention on the same device and dtype.
        low = run()
        # The oracle: the same weights in float64 on the CPU.
        model.to("cpu", torch.float64)
        pixels, probe = pixels.to("cpu", torch.float64), probe.to("cpu", torch.float64)
    ref, ref_grads = run()

    def rel(a, b):
        a, b = a.detach().cpu().double(), b.detach().cpu().double()
        return float((a - b).norm() / b.norm())

    print(json.dumps({
        "transformers": transformers.__version__,
        "shim_calls": shim_calls,
        "dense_calls": dense_calls,
        "n_layers": n_layers,
        "rel_hidden": rel(out.last_hidden_state, ref.last_hidden_state),
        "rel_pooled": rel(out.pooler_output, ref.pooler_output),
        "rel_rpb_grad": max(rel(a, b) for a, b in zip(grads, ref_grads)),
        "max_prob": max(float(a.detach().max()) for a in out.attentions),
        "rpb_grad_norm": min(float(g.norm()) for g in ref_grads),
        "dtype": str(out.last_hidden_state.dtype),
        "gemm_calls": gemm_calls,
        "dense_low_rel_hidden": None if low is None else rel(low[0].last_hidden_state,
                                                             ref.last_hidden_state),
        "dense_low_rel_rpb_grad": None if low is None else max(
            rel(a, b) for a, b in zip(low[1], ref_grads)),
    }))
""")


def _run_script(**env_vars):
    # The child must import the same fastna as this process (source tree or installed).
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastna.__file__)))
    env = dict(os.environ, **env_vars)
    # After the caller's PYTHONPATH, which may hold the transformers 4.46 under test ahead of a
    # newer one installed beside fastna; the child checks it got this process's fastna.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), pkg_parent) if p)
    env["FASTNA_EXPECTED_FILE"] = os.path.abspath(fastna.__file__)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dinat_model_matches_dense_masked_attention():
    res = _run_script()

    n = res["n_layers"]
    # Shim used for every attention layer (no vacuous pass), then the dense one.
    assert res["shim_calls"] == {"qk": n, "av": n}, res
    assert res["dense_calls"] == {"qk": n, "av": n}, res
    assert res["dtype"] == "torch.float32"
    # Attention is far from uniform (1/9), so the comparison is sensitive to the neighborhoods.
    assert res["max_prob"] > 0.5, res
    assert res["rel_hidden"] < 1e-5, res
    assert res["rel_pooled"] < 1e-5, res
    assert res["rpb_grad_norm"] > 1e-3, res  # the gradient check is not of noise
    assert res["rel_rpb_grad"] < 1e-4, res


def _gemm_head_dims():
    import torch
    if not torch.cuda.is_available():
        return set()
    from fastna.backends import gemm_unfused as G
    return G.head_dims(2, torch.float16, torch.device("cuda"))


@pytest.mark.gpu
def test_dinat_model_on_gemm_kernels_gpu():
    """The same model on CUDA in float16 (head dim 32: embed 32 over 1, 2, 4, 8 heads), its
    natten calls on the GEMM kernels, against float64 dense attention on the CPU."""
    if 32 not in _gemm_head_dims():
        pytest.skip("needs a CUDA build with rank-2 float16 gemm_na kernels for head dim 32")
    res = _run_script(DINAT_DEVICE="cuda", DINAT_DTYPE="float16", DINAT_EMBED="32")
    assert res["transformers"].startswith("4.46."), res
    n = res["n_layers"]
    assert res["shim_calls"] == {"qk": n, "av": n}, res
    assert res["gemm_calls"] == {"qk": n, "av": n}, res   # every layer on the GEMM kernels
    assert res["dense_calls"] == {"qk": 2 * n, "av": 2 * n}, res
    assert res["dtype"] == "torch.float16"
    assert res["max_prob"] > 0.5, res
    assert res["rpb_grad_norm"] > 1e-3, res
    # float16 end to end (LayerNorms, MLPs, attention weights stored in half) vs float64: within
    # twice the error of the same model with PyTorch's dense attention in float16.
    assert res["rel_hidden"] < max(2 * res["dense_low_rel_hidden"], 1e-3), res
    assert res["rel_rpb_grad"] < max(2 * res["dense_low_rel_rpb_grad"], 1e-3), res
    assert res["rel_hidden"] < 5e-2 and res["rel_rpb_grad"] < 0.2, res   # and sane in absolute
