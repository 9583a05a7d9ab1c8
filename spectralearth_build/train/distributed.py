"""Process-group helpers shared by the methods and the training loop.

Every method is written so that ``W`` processes with a per-rank batch of ``B`` compute what one
process computes with a batch of ``W * B``: feature gathers that carry gradients
(:func:`gather_with_grad`), statistics reduced over ranks (:func:`all_reduce_mean`), MoCo keys
gathered in rank order before they enter the queue, and batch normalisation over the global batch
(:func:`convert_sync_batchnorm`: torch's ``SyncBatchNorm`` on GPUs, :class:`GatherBatchNorm` on
CPUs, where ``SyncBatchNorm`` refuses to run).  Without a process group every helper is the
identity.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


def is_dist() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    """Rank of this process (0 without a group)."""
    return dist.get_rank() if is_dist() else 0


def init_from_env(device: str) -> tuple[int, int, int]:
    """Start the process group from torchrun's environment; ``(rank, local_rank, world)``.

    Uses NCCL on CUDA devices and gloo otherwise; without ``WORLD_SIZE`` > 1 nothing starts.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size()


def gather_with_grad(x: Tensor) -> Tensor:
    """``(W * B, ...)``: ``x`` of every rank concatenated in rank order, differentiable.

    The backward pass sums the gradients of all ranks' copies (reduce-scatter), so a loss that
    every rank computes identically on the gathered tensor back-propagates, after DDP's gradient
    averaging, exactly the gradient one process gets from the whole batch.
    """
    if not is_dist():
        return x
    return _AllGather.apply(x)


class _AllGather(torch.autograd.Function):
    """All-gather along dim 0; backward sums the gradients of every rank (reduce-scatter)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.n = x.shape[0]
        return gather_no_grad(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        r = rank()
        return grad[r * ctx.n : (r + 1) * ctx.n]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; backward sums the gradients of every rank."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        y = x.contiguous().clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """``(W * B, ...)``: ``x`` of every rank in rank order, without gradient."""
    if not is_dist():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over ranks (a new tensor)."""
    if not is_dist():
        return x
    y = x.clone()
    dist.all_reduce(y)
    return y / world_size()


class GatherBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation over the global batch of every rank, for backends without SyncBN.

    Per-channel sums and sums of squares are all-reduced with autograd support, so forward and
    backward equal a ``BatchNorm`` over the concatenated batch (running statistics included).
    Works for inputs ``(N, C)`` and ``(N, C, *spatial)``.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and is_dist()):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        n_local = torch.tensor(
            float(input.numel() // input.shape[1]), device=input.device, dtype=torch.float64
        )
        x = input.float()
        stats = torch.cat([x.sum(dims), (x * x).sum(dims)])
        stats = _AllReduceSum.apply(stats)
        n = n_local.clone()
        dist.all_reduce(n)
        c = input.shape[1]
        mean = stats[:c] / n.float()
        var = stats[c:] / n.float() - mean * mean
        shape = [1, c] + [1] * (input.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var.detach() * (n.float() / (n.float() - 1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device | str) -> nn.Module:
    """Replace every BatchNorm by its global-batch form (no-op without a process group)."""
    if not is_dist():
        return module
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_gather_bn(module)


def _convert_gather_bn(module: nn.Module) -> nn.Module:
    out: Any = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GatherBatchNorm
    ):
        out = GatherBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            out.weight = module.weight
            out.bias = module.bias
        if module.track_running_stats:
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_gather_bn(child))
    return out
