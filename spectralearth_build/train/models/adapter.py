"""The SpectralEarth spectral adapter: a per-pixel 1-D conv stack over the bands.

The adapter turns a (B, bands, H, W) cube into (B, 128, H, W) features. Its parameters live in an
``nn.Sequential`` laid out exactly as in SpectralEarth's code (indices 0, 3, 6 Conv3d with kernels
(7,1,1), (7,1,1), (5,1,1), strides 5, 5, 3 and padding (1,0,0) along the bands; 1, 4, 7
BatchNorm3d; 2, 5, 8 ReLU; 9 AdaptiveAvgPool3d to depth 1), so its ``state_dict`` keys are
``0.weight`` ... ``7.num_batches_tracked`` and published checkpoints load unchanged.

Two forward implementations share those parameters:

* ``reference``: the Conv3d stack itself, on a (B, 1, bands, H, W) tensor. cuDNN runs these
  (k,1,1) convolutions over NCDHW slowly, and stores wide activations (1280 values per pixel
  after the first layer) in that layout.
* ``fast``: every pixel is one row of a matrix. The cube is transposed once to channels-last
  rows (N = B*H*W, bands); each conv layer is then a single GEMM with a *banded* weight matrix
  (input features = position x in-channel, output features = position x out-channel), built from
  the conv weight by one gather, so gradients flow into the same ``Conv3d.weight``. Padding is
  implicit (rows of zeros never multiply anything), and the band count is padded to a multiple
  of 8 for tensor-core GEMMs. BatchNorm runs on the contiguous (N*positions, C, 1, 1, 1) view,
  which PyTorch normalises with its channels-last kernels; the BatchNorm3d *modules* are called,
  so batch statistics, running-stat updates, ``num_batches_tracked`` and SyncBatchNorm
  conversion behave as in the reference. The last average over the two remaining positions is a
  reduction of the (N, 2, 128) view, and the result is returned as a channels-last
  (B, 128, H, W) tensor (no transpose back). With ``recompute=True`` the first two layers
  (GEMM, BN, ReLU, GEMM) run under activation checkpointing: only the (N, 512) second-layer
  output is stored and the wide first-layer activations are recomputed in the backward pass
  (BatchNorm running statistics are restored around the recomputation, so they move once).

``impl="auto"`` (the default) uses ``fast`` on CUDA tensors and ``reference`` elsewhere; both
give the same outputs and gradients within float32 rounding (tests check it on CPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

AdapterImpl = Literal["auto", "reference", "fast"]
IMPLS: tuple[str, ...] = ("auto", "reference", "fast")


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer of the adapter along the band axis (sizes in channels and band positions)."""

    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    padding: int

    def out_len(self, in_len: int) -> int:
        """Number of output positions for ``in_len`` input positions."""
        return (in_len + 2 * self.padding - self.kernel) // self.stride + 1

    def to_dict(self) -> dict[str, int]:
        return {
            "in_ch": self.in_ch,
            "out_ch": self.out_ch,
            "kernel": self.kernel,
            "stride": self.stride,
            "padding": self.padding,
        }


#: SpectralEarth's adapter: 1->32 k7 s5 p1, 32->64 k7 s5 p1, 64->128 k5 s3 p1.
ADAPTER_LAYERS: tuple[ConvSpec, ...] = (
    ConvSpec(1, 32, 7, 5, 1),
    ConvSpec(32, 64, 7, 5, 1),
    ConvSpec(64, 128, 5, 3, 1),
)
OUT_CHANNELS = ADAPTER_LAYERS[-1].out_ch


def adapter_positions(bands: int) -> list[int]:
    """Band positions before and after each layer, e.g. 202 -> [202, 40, 8, 2]."""
    lens = [bands]
    for spec in ADAPTER_LAYERS:
        lens.append(spec.out_len(lens[-1]))
    if lens[-1] < 1:
        raise ValueError(f"the spectral adapter needs more than {bands} bands")
    return lens


