"""Spec ViT: the spectral adapter followed by a timm ``VisionTransformer`` on its 128 channels.

The module tree is SpectralEarth's (``spectral_adapter.*`` then ``vit_core.*``, a plain timm
``VisionTransformer`` with ``img_size=128``, ``in_chans=128``, token patch 4, ``qkv_bias`` and
LayerNorm eps 1e-6), so SpectralEarth's checkpoints load without renaming. Unlike SpectralEarth's
class (a 1000-class head by default) the encoder is built headless (``num_classes=0``):
``forward`` returns the pooled features (B, num_features). timm's contract holds:
``forward_features`` gives the normalised tokens (B, 1 + (H/p)*(W/p), D), ``forward_head`` pools.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .adapter import OUT_CHANNELS, AdapterImpl, SpectralAdapter

#: (embed_dim, depth, num_heads) of the Spec ViT sizes (SpectralEarth's T/S/B/L/H/g).
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
    "giant": (1536, 40, 24),
}


class SpecViT(nn.Module):
    """Spectral adapter + timm ViT, input float (B, bands, H, W) normalised reflectance.

    Args:
        embed_dim, depth, num_heads, mlp_ratio: transformer size.
        token_patch_size: ViT patch size in pixels (SpectralEarth: 4, so 1024 tokens at 128 px).
        img_size: patch size in pixels the position embedding is built for.
        num_classes: classification head size; 0 (default) for a headless encoder.
        global_pool: timm pooling (``"token"``: the class token, as SpectralEarth).
        adapter_impl: ``"auto"``, ``"reference"``, ``"fast"`` or ``"triton"``
            (see ``SpectralAdapter``).
        adapter_recompute: recompute the adapter's wide activations in backward (fast path).
        **vit_kwargs: passed to timm's ``VisionTransformer`` (``drop_path_rate``,
            ``dynamic_img_size``, ...).
    """

    def __init__(
        self,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        token_patch_size: int = 4,
        img_size: int = 128,
        num_classes: int = 0,
        global_pool: str = "token",
        adapter_impl: AdapterImpl = "auto",
        adapter_recompute: bool = False,
        **vit_kwargs: Any,
    ):
        super().__init__()
        self.spectral_adapter = SpectralAdapter(impl=adapter_impl, recompute=adapter_recompute)
        self.vit_core = VisionTransformer(
            img_size=img_size,
            patch_size=token_patch_size,
            in_chans=OUT_CHANNELS,
            num_classes=num_classes,
            global_pool=global_pool,  # type: ignore[arg-type]
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            **vit_kwargs,
        )
        self.num_features: int = self.vit_core.num_features
        self.embed_dim = embed_dim
        self.token_patch_size = token_patch_size
        self.img_size = img_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bands, H, W) -> normalised tokens (B, 1 + tokens, embed_dim)."""
        return self.vit_core.forward_features(self.spectral_adapter(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens -> pooled features (B, num_features), or logits if the model has a head."""
        return self.vit_core.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bands, H, W) -> pooled features (B, num_features) (logits with a head)."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.vit_core.get_classifier()

    def compile_trunk(self, **kwargs: Any) -> None:
        """``torch.compile`` the transformer blocks in place (state-dict keys unchanged).

        The blocks are where inductor helps: it fuses LayerNorm, bias, GELU and the residual
        adds around cuBLAS and the attention kernel (Spec ViT-S at batch 256 on an H200: trunk
        forward + backward 214 -> 167 ms; the whole ``vit_core`` compiled: 176 ms). The 12 blocks
        share one graph. The adapter stays eager (its Triton kernels are tuned already) and so
        do the patch embedding and pooling, which MAE calls separately.
        """
        self.vit_core.blocks.compile(**kwargs)
