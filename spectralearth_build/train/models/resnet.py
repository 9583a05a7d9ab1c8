"""Spec RN50: the spectral adapter followed by a stem-less ResNet-50 (timm stages).

SpectralEarth drops ResNet-50's stem (7x7 conv, BN, max pool): the adapter's 128 channels enter
``resnet.layer1.0``, a bottleneck 128 -> 256 (1x1, 3x3 with stride 2, 1x1, all 256 wide, plus a
1x1 stride-2 conv + BN shortcut), followed by blocks 1-2 of timm's ``resnet50`` ``layer1`` and its
``layer2``-``layer4``. A 128 px patch gives 8 x 8 x 2048 features (``forward_features``), pooled
to (B, 2048) by ``forward``. Parameter names match SpectralEarth's ``SpecResNet50`` exactly.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from .adapter import OUT_CHANNELS, AdapterImpl, SpectralAdapter


class EntryBottleneck(nn.Module):
    """First bottleneck without expansion: (B, in, H, W) -> (B, out, H/stride, W/stride)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv3 = nn.Conv2d(out_ch, out_ch, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(out + self.downsample(x))


class StemlessResNet50(nn.Module):
    """ResNet-50 stages on 128 input channels, no stem (SpectralEarth's ``CustomResNet50``)."""

    def __init__(self, num_classes: int = 0, in_ch: int = OUT_CHANNELS, **timm_kwargs: Any):
        super().__init__()
        base: Any = timm.create_model("resnet50", pretrained=False, num_classes=0, **timm_kwargs)
        self.layer1 = nn.Sequential(EntryBottleneck(in_ch, 256, stride=2), *base.layer1[1:])
        self.layer2 = base.layer2
        self.layer3 = base.layer3
        self.layer4 = base.layer4
        self.global_pool: nn.Module = base.global_pool
        self.num_features: int = int(base.num_features)
        self.fc: nn.Module = (
            nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 128, H, W) -> (B, 2048, H/16, W/16)."""
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class SpecResNet50(nn.Module):
    """Spectral adapter + stem-less ResNet-50, input float (B, bands, H, W).

    Args:
        num_classes: classification head size; 0 (default) for a headless encoder.
        adapter_impl: ``"auto"``, ``"reference"``, ``"fast"`` or ``"triton"``
            (see ``SpectralAdapter``).
        adapter_recompute: recompute the adapter's wide activations in backward (fast path).
        **timm_kwargs: passed to timm's ``resnet50`` (e.g. ``drop_path_rate``).
    """

    def __init__(
        self,
        num_classes: int = 0,
        adapter_impl: AdapterImpl = "auto",
        adapter_recompute: bool = False,
        **timm_kwargs: Any,
    ):
        super().__init__()
        self.spectral_adapter = SpectralAdapter(impl=adapter_impl, recompute=adapter_recompute)
        self.resnet = StemlessResNet50(num_classes=num_classes, **timm_kwargs)
        self.num_features: int = self.resnet.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bands, H, W) -> feature map (B, 2048, H/16, W/16)."""
        return self.resnet.forward_features(self.spectral_adapter(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.resnet.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bands, H, W) -> pooled features (B, 2048) (logits with a head)."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.resnet.fc

    def compile_trunk(self, **kwargs: Any) -> None:
        """``torch.compile`` the four ResNet stages in place (state-dict keys unchanged).

        The adapter stays eager (its Triton kernels are tuned already).
        """
        r = self.resnet
        for stage in (r.layer1, r.layer2, r.layer3, r.layer4):
            stage.compile(**kwargs)
