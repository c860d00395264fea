"""fastna.distributed on CUDA with NCCL (marked gpu): one process per GPU, two where the machine
has them, else a group of one (the same code path). bf16 and fp32, halo mode (the "embedded"
slab implementation, CUDA's default: fastna's kernels; and the offset-slab reference) and ulysses
(the fastest local backend), forward and gradients against the float64 single-process oracle.
Also the embedded slab implementation alone on one GPU, offsets and all, against the slab
reference. The exact CPU coverage is tests/test_distributed_cpu.py and
tests/test_distributed_embed.py."""
import pytest
import torch

import distributed_worker
from fastna import _args
from fastna.distributed import _slab, _slab_embed, even_lengths
from numerics import random_inputs, rel_error
from test_distributed_embed import _cases as _slab_cases


def _cases(P):
    base = dict(kind="attention", device="cuda", batch=1, gather=True, seed=7)
    L = 2 * P + 2
    return [
        dict(base, name="halo bf16 3D", mode="halo", dtype="bfloat16", tol=1e-1,
             shape=[L, 8, 12], heads=4, heads_kv=2, dim=64, dim_v=64, kernel=(P + 2, 5, 5),
             stride=(1, 2, 1), dilation=(1, 1, 2), causal=(False, False, False), shard_axis=0,
             lengths=even_lengths(L, P)),
        dict(base, name="ulysses bf16 3D", mode="ulysses", dtype="bfloat16", tol=1e-1,
             shape=[L, 8, 12], heads=4, heads_kv=2, dim=64, dim_v=64, kernel=(P + 2, 5, 5),
             stride=(1, 1, 1), dilation=(1, 1, 1), causal=(True, False, False), shard_axis=0,
             lengths=even_lengths(L, P)),
        dict(base, name="halo fp32 2D causal, dilated", mode="halo", dtype="float32", tol=1e-4,
             shape=[12, 3 * P + 1], heads=2, heads_kv=1, dim=32, dim_v=16, kernel=(3, 3),
             stride=(1, 1), dilation=(2, 1), causal=(False, True), shard_axis=1,
             lengths=even_lengths(3 * P + 1, P)),
        dict(base, name="ulysses fp32 1D", mode="ulysses", dtype="float32", tol=1e-4,
             shape=[16 * P + 3], heads=2 * P, heads_kv=P, dim=32, dim_v=32, kernel=(9,),
             stride=(2,), dilation=(1,), causal=(False,), shard_axis=0,
             lengths=even_lengths(16 * P + 3, P)),
        dict(base, name="halo reference fp32 2D", mode="halo", backend="reference",
             dtype="float32", tol=1e-4, shape=[12, 3 * P + 1], heads=2, heads_kv=1, dim=32,
             dim_v=16, kernel=(3, 3), stride=(1, 1), dilation=(2, 1), causal=(False, True),
             shard_axis=1, lengths=even_lengths(3 * P + 1, P)),
        dict(base, name="halo embedded bf16 1D, interior overlapped", mode="halo",
             backend="embedded", overlap_slack=float("inf"), dtype="bfloat16", tol=1e-1,
             shape=[40 * P], heads=4, heads_kv=4, dim=64, dim_v=64, kernel=(7,), stride=(2,),
             dilation=(2,), causal=(True,), shard_axis=0, lengths=even_lengths(40 * P, P)),
    ]


@pytest.mark.gpu
def test_nccl_group(tmp_path):
    if not torch.distributed.is_nccl_available():
        pytest.skip("torch without NCCL")
    P = min(2, torch.cuda.device_count())
    distributed_worker.run_group(P, _cases(P), tmp_path, backend="nccl")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_embedded_slabs_on_one_gpu(dtype, tol):
    """The embedded implementation on CUDA tensors (fastna's kernels) against the slab reference
    in float64 on the same (rounded) inputs: out, lse and gradients of random offset slabs."""
    on_reference = []
    for (shape, kernel, stride, dilation, causal, H, Hkv, _, _, a, (q0, q1, k0, k1),
         seed) in _slab_cases(7, 14):
        q, k, v, _, _ = random_inputs(shape, H, Hkv, 64, 64, seed=seed)
        q, k, v = (t.to("cuda", dtype) for t in (q, k, v))
        params = _args.normalize(q, k, v, kernel, stride, dilation, causal)
        qo, ko = [0] * len(shape), [0] * len(shape)
        qo[a], ko[a] = q0, k0
        qs, ks, vs = (t.narrow(1 + a, x0, x1 - x0)
                      for t, x0, x1 in ((q, q0, q1), (k, k0, k1), (v, k0, k1)))
        what = (shape, kernel, stride, dilation, causal, a, (q0, q1, k0, k1))
        text = _slab_embed.describe(qs, ks, vs, params, qo, ko)
        assert text.startswith("embedded"), (what, text)
        if "backend 'reference'" in text:
            on_reference.append((what, text))
        wide = [t.double() for t in (qs, ks, vs)]
        ref_out, ref_lse = _slab.reference_forward(*wide, params, qo, ko)
        part = _slab_embed.whole(qs, ks, vs, params, qo, ko, keep_graph=True)
        assert rel_error(part.out, ref_out) < tol, what
        assert rel_error(part.lse, ref_lse) < tol, what
        dout = torch.randn_like(ref_out)
        want = _slab.reference_backward(dout, *wide, ref_out, ref_lse, params, qo, ko)
        got = part.grads(dout.to(dtype))
        for name, g, w in zip("qkv", got, want):
            assert rel_error(g, w) < 4 * tol, (what, "d" + name)
    # bf16: fastna's kernels run most of them (a shape no kernel takes may fall back)
    if dtype == torch.bfloat16:
        assert len(on_reference) <= 3, on_reference