def banded_index(spec: ConvSpec, in_len: int, rows: int | None = None) -> torch.Tensor:
    """Gather index turning a conv weight into its dense banded matrix.

    Args:
        spec: the conv layer.
        in_len: input positions; input feature ``pos * in_ch + ci``.
        rows: number of matrix rows (>= ``in_len * in_ch``; extra rows are zero), for padding.

    Returns:
        int64 (rows, out_len * out_ch) indices into ``cat([weight.flatten(), [0]])``, where the
        weight has shape (out_ch, in_ch, kernel); output feature ``p * out_ch + co``.
    """
    out_len = spec.out_len(in_len)
    n_rows = in_len * spec.in_ch if rows is None else rows
    pos = torch.arange(in_len).repeat_interleave(spec.in_ch)  # (in_len*in_ch,)
    ci = torch.arange(spec.in_ch).repeat(in_len)
    p = torch.arange(out_len).repeat_interleave(spec.out_ch)  # (out_len*out_ch,)
    co = torch.arange(spec.out_ch).repeat(out_len)
    k = pos[:, None] - (spec.stride * p[None, :] - spec.padding)
    valid = (k >= 0) & (k < spec.kernel)
    flat = (co[None, :] * spec.in_ch + ci[:, None]) * spec.kernel + k
    zero_slot = spec.out_ch * spec.in_ch * spec.kernel
    idx = torch.where(valid, flat, torch.full_like(flat, zero_slot))
    if n_rows > idx.shape[0]:
        pad = torch.full((n_rows - idx.shape[0], idx.shape[1]), zero_slot, dtype=idx.dtype)
        idx = torch.cat([idx, pad])
    return idx


