"""The anchor cases of DESIGN.md section 4, shared by every benchmark script."""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple
    kernel: tuple
    stride: tuple = None
    dilation: tuple = None
    causal: tuple = None
    batch: int = 1
    heads: int = 24
    dim: int = 128

    def __post_init__(self):
        r = len(self.shape)
        for attr, default in (("stride", 1), ("dilation", 1), ("causal", False)):
            if getattr(self, attr) is None:
                object.__setattr__(self, attr, (default,) * r)

    @property
    def tokens(self) -> int:
        return prod(self.shape)

    @property
    def flop_bound(self) -> float:
        """Speedup over dense attention if time scaled with FLOPs: N / prod(K)."""
        return self.tokens / prod(self.kernel)

    def na_flops(self) -> float:
        """Forward FLOPs actually needed: 2 GEMMs of N x window x D per head (causal ignored)."""
        return 4.0 * self.batch * self.heads * self.tokens * prod(self.kernel) * self.dim

    def kwargs(self) -> dict:
        return dict(kernel_size=self.kernel, stride=self.stride, dilation=self.dilation,
                    is_causal=self.causal)


CASES = [
    Case("1d", (32768,), (2048,), heads=1),
    Case("1d-strided", (32768,), (2048,), stride=(256,), heads=1),
    Case("flux", (256, 256), (80, 80)),
    Case("flux-strided", (256, 256), (80, 80), stride=(16, 16)),
    Case("hunyuan", (30, 48, 80), (18, 24, 24)),
    Case("hunyuan-strided", (30, 48, 80), (18, 24, 24), stride=(16, 8, 8)),
    Case("video-causal-t", (16, 48, 80), (8, 16, 24), causal=(True, False, False), heads=16),
    Case("nat", (56, 56), (7, 7), batch=32, heads=4, dim=32),
    Case("dinat", (56, 56), (7, 7), dilation=(4, 4), batch=32, heads=4, dim=32),
    Case("nat-13", (64, 64), (13, 13), batch=4, heads=8, dim=64),
]

BY_NAME = {c.name: c for c in CASES}
