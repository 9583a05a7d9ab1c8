"""Parts shared by the methods: step-keyed randomness, schedules, momentum updates.

Randomness that touches samples (augmentation parameters, MAE masks) comes from
:class:`StepRandom`: numbers are drawn for the whole global batch of one optimiser step from a
generator seeded by ``(seed, step, purpose)`` and then sliced to the samples this process holds.
A run therefore gives the same numbers whatever the number of processes, gradient-accumulation
micro-batches or DataLoader workers, and a resumed run needs no generator state beyond the step.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..hostcopy import to_device


def _seed_of(*parts: object) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class StepRandom:
    """Random numbers of one optimiser step for global-batch positions ``start:stop``.

    Args:
        seed: run seed.
        step: optimiser step (0-based).
        global_batch: samples per optimiser step over all processes and micro-batches.
        start, stop: the global-batch positions of the local samples.
        device: where returned tensors live.
    """

    seed: int
    step: int
    global_batch: int
    start: int
    stop: int
    device: str = "cpu"

    def generator(self, purpose: str) -> torch.Generator:
        """A CPU generator of this step for ``purpose`` (draw for the whole global batch)."""
        return torch.Generator().manual_seed(_seed_of(self.seed, self.step, purpose))

    def uniform(self, purpose: str, *shape: int) -> Tensor:
        """``(stop - start, *shape)`` float32 uniform in [0, 1)."""
        x = torch.rand((self.global_batch, *shape), generator=self.generator(purpose))
        return to_device(x[self.start : self.stop], self.device)

    def normal(self, purpose: str, *shape: int) -> Tensor:
        """``(stop - start, *shape)`` float32 standard normal."""
        x = torch.randn((self.global_batch, *shape), generator=self.generator(purpose))
        return to_device(x[self.start : self.stop], self.device)

    def sub(self, start: int, stop: int) -> StepRandom:
        """The same step's numbers for local positions ``start:stop`` of this slice."""
        return StepRandom(
            self.seed,
            self.step,
            self.global_batch,
            self.start + start,
            self.start + stop,
            self.device,
        )


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine ramp from ``start`` at step 0 to ``end`` at step ``total - 1``."""
    if total <= 1:
        return end
    t = min(max(step, 0), total - 1) / (total - 1)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def linear_warmup(step: int, warmup: int, start: float, end: float) -> float:
    """Linear ramp from ``start`` to ``end`` over ``warmup`` steps, then ``end``."""
    if warmup <= 0 or step >= warmup:
        return end
    return start + (end - start) * step / warmup


@torch.no_grad()
def momentum_update(target: nn.Module, source: nn.Module, m: float) -> None:
    """``target = m * target + (1 - m) * source`` for parameters (BN statistics stay own)."""
    for pt, ps in zip(target.parameters(), source.parameters(), strict=True):
        pt.mul_(m).add_(ps.detach(), alpha=1.0 - m)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` without gradients (a momentum encoder / teacher)."""
    import copy

    out = copy.deepcopy(module)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def mlp(dims: list[int], batch_norm: bool, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]``; hidden ones followed by [BN] + ``act``."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=not (batch_norm and not last)))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(act())
    return nn.Sequential(*layers)
