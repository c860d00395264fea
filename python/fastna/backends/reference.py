"""The reference backend: fastna.reference, autograd through plain PyTorch ops."""
from __future__ import annotations

from .. import reference as _ref

name = "reference"


def available() -> bool:
    return True


def check(query, key, value, params, additional_keys=None, additional_values=None):
    return None  # any device, any float dtype, any head dim


def forward(query, key, value, params, additional_keys=None, additional_values=None,
            return_lse=False):
    return _ref.attention(query, key, value, params, additional_keys, additional_values,
                          return_lse=return_lse)
