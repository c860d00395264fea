"""fastna.distributed on CUDA with NCCL (marked gpu): one process per GPU, two where the machine
has them, else a group of one (the same code path). bf16 and fp32, halo mode (the offset-slab
reference on the GPU) and ulysses (the fastest local backend), forward and gradients against the
float64 single-process oracle. The exact CPU coverage is tests/test_distributed_cpu.py."""
import pytest
import torch

import distributed_worker
from fastna.distributed import even_lengths


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
    ]


@pytest.mark.gpu
def test_nccl_group(tmp_path):
    if not torch.distributed.is_nccl_available():
        pytest.skip("torch without NCCL")
    P = min(2, torch.cuda.device_count())
    distributed_worker.run_group(P, _cases(P), tmp_path, backend="nccl")
