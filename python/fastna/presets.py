"""Named NA problems: the anchor cases of docs/PERFORMANCE.md section 2 (B=1, 24 heads, head dim 128,
bf16 unless noted), used by ``python -m fastna profile --preset NAME``.

benchmarks/anchor_cases.py re-exports this table for the benchmark scripts.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Dict, List, Tuple

__all__ = ["Problem", "PRESETS", "get_preset", "preset_names"]


@dataclass(frozen=True)
class Problem:
    """One neighborhood-attention problem: shapes and per-axis window parameters."""
    name: str
    shape: Tuple[int, ...]
    kernel: Tuple[int, ...]
    stride: Tuple[int, ...] = None
    dilation: Tuple[int, ...] = None
    causal: Tuple[bool, ...] = None
    batch: int = 1
    heads: int = 24
    dim: int = 128
    dtype: str = "bfloat16"

    def __post_init__(self):
        r = len(self.shape)
        object.__setattr__(self, "shape", tuple(int(x) for x in self.shape))
        for attr, default in (("kernel", None), ("stride", 1), ("dilation", 1), ("causal", False)):
            v = getattr(self, attr)
            if v is None:
                v = (default,) * r
            elif isinstance(v, (int, bool)):
                v = (v,) * r
            object.__setattr__(self, attr, tuple(v))
        for attr in ("kernel", "stride", "dilation", "causal"):
            if len(getattr(self, attr)) != r:
                raise ValueError(f"{attr}={getattr(self, attr)} must have one entry per axis of "
                                 f"shape={self.shape}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def tokens(self) -> int:
        return prod(self.shape)

    @property
    def window(self) -> int:
        return prod(self.kernel)

    @property
    def flop_bound(self) -> float:
        """Speedup over dense attention if time scaled with FLOPs: N / prod(K)."""
        return self.tokens / self.window

    def na_flops(self) -> float:
        """Forward FLOPs of NA with full windows: 2 GEMMs of N x window x D per head."""
        return 4.0 * self.batch * self.heads * self.tokens * self.window * self.dim

    def kwargs(self) -> dict:
        return dict(kernel_size=self.kernel, stride=self.stride, dilation=self.dilation,
                    is_causal=self.causal)

    def describe(self) -> str:
        def fmt(t):
            return "x".join(str(int(x)) for x in t)
        s = (f"{self.name}: B={self.batch} H={self.heads} D={self.dim} shape={fmt(self.shape)} "
             f"kernel={fmt(self.kernel)}")
        if any(x != 1 for x in self.stride):
            s += f" stride={fmt(self.stride)}"
        if any(x != 1 for x in self.dilation):
            s += f" dilation={fmt(self.dilation)}"
        if any(self.causal):
            s += f" causal={fmt(self.causal)}"
        return s + f" {self.dtype}"


PRESETS: List[Problem] = [
    Problem("1d", (32768,), (2048,), heads=1),
    Problem("1d-strided", (32768,), (2048,), stride=(256,), heads=1),
    Problem("flux", (256, 256), (80, 80)),
    Problem("flux-strided", (256, 256), (80, 80), stride=(16, 16)),
    Problem("hunyuan", (30, 48, 80), (18, 24, 24)),
    Problem("hunyuan-strided", (30, 48, 80), (18, 24, 24), stride=(16, 8, 8)),
    Problem("video-causal-t", (16, 48, 80), (8, 16, 24), causal=(True, False, False), heads=16),
    Problem("nat", (56, 56), (7, 7), batch=32, heads=4, dim=32),
    Problem("dinat", (56, 56), (7, 7), dilation=(4, 4), batch=32, heads=4, dim=32),
    Problem("nat-13", (64, 64), (13, 13), batch=4, heads=8, dim=64),
    # StyleNAT FFHQ-256 (fastna.models.stylenat_ffhq256), its 256x256 stage: the dilated head
    # group (the other 2 of the 4 heads run the same window at dilation 1).
    Problem("stylenat", (256, 256), (7, 7), dilation=(32, 32), batch=8, heads=2, dim=32),
]

_BY_NAME: Dict[str, Problem] = {p.name: p for p in PRESETS}


def preset_names() -> List[str]:
    return [p.name for p in PRESETS]


def get_preset(name: str) -> Problem:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(preset_names())}") from None
