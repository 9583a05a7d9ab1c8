"""Barlow Twins (Zbontar et al. 2021): push the views' cross-correlation to the identity.

Projector ``D -> 2048 -> 2048 -> 2048`` (BN + ReLU after the hidden layers).  Embeddings are
gathered over ranks (with gradient) and standardised over the global batch before the
cross-correlation, so ``W`` processes compute exactly the loss of one process with the whole
batch (lightly's ``gather_distributed`` averages per-rank matrices standardised per rank, which
differs).  Loss ``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`` with ``lambda = 5e-3``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..distributed import gather_with_grad
from .base import Method, feature_dim
from .common import StepRandom, mlp


def barlow_twins_loss(z_a: Tensor, z_b: Tensor, lambd: float) -> Tensor:
    """Loss of embeddings ``(N, d)`` of the two views (standardised here over N)."""
    n = z_a.shape[0]
    a = (z_a - z_a.mean(0)) / z_a.std(0, unbiased=False).clamp_min(1e-12)
    b = (z_b - z_b.mean(0)) / z_b.std(0, unbiased=False).clamp_min(1e-12)
    c = a.T @ b / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + lambd * off


class BarlowTwins(Method):
    """Barlow Twins with a global-batch cross-correlation.

    Args:
        backbone: encoder, ``(B, C, H, W) -> (B, D)``.
        total_steps: optimiser steps of the run.
        proj_dims: projector widths after ``D`` ([2048, 2048, 2048]).
        lambd: weight of the redundancy-reduction term (5e-3).
    """

    name = "barlow"

    def __init__(
        self,
        backbone: nn.Module,
        total_steps: int,
        proj_dims: tuple[int, ...] | list[int] = (2048, 2048, 2048),
        lambd: float = 5e-3,
    ):
        super().__init__(backbone, total_steps)
        self.projector = mlp([feature_dim(backbone), *proj_dims], batch_norm=True)
        self.lambd = float(lambd)

    def forward(  # type: ignore[override]
        self, views: list[Tensor], rand: StepRandom, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        z_a = gather_with_grad(self.projector(self.backbone(views[0])).float())
        z_b = gather_with_grad(self.projector(self.backbone(views[1])).float())
        return barlow_twins_loss(z_a, z_b, self.lambd), {}
