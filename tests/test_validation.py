"""Bad arguments raise ValueError/TypeError/NotImplementedError naming the argument."""
import numpy as np
import pytest
import torch

import fastna
from fastna import backends


def qkv(shape=(8, 9), H=4, Hkv=2, D=8, Dv=8, B=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, *shape, H, D, generator=g).to(dtype)
    k = torch.randn(B, *shape, Hkv, D, generator=g).to(dtype)
    v = torch.randn(B, *shape, Hkv, Dv, generator=g).to(dtype)
    return q, k, v


def call(q=None, k=None, v=None, kernel_size=3, fn=None, **kw):
    dq, dk, dv = qkv()
    q = dq if q is None else q
    k = dk if k is None else k
    v = dv if v is None else v
    return (fn or fastna.neighborhood_attention)(q, k, v, kernel_size, **kw)


Q, K, V = qkv()


@pytest.mark.parametrize("exc,match,kwargs", [
    # tensor ranks and shapes
    (ValueError, "query", dict(q=torch.randn(2, 4, 8))),
    (ValueError, "query", dict(q=torch.randn(2, 2, 2, 2, 2, 4, 8))),
    (ValueError, "query.*na1d", dict(fn=fastna.na1d)),
    (ValueError, "query.*na3d", dict(fn=fastna.na3d)),
    (ValueError, "key.*dims", dict(k=K[:, 0])),
    (ValueError, "key batch", dict(k=K[:1])),
    (ValueError, "value batch", dict(v=V[:1])),
    (ValueError, "key spatial shape", dict(k=K[:, :7])),
    (ValueError, "value spatial shape", dict(v=V[:, :, :8])),
    (ValueError, "H_kv", dict(v=V[..., :1, :])),
    (ValueError, "H=4.*H_kv=3", dict(k=torch.randn(2, 8, 9, 3, 8), v=torch.randn(2, 8, 9, 3, 8))),
    (ValueError, "key head dim", dict(k=K[..., :4])),
    # dtypes and devices
    (TypeError, "key dtype", dict(k=K.double())),
    (TypeError, "value dtype", dict(v=V.half())),
    (TypeError, "query.*floating", dict(q=Q.int())),
    (TypeError, "key.*floating", dict(k=K.long())),
    (TypeError, "value.*torch.Tensor", dict(v=np.zeros((2, 8, 9, 2, 8)))),
    (ValueError, "key device", dict(k=K.to("meta"))),
    # kernel / stride / dilation / causal
    (ValueError, r"kernel_size.*\(1, 1\)", dict(kernel_size=1)),
    (ValueError, "kernel_size", dict(kernel_size=(3, 0))),
    (ValueError, r"kernel_size \* dilation.*axis 1", dict(kernel_size=(3, 10))),
    (ValueError, r"kernel_size \* dilation.*axis 0", dict(kernel_size=3, dilation=(3, 1))),
    (ValueError, "stride", dict(stride=0)),
    (ValueError, "stride", dict(stride=(1, 4))),
    (ValueError, "dilation", dict(dilation=0)),
    (ValueError, "kernel_size.*length 3", dict(kernel_size=(3, 3, 3))),
    (ValueError, "stride.*length 1", dict(stride=(1,))),
    (ValueError, "dilation.*length 3", dict(dilation=[1, 1, 1])),
    (ValueError, "is_causal.*length 1", dict(is_causal=(True,))),
    (TypeError, "kernel_size.*3.0", dict(kernel_size=3.0)),
    (TypeError, "kernel_size.*True", dict(kernel_size=True)),
    (TypeError, "kernel_size", dict(kernel_size=(3, "3"))),
    (TypeError, "stride", dict(stride=1.5)),
    (TypeError, "dilation", dict(dilation=(1, None))),
    (TypeError, "is_causal", dict(is_causal=1)),
    (TypeError, "is_causal", dict(is_causal=(True, 0))),
    (TypeError, "is_causal", dict(is_causal="yes")),
    # scale, return_lse
    (TypeError, "scale", dict(scale="0.5")),
    (TypeError, "scale", dict(scale=True)),
    (TypeError, "scale", dict(scale=1j)),
    (TypeError, "return_lse", dict(return_lse=1)),
    # additional KV tokens
    (ValueError, "additional_keys.*without additional_values",
     dict(additional_keys=torch.randn(2, 3, 2, 8))),
    (ValueError, "additional_values.*without additional_keys",
     dict(additional_values=torch.randn(2, 3, 2, 8))),
    (ValueError, "additional_keys must have shape",
     dict(additional_keys=torch.randn(2, 3, 4, 8), additional_values=torch.randn(2, 3, 2, 8))),
    (ValueError, "additional_values must have shape",
     dict(additional_keys=torch.randn(2, 3, 2, 8), additional_values=torch.randn(2, 3, 2, 5))),
    (ValueError, "additional_keys has 3 tokens",
     dict(additional_keys=torch.randn(2, 3, 2, 8), additional_values=torch.randn(2, 4, 2, 8))),
    (TypeError, "additional_values dtype",
     dict(additional_keys=torch.randn(2, 3, 2, 8),
          additional_values=torch.randn(2, 3, 2, 8, dtype=torch.float64))),
    (TypeError, "additional_keys.*floating",
     dict(additional_keys=torch.ones(2, 3, 2, 8, dtype=torch.int32),
          additional_values=torch.randn(2, 3, 2, 8))),
    # backends
    (ValueError, "unknown backend='nope'.*reference, naive, gemm, fused, hopper",
     dict(backend="nope")),
    (TypeError, "backend", dict(backend=3)),
] + ([
    # Without a CUDA device every CUDA backend is unavailable, and says so the same way,
    # whatever the build holds and whatever the tensors.
    (NotImplementedError, f"backend '{b}' is not available", dict(backend=b))
    for b in ("fused", "gemm", "hopper", "naive")
] + [(NotImplementedError, "backend 'naive' is not available",
      dict(q=Q.double(), k=K.double(), v=V.double(), backend="naive"))]
    if not torch.cuda.is_available() else [
    (ValueError, "backend='naive'.*CUDA tensors.*cpu", dict(backend="naive")),
    (TypeError, "backend='naive'.*float64", dict(q=Q.double(), k=K.double(), v=V.double(),
                                                  backend="naive")),
]))
def test_bad_arguments(exc, match, kwargs):
    with pytest.raises(exc, match=match):
        call(**kwargs)


