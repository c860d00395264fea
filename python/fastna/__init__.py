"""fastna: neighborhood attention (1D/2D/3D) for PyTorch."""
from ._version import __version__
from ._args import NAParams
from ._api import na1d, na2d, na3d, neighborhood_attention
from .backends import available_backends

__all__ = ["__version__", "NAParams", "available_backends", "na1d", "na2d", "na3d",
           "neighborhood_attention"]
