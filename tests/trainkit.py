"""Tiny stand-in backbones with the Spec ViT / Spec RN structure, for method tests."""

from __future__ import annotations

import torch
from torch import nn


class TinySpecViT(nn.Module):
    """``spectral_adapter`` (1x1 conv + BN + ReLU) then a timm ViT as ``vit_core``."""

    def __init__(self, in_chans: int = 202, img_size: int = 16, patch_size: int = 4, dim: int = 32):
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
        )
        self.num_features = dim

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
            nn.Conv2d(16, dim, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet(self.spectral_adapter(x))
