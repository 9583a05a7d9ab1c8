"""MoCo-v2 (He et al. 2020; Chen et al. 2020): query encoder, momentum key encoder, a queue.

InfoNCE over one positive key and a queue of negatives: the query of view 1 against the key of
view 2 (the paper's asymmetric form), temperature ``T``.  After each optimiser step the key
encoder moves towards the query encoder with momentum ``m`` and the step's keys, gathered over
all ranks in global-batch order, replace the oldest queue entries.  The queue is a buffer (it is
checkpointed and restored with the model).  Heads: ``D -> 2048 -> 128`` with ReLU (lightly's
``MoCoProjectionHead``, no BN as in v2).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightly.models.modules import MoCoProjectionHead
from torch import Tensor, nn

from ..distributed import gather_no_grad
from .base import Method, feature_dim
from .common import StepRandom, frozen_copy, momentum_update


def moco_loss(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """InfoNCE: ``q``, ``k`` ``(B, d)`` and ``queue`` ``(K, d)`` L2-normalised; mean over B."""
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.T
    logits = torch.cat([pos, neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


class MoCo(Method):
    """MoCo-v2 with a gathered queue.

    Args:
        backbone: encoder, ``(B, C, H, W) -> (B, D)``.
        total_steps: optimiser steps of the run.
        queue_size: negatives kept (32768).
        momentum: key-encoder momentum (0.999, constant as in SpectralEarth's recipe).
        temperature: InfoNCE temperature (0.1).
        hidden_dim, out_dim: projection head widths (2048, 128).
    """

    name = "moco"
    queue: Tensor
    queue_ptr: Tensor
    backbone_k: Any
    head_k: Any

    def __init__(
        self,
        backbone: nn.Module,
        total_steps: int,
        queue_size: int = 32768,
        momentum: float = 0.999,
        temperature: float = 0.1,
        hidden_dim: int = 2048,
        out_dim: int = 128,
    ):
        super().__init__(backbone, total_steps)
        self.head = MoCoProjectionHead(feature_dim(backbone), hidden_dim, out_dim)
        self.backbone_k = frozen_copy(backbone)
        self.head_k = frozen_copy(self.head)
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        queue = F.normalize(torch.randn(queue_size, out_dim), dim=1)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(  # type: ignore[override]
        self, views: list[Tensor], rand: StepRandom, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        q = F.normalize(self.head(self.backbone(views[0])).float(), dim=1)
        with torch.no_grad():
            k = F.normalize(self.head_k(self.backbone_k(views[1])).float(), dim=1)
        loss = moco_loss(q, k, self.queue.clone(), self.temperature)
        return loss, {"keys": k.detach()}

    @torch.no_grad()
    def after_step(self, pending: list[dict[str, Tensor]], step: int) -> None:
        momentum_update(self.backbone_k, self.backbone, self.momentum)
        momentum_update(self.head_k, self.head, self.momentum)
        keys = gather_no_grad(torch.cat([p["keys"] for p in pending]))
        size = self.queue.shape[0]
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        if keys.shape[0] > size:  # more keys than slots: keep the newest
            keys, idx = keys[-size:], idx[-size:]
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)
