"""Masked autoencoder (He et al. 2022) on a Spec ViT: mask 90% of the tokens, rebuild the bands.

The spectral adapter maps the ``(B, 202, H, W)`` input to per-pixel features, the ViT's patch
embedding turns them into tokens (token patch ``p``), and only a random 10% of the tokens (per
sample, drawn from the step's :class:`~.common.StepRandom`) go through the encoder blocks.  A
light decoder (width 512, one block, 16 heads, learned position embeddings) gets the encoded
tokens plus a shared mask token in the masked places and predicts each token's ``p * p * 202``
input values.  The target is the normalised input patchified at ``p``, each patch standardised
over its own values (``norm_pix_loss``); the loss is the mean squared error over masked tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Method
from .common import StepRandom


def adapter_features(backbone: Any, x: Tensor) -> Tensor:
    """``(B, C', H, W)`` per-pixel features of the backbone's spectral adapter."""
    fn = getattr(backbone, "forward_adapter", None)
    if callable(fn):
        return fn(x)  # type: ignore[no-any-return]
    return backbone.spectral_adapter(x)  # type: ignore[no-any-return]


def patchify(x: Tensor, p: int) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, (H/p)*(W/p), p*p*C)``, tokens in row-major order."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def norm_pix_mse(pred: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """MSE over masked tokens (``mask`` 1) of per-token standardised ``target``; ``(B, L, V)``."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    target = (target - mean) / (var + eps).sqrt()
    per_token = (pred - target).pow(2).mean(dim=-1)
    return (per_token * mask).sum() / mask.sum()


class MAE(Method):
    """MAE on a backbone with ``spectral_adapter`` and a timm ``vit_core``.

    Args:
        backbone: Spec ViT (``spectral_adapter`` + ``vit_core``, a timm VisionTransformer).
        total_steps: optimiser steps of the run.
        mask_ratio: share of tokens hidden (0.9).
        decoder_dim, decoder_depth, decoder_heads: decoder size (512, 1, 16).
        in_chans: input bands predicted (202).
    """

    name = "mae"
    n_views = 1
    pixel_targets = True

    def __init__(
        self,
        backbone: nn.Module,
        total_steps: int,
        mask_ratio: float = 0.9,
        decoder_dim: int = 512,
        decoder_depth: int = 1,
        decoder_heads: int = 16,
        in_chans: int = 202,
    ):
        super().__init__(backbone, total_steps)
        from timm.models.vision_transformer import Block

        vit: Any = backbone.vit_core
        if not hasattr(vit, "patch_embed"):
            raise TypeError("MAE needs a backbone with a timm VisionTransformer as vit_core")
        self.patch = int(vit.patch_embed.patch_size[0])
        self.n_tokens = int(vit.patch_embed.num_patches)
        self.n_prefix = int(getattr(vit, "num_prefix_tokens", 1))
        self.mask_ratio = float(mask_ratio)
        dim = int(vit.embed_dim)
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, self.n_tokens, decoder_dim))
        self.decoder_blocks = nn.Sequential(
            *[Block(decoder_dim, decoder_heads, qkv_bias=True) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * in_chans)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)

    def n_keep(self) -> int:
        return max(1, int(round(self.n_tokens * (1.0 - self.mask_ratio))))

    def encode_visible(self, x: Tensor, keep: Tensor) -> Tensor:
        """Encoder output ``(B, prefix + n_keep, D)`` for token indices ``keep`` ``(B, n_keep)``."""
        vit = self.backbone.vit_core
        t = vit.patch_embed(adapter_features(self.backbone, x))
        t = vit._pos_embed(t)
        prefix, tokens = t[:, : self.n_prefix], t[:, self.n_prefix :]
        idx = keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
        t = torch.cat([prefix, torch.gather(tokens, 1, idx)], dim=1)
        t = vit.norm_pre(t)
        t = vit.blocks(t)
        return vit.norm(t)

    def forward(  # type: ignore[override]
        self, views: list[Tensor], rand: StepRandom, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x = views[0]
        b = x.shape[0]
        noise = rand.uniform("mae-mask", self.n_tokens).to(x.device)
        order = noise.argsort(dim=1)
        keep = order[:, : self.n_keep()]
        latent = self.encode_visible(x, keep)
        d = self.decoder_embed(latent[:, self.n_prefix :])
        full = self.mask_token.to(d.dtype).expand(b, self.n_tokens, -1).clone()
        full.scatter_(1, keep.unsqueeze(-1).expand(-1, -1, d.shape[-1]), d)
        full = self.decoder_blocks(full + self.decoder_pos.to(d.dtype))
        pred = self.decoder_pred(self.decoder_norm(full)).float()
        mask = torch.ones(b, self.n_tokens, device=x.device)
        mask.scatter_(1, keep, 0.0)
        loss = norm_pix_mse(pred, patchify(x.float(), self.patch), mask)
        return loss, {}
