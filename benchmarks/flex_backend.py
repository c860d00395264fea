"""backend="flex" for the model benchmarks: fastna.neighborhood_attention run by PyTorch's
FlexAttention with the NA mask (fastna.flex), so that a model built on fastna's modules runs
unchanged on the dense-kernel competitor.  Benchmark-only: register() adds it to fastna's
backend registry for the running process.

The block mask is built once per problem (shape and window parameters) and reused;
flex_attention is compiled once (fastna.flex), its backward comes from autograd of the
compiled function.  No additional KV tokens (FlexAttention has no such input).
"""
from __future__ import annotations

from functools import lru_cache

import torch

from fastna import _registry, flex

NAME = "flex"


class _Problem:
    def __init__(self, shape, kernel, stride, dilation, causal):
        self.shape, self.kernel, self.stride = shape, kernel, stride
        self.dilation, self.causal = dilation, causal


@lru_cache(maxsize=256)
def _runner(shape, kernel, stride, dilation, causal, device):
    return flex.flex_na(_Problem(shape, kernel, stride, dilation, causal), device=device)


class FlexBackend:
    name = NAME

    @staticmethod
    def available() -> bool:
        return torch.cuda.is_available()

    @staticmethod
    def check(query, key, value, params, additional_keys=None, additional_values=None):
        if query.device.type != "cuda":
            return f"it needs CUDA tensors, got query on {query.device}"
        if additional_keys is not None:
            return "FlexAttention has no additional KV tokens"
        return None

    @staticmethod
    def forward(query, key, value, params, additional_keys=None, additional_values=None,
                return_lse=False):
        if return_lse:
            raise NotImplementedError("backend='flex' (benchmarks) returns no lse")
        run = _runner(tuple(query.shape[1:params.rank + 1]), params.kernel, params.stride,
                      params.dilation, params.causal, str(query.device))
        return run(query, key, value, scale=params.scale)


def register() -> None:
    """Adds backend "flex" (tried last for backend=None: only an explicit backend="flex" picks
    it)."""
    if NAME not in _registry.known():
        _registry.register(FlexBackend(), priority=None)
