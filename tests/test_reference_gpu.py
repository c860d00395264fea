"""The reference on CUDA: same results as on CPU, and memory-bounded on the hunyuan anchor."""
import pytest
import torch

from fastna import _args, reference

pytestmark = pytest.mark.gpu


def test_reference_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 6, 7, 5, 4, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 6, 7, 5, 2, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 6, 7, 5, 2, 4, generator=g, dtype=torch.float64)
    p = _args.normalize(q, k, v, (3, 2, 4), (1, 2, 3), (2, 1, 1), (True, False, True))
    cpu = reference.attention(q, k, v, p, return_lse=True)
    gpu = reference.attention(q.cuda(), k.cuda(), v.cuda(), p, return_lse=True, max_bytes=4000)
    torch.testing.assert_close([t.cpu() for t in gpu], list(cpu), rtol=1e-12, atol=1e-12)


def test_reference_hunyuan_anchor_is_memory_bounded():
    torch.cuda.reset_peak_memory_stats()
    q, k, v = (torch.randn(1, 30, 48, 80, 24, 128, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    base = torch.cuda.max_memory_allocated()
    p = _args.normalize(q, k, v, (18, 24, 24))
    with torch.no_grad():
        out = reference.attention(q, k, v, p)
    torch.cuda.synchronize()
    assert out.shape == q.shape and torch.isfinite(out).all()
    # Dense scores alone would be 24 * 115200**2 * 4 bytes = 1.3 TB. What remains is tile
    # workspace (about the byte budget) and assembling the output (twice its size).
    peak = torch.cuda.max_memory_allocated() - base
    print(f"hunyuan reference peak: {peak / 2**30:.2f} GiB")
    assert peak < 4 * reference.DEFAULT_MAX_BYTES + 3 * q.nbytes
