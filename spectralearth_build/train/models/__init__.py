"""Backbones for hyperspectral patches: SpectralEarth's Spec ViT and Spec RN50, from timm.

Every backbone takes float (B, bands, H, W) normalised reflectance, follows timm's contract
(``forward_features``, ``forward_head``, ``num_features``; ``forward`` returns pooled features
(B, num_features)) and has SpectralEarth's parameter names (``spectral_adapter.*``, then
``vit_core.*`` or ``resnet.*``), so its checkpoints load with :func:`load_pretrained`.

    >>> model = build_backbone("spec_vit_small")          # doctest: +SKIP
    >>> report = load_pretrained(model, "spec_vits_mae.pth")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from .adapter import ADAPTER_LAYERS, ConvSpec, SpectralAdapter, adapter_positions
from .checkpoints import LoadReport, load_pretrained, read_state_dict
from .errors import CheckpointError, ModelError
from .resnet import SpecResNet50
from .vit import VIT_SIZES, SpecViT


def _vit(size: str, **kw: Any) -> SpecViT:
    dim, depth, heads = VIT_SIZES[size]
    return SpecViT(**{"embed_dim": dim, "depth": depth, "num_heads": heads, **kw})


#: backbone name -> constructor (keyword options pass through)
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    **{f"spec_vit_{size}": partial(_vit, size) for size in VIT_SIZES},
    "spec_resnet50": SpecResNet50,
}
#: short names used in SpectralEarth's configs
ALIASES: dict[str, str] = {
    "spec_vit_t": "spec_vit_tiny",
    "spec_vit_s": "spec_vit_small",
    "spec_vit_b": "spec_vit_base",
    "spec_vit_l": "spec_vit_large",
    "spec_vit_h": "spec_vit_huge",
    "spec_vit_g": "spec_vit_giant",
    "spec_rn50": "spec_resnet50",
}


def compile_trunks(module: nn.Module, **kwargs: Any) -> int:
    """``torch.compile`` in place the trunk of every backbone inside ``module``.

    Calls ``compile_trunk`` of each Spec ViT / Spec RN50 found (a method's online, momentum and
    teacher encoders); parameter names and checkpoints are unchanged.

    Returns:
        The number of backbones compiled.
    """
    found = [m for m in module.modules() if isinstance(m, (SpecViT, SpecResNet50))]
    for m in found:
        m.compile_trunk(**kwargs)
    return len(found)


def list_backbones() -> list[str]:
    """Registered backbone names (aliases excluded)."""
    return sorted(BACKBONES)


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: a name of :func:`list_backbones` or an alias (``spec_vit_s``, ``spec_rn50``, ...).
        **kwargs: constructor options, e.g. ``token_patch_size=8``, ``num_classes=19``,
            ``adapter_impl="reference"``, ``drop_path_rate=0.1``.

    Raises:
        ModelError: unknown name or option.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BACKBONES:
        known = ", ".join(list_backbones() + sorted(ALIASES))
        raise ModelError(f"unknown backbone {name!r}; known: {known}")
    try:
        return BACKBONES[key](**kwargs)
    except TypeError as exc:
        raise ModelError(f"backbone {name!r}: {exc}") from None


__all__ = [
    "ADAPTER_LAYERS",
    "ALIASES",
    "BACKBONES",
    "CheckpointError",
    "ConvSpec",
    "LoadReport",
    "ModelError",
    "SpecResNet50",
    "SpecViT",
    "SpectralAdapter",
    "VIT_SIZES",
    "adapter_positions",
    "build_backbone",
    "compile_trunks",
    "list_backbones",
    "load_pretrained",
    "read_state_dict",
]
