"""FlexAttention with a neighborhood-attention mask_mod: the competitor of docs/PERFORMANCE.md
section 1.

The implementation lives in the package (fastna.flex) so that the profiler can use it too;
this module re-exports it for the benchmark scripts and tests/test_flex_mask.py.
"""
from __future__ import annotations

from fastna.flex import _axis_neighbor, make_flex_na, na_block_mask, na_mask_mod  # noqa: F401

__all__ = ["na_mask_mod", "na_block_mask", "make_flex_na"]
