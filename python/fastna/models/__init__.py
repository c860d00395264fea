"""NAT / DiNAT image classifiers and the StyleNAT generator (randomly initialized; no
downloads).

    model = fastna.models.nat_mini(num_classes=1000)
    model = fastna.models.create("dinat_tiny", backend="fused")
    fastna.models.list_models()          # the classifiers
    generator = fastna.models.stylenat_ffhq256()   # z [B, 512] -> images [B, 3, 256, 256]

Every classifier constructor takes the keyword arguments of :class:`NAT` (num_classes,
in_chans, drop_path_rate, rel_pos_bias, backend, ...), overriding the published configuration.
The StyleNAT generator is not in the classifiers' registry (create / list_models).
"""
from __future__ import annotations

from typing import Callable, Dict, List

from .nat import NAT, DiNAT, NATBlock, NATLayer
from .stylenat import (StyleNATConfig, StyleNATGenerator, load_official_state_dict,
                       stylenat_ffhq256)

__all__ = ["NAT", "DiNAT", "NATBlock", "NATLayer", "create", "list_models", "register_model",
           "PUBLISHED_PARAMS", "CONFIGS",
           "nat_mini", "nat_tiny", "nat_small", "nat_base",
           "dinat_mini", "dinat_tiny", "dinat_small", "dinat_base", "dinat_large",
           "StyleNATConfig", "StyleNATGenerator", "load_official_state_dict", "stylenat_ffhq256"]

_REGISTRY: Dict[str, Callable] = {}

# Parameter counts the papers / model cards publish (ImageNet-1K heads, 224x224).
PUBLISHED_PARAMS = {
    "nat_mini": 20e6, "nat_tiny": 28e6, "nat_small": 51e6, "nat_base": 90e6,
    "dinat_mini": 20e6, "dinat_tiny": 28e6, "dinat_small": 51e6, "dinat_base": 90e6,
    "dinat_large": 200e6,
}


def _dilated(depths, first_dilations):
    """DiNAT's schedule: layers alternate 1, d, 1, d, ... within a level (d sized for 224x224:
    the dilated window 7*d spans the whole 56/28/14-wide feature map; the last level, 7x7, is
    undilated)."""
    return [[1 if j % 2 == 0 else d for j in range(n)] for n, d in zip(depths, first_dilations)]


_D224 = (8, 4, 2, 1)

CONFIGS = {
    "nat_mini": dict(depths=[3, 4, 6, 5], num_heads=[2, 4, 8, 16], embed_dim=64, mlp_ratio=3,
                     drop_path_rate=0.2),
    "nat_tiny": dict(depths=[3, 4, 18, 5], num_heads=[2, 4, 8, 16], embed_dim=64, mlp_ratio=3,
                     drop_path_rate=0.2),
    "nat_small": dict(depths=[3, 4, 18, 5], num_heads=[3, 6, 12, 24], embed_dim=96, mlp_ratio=2,
                      drop_path_rate=0.3, layer_scale=1e-5),
    "nat_base": dict(depths=[3, 4, 18, 5], num_heads=[4, 8, 16, 32], embed_dim=128, mlp_ratio=2,
                     drop_path_rate=0.5, layer_scale=1e-5),
    "dinat_mini": dict(depths=[3, 4, 6, 5], num_heads=[2, 4, 8, 16], embed_dim=64, mlp_ratio=3,
                       drop_path_rate=0.2, dilations=_dilated([3, 4, 6, 5], _D224)),
    "dinat_tiny": dict(depths=[3, 4, 18, 5], num_heads=[2, 4, 8, 16], embed_dim=64, mlp_ratio=3,
                       drop_path_rate=0.2, dilations=_dilated([3, 4, 18, 5], _D224)),
    "dinat_small": dict(depths=[3, 4, 18, 5], num_heads=[3, 6, 12, 24], embed_dim=96,
                        mlp_ratio=2, drop_path_rate=0.3, dilations=_dilated([3, 4, 18, 5], _D224)),
    "dinat_base": dict(depths=[3, 4, 18, 5], num_heads=[4, 8, 16, 32], embed_dim=128,
                       mlp_ratio=2, drop_path_rate=0.5, layer_scale=1e-5,
                       dilations=_dilated([3, 4, 18, 5], _D224)),
    "dinat_large": dict(depths=[3, 4, 18, 5], num_heads=[6, 12, 24, 48], embed_dim=192,
                        mlp_ratio=2, drop_path_rate=0.35, dilations=_dilated([3, 4, 18, 5], _D224)),
}


def register_model(name: str, fn: Callable) -> Callable:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def list_models() -> List[str]:
    return sorted(_REGISTRY)


def create(name: str, **kwargs):
    """Build a registered model by name, e.g. create("nat_mini", num_classes=10)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    fn = _REGISTRY.get(name)
    if fn is None:
        raise ValueError(f"unknown model name={name!r}; available: {', '.join(list_models())}")
    return fn(**kwargs)


def _make(name: str):
    cls = DiNAT if name.startswith("dinat") else NAT

    def fn(num_classes: int = 1000, **kwargs):
        cfg = {k: (list(map(list, v)) if k == "dilations" else v) for k, v in CONFIGS[name].items()}
        cfg.update(kwargs)
        cfg.setdefault("kernel_size", 7)
        return cls(num_classes=num_classes, **cfg)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (f"{name} ({PUBLISHED_PARAMS[name] / 1e6:.0f}M parameters published), random "
                  f"init. Keyword arguments override the configuration; see fastna.models.NAT.")
    return register_model(name, fn)


nat_mini = _make("nat_mini")
nat_tiny = _make("nat_tiny")
nat_small = _make("nat_small")
nat_base = _make("nat_base")
dinat_mini = _make("dinat_mini")
dinat_tiny = _make("dinat_tiny")
dinat_small = _make("dinat_small")
dinat_base = _make("dinat_base")
dinat_large = _make("dinat_large")
