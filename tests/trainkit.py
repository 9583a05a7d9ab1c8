"""Tiny stand-in backbones with the Spec ViT / Spec RN structure, for method tests; a reference
spectral adapter with non-trivial BatchNorm state; labelled stores for the training tests."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def reference_adapter(seed: int = 0) -> nn.Module:
    """A Conv3d-reference ``SpectralAdapter`` with seeded, non-trivial BatchNorm state."""
    from spectralearth_build.train.models import SpectralAdapter

    torch.manual_seed(seed)
    ref = SpectralAdapter(impl="reference")
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
    return ref


class TinySpecViT(nn.Module):
    """``spectral_adapter`` (1x1 conv + BN + ReLU) then a timm ViT as ``vit_core``.

    ``global_pool`` is timm's: ``token`` (the class token, default) or ``avg`` (mean of the
    patch tokens).
    """

    def __init__(
        self,
        in_chans: int = 202,
        img_size: int = 16,
        patch_size: int = 4,
        dim: int = 32,
        global_pool: str = "token",
    ):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.spectral_adapter = nn.Sequential(
            nn.Conv2d(in_chans, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.vit_core = VisionTransformer(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=16,
            embed_dim=dim,
            depth=1,
            num_heads=2,
            num_classes=0,
            global_pool=global_pool,
        )
        self.num_features = dim
        self.img_size = img_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit_core.forward_features(self.spectral_adapter(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.vit_core.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit_core(self.spectral_adapter(x))


class TinySpecRN(nn.Module):
    """``spectral_adapter`` then two conv-BN-ReLU layers and global pooling."""

    def __init__(self, in_chans: int = 202, dim: int = 32):
        super().__init__()
        self.spectral_adapter = nn.Sequential(
            nn.Conv2d(in_chans, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.resnet = nn.Sequential(
            nn.Conv2d(16, dim, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(dim), nn.ReLU()
        )
        self.num_features = dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet(self.spectral_adapter(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def labelled_store(
    tmp_path_factory,
    patch_px: int = 32,
    products: tuple[str, ...] = ("corine", "cdl", "nlcd"),
    split_fractions: tuple[float, float, float] = (0.75, 0.10, 0.15),
    landscape_scale: float = 1.0,
) -> Path:
    """A tiny built dataset with labels (CORINE/CDL/NLCD by default), built once per session.

    Args:
        patch_px: patch side of the build (pixels).
        products: label products paired with it.
        split_fractions: (train, val, test) shares of every task's split.
        landscape_scale: factor on the synthetic land-cover map's lengths (below 1: patches
            hold several classes).
    """
    name = f"train_store_{patch_px}"
    if products != ("corine", "cdl", "nlcd") or split_fractions != (0.75, 0.10, 0.15):
        name += "_" + "_".join(products) + "_" + "_".join(f"{f:g}" for f in split_fractions)
    if landscape_scale != 1.0:
        name += f"_scale{landscape_scale:g}"
    out = tmp_path_factory.getbasetemp() / name
    if (out / "data" / "_COMPLETE").exists() and (out / "labelled").exists():
        return out / "data"
    from spectralearth_build.build import build_dataset
    from spectralearth_build.config import BuildConfig
    from spectralearth_build.labels.spec import parse_label_option
    from spectralearth_build.labels.splits import SplitConfig
    from spectralearth_build.labels.store import pair_labels
    from spectralearth_build.synth import make_archive

    archive = make_archive(out / "tiles", preset="tiny", seed=0, landscape_scale=landscape_scale)
    build_dataset(
        archive.out,
        out / "data",
        BuildConfig.from_dict({"plan": {"patch_px": patch_px}}),
        workers=0,
    )
    specs = [parse_label_option(f"{p}={archive.label(p)}") for p in products]
    split = SplitConfig(fractions=split_fractions, block_m=1000.0)
    pair_labels(out / "data", specs, shard_locations=8, split_config=split)
    (out / "labelled").write_text("")
    return out / "data"
