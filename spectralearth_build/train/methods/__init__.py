"""Self-supervised pretraining methods, one small module each (see :mod:`.base`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .barlow import BarlowTwins
from .base import Method
from .dino import DINO
from .mae import MAE
from .moco import MoCo

METHODS: dict[str, type[Method]] = {
    "moco": MoCo,
    "dino": DINO,
    "mae": MAE,
    "barlow": BarlowTwins,
}


def build_method(name: str, backbone: nn.Module, total_steps: int, **kw: Any) -> Method:
    """The method ``name`` (one of :data:`METHODS`) around ``backbone``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} (expected one of {sorted(METHODS)})")
    return METHODS[name](backbone, total_steps, **kw)


__all__ = ["METHODS", "BarlowTwins", "DINO", "MAE", "Method", "MoCo", "build_method"]
