"""The contract every method follows, so that the training loop knows none of them.

A method is an ``nn.Module`` around a backbone (``backbone(x) -> (B, D)``, ``num_features``):

- ``forward(views, rand, step) -> (loss, pending)``: ``views`` is a list of normalised
  ``(B, C, H, W)`` batches (two positive views, or one for MAE), ``rand`` the step's
  :class:`~.common.StepRandom`, ``loss`` the mean over the local samples (DDP's gradient
  averaging then gives the global mean), ``pending`` detached tensors kept for
  :meth:`after_step`;
- ``after_step(pending, step)``: the non-gradient updates once the optimiser has stepped
  (momentum encoders, MoCo queue, DINO centre), given the ``pending`` of every micro-batch of the
  step; it gathers what it needs over ranks;
- ``encoder``: the module evaluated downstream (the student / query backbone);
- ``n_views``: how many views ``forward`` wants;
- ``pixel_targets``: whether the loss reads the views' pixels as targets (MAE), so they stay
  float32 even when the model computes in bf16.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .common import StepRandom


class Method(nn.Module):
    """Base class; see the module docstring."""

    name = "method"
    n_views = 2
    pixel_targets = False
    backbone: Any

    def __init__(self, backbone: nn.Module, total_steps: int):
        super().__init__()
        self.backbone = backbone
        self.total_steps = int(total_steps)

    @property
    def encoder(self) -> nn.Module:
        return self.backbone

    def forward(  # type: ignore[override]
        self, views: list[Tensor], rand: StepRandom, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def after_step(self, pending: list[dict[str, Tensor]], step: int) -> None:
        """Non-gradient updates after the optimiser step (none by default)."""

    def schedule_values(self, step: int) -> dict[str, float]:
        """Scheduled hyper-parameters at ``step`` for the log (none by default)."""
        return {}

    @classmethod
    def from_config(cls, backbone: nn.Module, total_steps: int, **kw: Any) -> Method:
        return cls(backbone, total_steps, **kw)


def feature_dim(backbone: nn.Module) -> int:
    """Pooled feature width of a backbone (timm's ``num_features``)."""
    n = getattr(backbone, "num_features", None)
    if not isinstance(n, int):
        raise TypeError(f"{type(backbone).__name__} has no integer num_features")
    return n
