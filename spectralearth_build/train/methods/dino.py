"""DINO (Caron et al. 2021) with two global views and no multi-crop, as SpectralEarth trains it.

Student and teacher share the architecture: backbone, then a head ``D -> 2048 -> 2048 -> 256``
(GELU), L2 normalisation and a weight-normalised linear layer to 128 prototypes.  The loss is the
cross-entropy between the sharpened, centred teacher distribution of one view and the student
distribution of the other, averaged over both pairings.  Schedules are per optimiser step over
the whole run: the teacher temperature warms up linearly (0.04 -> 0.07 over the first 30%), the
teacher momentum follows a cosine from 0.996 to 1 ending at the last step (SpectralEarth's code
ends it after 10 epochs, freezing the teacher for the rest of training; this does not).  The
centre is an EMA (0.9) of the teacher outputs averaged over the global batch (all ranks).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import all_reduce_mean
from .base import Method, feature_dim
from .common import StepRandom, cosine, frozen_copy, linear_warmup, mlp, momentum_update


class DINOHead(nn.Module):
    """MLP ``D -> hidden -> hidden -> bottleneck``, L2 norm, weight-normalised ``-> out``.

    The last layer's rows are normalised to unit length in every forward (DINO's
    ``norm_last_layer=True``: weight norm with the gain fixed to 1).
    """

    def __init__(
        self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, out_dim: int = 128
    ):
        super().__init__()
        self.mlp = mlp([in_dim, hidden_dim, hidden_dim, bottleneck_dim], False, nn.GELU)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.last_layer.weight, dim=1))


def dino_loss(
    teacher: list[Tensor],
    student: list[Tensor],
    center: Tensor,
    teacher_temp: float,
    student_temp: float,
) -> Tensor:
    """Mean cross-entropy over pairs of different views; each tensor ``(B, K)`` logits."""
    total = teacher[0].new_zeros(())
    n = 0
    for it, t in enumerate(teacher):
        p_t = F.softmax((t - center) / teacher_temp, dim=-1)
        for is_, s in enumerate(student):
            if it == is_:
                continue
            total = total + (-p_t * F.log_softmax(s / student_temp, dim=-1)).sum(-1).mean()
            n += 1
    return total / n


class DINO(Method):
    """DINO student/teacher with step-based schedules and a centre averaged over ranks.

    Args:
        backbone: encoder, ``(B, C, H, W) -> (B, D)``.
        total_steps: optimiser steps of the run (schedules end there).
        hidden_dim, bottleneck_dim, out_dim: head widths (2048, 256, 128).
        student_temp: 0.1.
        teacher_temp, warmup_teacher_temp: final and initial teacher temperature (0.07, 0.04).
        teacher_temp_warmup: fraction of the run over which it warms up (0.3).
        momentum_start, momentum_end: teacher EMA momentum, cosine over the whole run.
        center_momentum: EMA of the centre (0.9).
    """

    name = "dino"
    center: Tensor
    backbone_t: Any
    head_t: Any

    def __init__(
        self,
        backbone: nn.Module,
        total_steps: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        out_dim: int = 128,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        teacher_temp_warmup: float = 0.3,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
        center_momentum: float = 0.9,
    ):
        super().__init__(backbone, total_steps)
        self.head = DINOHead(feature_dim(backbone), hidden_dim, bottleneck_dim, out_dim)
        self.backbone_t = frozen_copy(backbone)
        self.head_t = frozen_copy(self.head)
        self.student_temp = float(student_temp)
        self.teacher_temp = float(teacher_temp)
        self.warmup_teacher_temp = float(warmup_teacher_temp)
        self.teacher_temp_warmup = float(teacher_temp_warmup)
        self.momentum_start = float(momentum_start)
        self.momentum_end = float(momentum_end)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, step: int) -> float:
        warm = int(round(self.teacher_temp_warmup * self.total_steps))
        return linear_warmup(step, warm, self.warmup_teacher_temp, self.teacher_temp)

    def teacher_momentum(self, step: int) -> float:
        return cosine(step, self.total_steps, self.momentum_start, self.momentum_end)

    def schedule_values(self, step: int) -> dict[str, float]:
        return {
            "teacher_temp": self.teacher_temperature(step),
            "teacher_momentum": self.teacher_momentum(step),
        }

    def forward(  # type: ignore[override]
        self, views: list[Tensor], rand: StepRandom, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        student = [self.head(self.backbone(v)).float() for v in views]
        with torch.no_grad():
            teacher = [self.head_t(self.backbone_t(v)).float() for v in views]
        loss = dino_loss(
            teacher, student, self.center, self.teacher_temperature(step), self.student_temp
        )
        batch_mean = torch.cat(teacher).mean(dim=0, keepdim=True)
        return loss, {"teacher_mean": batch_mean.detach()}

    @torch.no_grad()
    def after_step(self, pending: list[dict[str, Tensor]], step: int) -> None:
        m = self.teacher_momentum(step)
        momentum_update(self.backbone_t, self.backbone, m)
        momentum_update(self.head_t, self.head, m)
        batch_center = all_reduce_mean(torch.stack([p["teacher_mean"] for p in pending]).mean(0))
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)