def banded_weight(weight: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The dense banded matrix of a (out, in, k, 1, 1) conv weight (differentiable gather)."""
    flat = torch.cat([weight.reshape(-1), weight.new_zeros(1)])
    return flat[index]


class SpectralAdapter(nn.Sequential):
    """SpectralEarth's spectral adapter, (B, bands, H, W) -> (B, 128, H, W).

    Args:
        impl: ``"auto"`` (fast on CUDA, reference elsewhere), ``"reference"`` (Conv3d stack) or
            ``"fast"`` (banded GEMMs in channels-last, see the module docstring).
        recompute: in the fast path, recompute the wide first-layer activations in the backward
            pass instead of storing them (less memory; one more first-layer GEMM).
    """

    def __init__(self, impl: AdapterImpl = "auto", recompute: bool = False):
        layers: list[nn.Module] = []
        for spec in ADAPTER_LAYERS:
            layers += [
                nn.Conv3d(
                    spec.in_ch,
                    spec.out_ch,
                    kernel_size=(spec.kernel, 1, 1),
                    stride=(spec.stride, 1, 1),
                    padding=(spec.padding, 0, 0),
                ),
                nn.BatchNorm3d(spec.out_ch),
                nn.ReLU(),
            ]
        layers.append(nn.AdaptiveAvgPool3d((1, None, None)))
        super().__init__(*layers)
        if impl not in IMPLS:
            raise ValueError(f"adapter impl must be one of {IMPLS}, not {impl!r}")
        self.impl: str = impl
        self.recompute = recompute
        self.out_channels = OUT_CHANNELS
        self._index_cache: dict[tuple[int, str], list[torch.Tensor]] = {}
        self._recomputing = False

    # -- dispatch -------------------------------------------------------------------------------
    def resolved_impl(self, x: torch.Tensor) -> str:
        """The implementation used for input ``x``."""
        if self.impl == "auto":
            return "fast" if x.is_cuda else "reference"
        return self.impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: float (B, bands, H, W). Returns: (B, 128, H, W)."""
        if x.dim() != 4:
            raise ValueError(f"the spectral adapter expects (B, bands, H, W), got {tuple(x.shape)}")
        if self.resolved_impl(x) == "fast":
            return self.forward_fast(x)
        return self.forward_reference(x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The Conv3d stack as SpectralEarth runs it."""
        y = x.unsqueeze(1)
        for module in self:
            y = module(y)
        return y.squeeze(2)

    # -- fast path ------------------------------------------------------------------------------
    def _indices(self, bands: int, device: torch.device) -> list[torch.Tensor]:
        key = (bands, str(device))
        if key not in self._index_cache:
            lens = adapter_positions(bands)
            rows0 = -(-bands // 8) * 8
            self._index_cache[key] = [
                banded_index(spec, lens[i], rows0 if i == 0 else None).to(device)
                for i, spec in enumerate(ADAPTER_LAYERS)
            ]
        return self._index_cache[key]

    def _conv_bn_relu(self, i: int, h_in: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Layer ``i`` on (N, in features) rows: GEMM + BatchNorm + ReLU -> (N, out features)."""
        conv, bn = self[3 * i], self[3 * i + 1]
        assert isinstance(conv, nn.Conv3d) and isinstance(bn, nn.modules.batchnorm._BatchNorm)
        w = banded_weight(conv.weight, index)
        n_pos = index.shape[1] // conv.out_channels
        bias = conv.bias.repeat(n_pos) if conv.bias is not None else None
        h = F.linear(h_in, w.t(), bias) if bias is not None else h_in @ w
        rows = h.shape[0]
        with self._bn_state_guard(bn):
            h = bn(h.reshape(rows * n_pos, conv.out_channels, 1, 1, 1))
        return F.relu(h).reshape(rows, n_pos * conv.out_channels)

    @contextlib.contextmanager
    def _bn_state_guard(self, bn: nn.Module) -> Iterator[None]:
        """During a checkpoint recomputation, leave BatchNorm running statistics untouched."""
        if not (self._recomputing and bn.training):
            yield
            return
        saved = {name: buf.clone() for name, buf in bn.named_buffers() if buf is not None}
        try:
            yield
        finally:
            with torch.no_grad():
                for name, buf in bn.named_buffers():
                    if name in saved:
                        buf.copy_(saved[name])

    @contextlib.contextmanager
    def _recompute_mode(self) -> Iterator[None]:
        self._recomputing = True
        try:
            yield
        finally:
            self._recomputing = False

    def _first_two(
        self, rows: torch.Tensor, idx0: torch.Tensor, idx1: torch.Tensor
    ) -> torch.Tensor:
        """Layers 1 and 2 up to the second GEMM's output (N, 512), before its BatchNorm."""
        a1 = self._conv_bn_relu(0, rows, idx0)
        conv = self[3]
        assert isinstance(conv, nn.Conv3d)
        w = banded_weight(conv.weight, idx1)
        n_pos = idx1.shape[1] // conv.out_channels
        assert conv.bias is not None
        return F.linear(a1, w.t(), conv.bias.repeat(n_pos))

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Banded-GEMM implementation (same parameters and results as the reference)."""
        b, bands, hh, ww = x.shape
        idx = self._indices(bands, x.device)
        # channels-last rows (N, bands padded to a multiple of 8): one transpose of the input
        rows = x.permute(0, 2, 3, 1).reshape(b * hh * ww, bands)
        if idx[0].shape[0] > bands:
            rows = F.pad(rows, (0, idx[0].shape[0] - bands))
        if self.recompute and torch.is_grad_enabled():
            h2 = checkpoint(
                self._first_two,
                rows,
                idx[0],
                idx[1],
                use_reentrant=False,
                context_fn=lambda: (contextlib.nullcontext(), self._recompute_mode()),
            )
        else:
            h2 = self._first_two(rows, idx[0], idx[1])
        bn = self[4]
        assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
        a2 = F.relu(bn(h2.reshape(-1, bn.num_features, 1, 1, 1))).reshape(h2.shape[0], -1)
        a3 = self._conv_bn_relu(2, a2, idx[2])  # (N, last positions * 128)
        out = a3.reshape(b * hh * ww, -1, OUT_CHANNELS).mean(dim=1)  # adaptive avg pool
        return out.reshape(b, hh, ww, OUT_CHANNELS).permute(0, 3, 1, 2)
