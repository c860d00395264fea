"""fastna: neighborhood attention (1D/2D/3D) for PyTorch."""
from ._version import __version__
from ._args import NAParams
from ._api import explain, na1d, na2d, na3d, neighborhood_attention
from .backends import available_backends
from .modules import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D
from .modules import (HydraNeighborhoodAttention1D, HydraNeighborhoodAttention2D,
                      HydraNeighborhoodAttention3D)
from .ops_unfused import na1d_av, na1d_qk, na2d_av, na2d_qk, na3d_av, na3d_qk
from .varlen import neighborhood_attention_varlen
from . import compat, models  # noqa: E402  (subpackages users reach as fastna.compat / fastna.models)

__all__ = ["__version__", "NAParams", "available_backends", "explain", "na1d", "na2d", "na3d",
           "neighborhood_attention", "neighborhood_attention_varlen", "na1d_qk", "na1d_av", "na2d_qk", "na2d_av", "na3d_qk",
           "na3d_av", "NeighborhoodAttention1D", "NeighborhoodAttention2D",
           "NeighborhoodAttention3D", "HydraNeighborhoodAttention1D",
           "HydraNeighborhoodAttention2D", "HydraNeighborhoodAttention3D", "compat", "models"]
