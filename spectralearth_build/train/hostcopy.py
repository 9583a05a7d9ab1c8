"""Small host-to-device copies that do not wait for the device.

``tensor.to("cuda")`` from ordinary (pageable) memory copies and then synchronises the stream:
the host waits until the GPU has run everything queued before it, so a training step that
draws its random numbers on the CPU (augmentation parameters, MAE masks) drains the GPU's queue
several times a step and the GPU idles while the host queues the next kernels.  Staged through
page-locked memory (torch's caching host allocator, which keeps a block until its copy has
run) the copy is queued like a kernel and the host runs on.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def to_device(x: Tensor, device: Any) -> Tensor:
    """``x`` on ``device``; a CPU tensor goes to CUDA without synchronising the host."""
    dev = torch.device(device)
    if dev.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(dev, non_blocking=True)
    return x.to(dev)