def test_errors_show_the_value():
    with pytest.raises(ValueError, match=r"stride=\(1, 5\)"):
        call(stride=(1, 5))
    with pytest.raises(TypeError, match=r"'3'"):
        call(kernel_size=(3, "3"))


def test_numpy_ints_and_bools_are_accepted():
    ref = call(kernel_size=(3, 4), stride=(1, 2), dilation=(2, 1), is_causal=(True, False))
    out = call(kernel_size=(np.int64(3), np.int32(4)), stride=[np.int8(1), 2],
               dilation=(np.int16(2), 1), is_causal=(np.bool_(True), False))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_defaults_and_normalized_params():
    p = fastna._args.normalize(Q, K, V, (3, 4), 2, 1, True)
    assert p == fastna.NAParams(rank=2, kernel=(3, 4), stride=(2, 2), dilation=(1, 1),
                                causal=(True, True), scale=8 ** -0.5, length=(8, 9))


def test_unsupported_head_dim_for_a_backend():
    class Limited:
        name = "limited"

        @staticmethod
        def available():
            return True

        @staticmethod
        def check(q, k, v, params, ek=None, ev=None):
            if q.shape[-1] > 4:
                return backends.Reason(f"head dim {q.shape[-1]} > 4 is not supported")
            return None

        forward = staticmethod(backends.reference.forward)

    backends.register(Limited, priority=0)
    try:
        with pytest.raises(NotImplementedError, match="backend='limited'.*head dim 8"):
            call(backend="limited")
        # with backend=None the unsupported backend is skipped, not an error
        assert call().shape == (2, 8, 9, 4, 8)
        q, k, v = qkv(D=4, Dv=4)
        assert fastna.na2d(q, k, v, 3, backend="limited").shape == (2, 8, 9, 4, 4)
    finally:
        backends.unregister("limited")


def test_empty_batch():
    q, k, v = qkv(B=0)
    out, lse = fastna.na2d(q, k, v, 3, return_lse=True)
    assert out.shape == (0, 8, 9, 4, 8) and lse.shape == (0, 8, 9, 4)


@pytest.mark.parametrize("heads_axis_first", [False, True])
def test_non_contiguous_inputs(heads_axis_first):
    # q, k, v as slices of a fused projection, [B, *S, H, 3, D] or [B, *S, 3, H, D]
    g = torch.Generator().manual_seed(1)
    if heads_axis_first:
        qkv_ = torch.randn(2, 7, 8, 3, 4, 6, generator=g)
        q, k, v = qkv_.unbind(dim=-3)
    else:
        qkv_ = torch.randn(2, 7, 8, 4, 3, 6, generator=g)
        q, k, v = qkv_.unbind(dim=-2)
    assert not q.is_contiguous()
    out = fastna.na2d(q, k, v, (3, 4), dilation=(2, 1), is_causal=(False, True))
    ref = fastna.na2d(q.contiguous(), k.contiguous(), v.contiguous(), (3, 4), dilation=(2, 1),
                      is_causal=(False, True))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_explicit_reference_and_auto_backend_agree():
    a = call(backend="reference")
    b = call()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert "reference" in fastna.available_backends()
    assert isinstance(fastna.__version__, str)
