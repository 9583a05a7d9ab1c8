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
  rows (N = B*H*W, bands padded to a multiple of 8); each conv layer is then a single GEMM with a
  *banded* weight matrix (input features = position x in-channel, output features = position x
  out-channel), built from the conv weight by one gather, so gradients flow into the same
  ``Conv3d.weight``; padding is implicit (rows of zeros). The first conv is linear in the input,
  so its BatchNorm batch statistics follow from the input rows' mean and covariance (one small
  Gram GEMM): BatchNorm-1 folds into the first GEMM and the widest activation (1280 values per
  pixel) is written once, by GEMM + ReLU, never normalised in a separate pass. BatchNorm-2/3 run
  on the (N*positions, C) views from float32 sums and sums of squares (PyTorch's BatchNorm
  kernels slow down sharply past 2**31 elements, i.e. at batch 256). The running-stat updates
  and ``num_batches_tracked`` follow BatchNorm exactly. A BatchNorm *subclass* in training
  (SyncBatchNorm, a global-batch BN after DDP conversion) is called as a module instead, so its
  own statistics code runs. The last average over the two remaining positions is a reduction of
  the (N, 2, 128) view; the result is a channels-last (B, 128, H, W) tensor (no transpose back).
  ``recompute=True`` runs layer 1 and layer 2's GEMM under activation checkpointing, so only
  the (N, 512) second-layer output is stored (running statistics move once).

* ``triton``: layers 1 and 2 as fused Triton kernels in block form (``adapter_triton``): the
  1,280-wide first-layer activation is computed on chip and never written, forward or
  backward; the input is read in its (B, bands, H, W) layout (no transposed copy) and
  BatchNorm-1 folds in as above, with the input moments from one batched Gram product.
  BatchNorm-2/3, layer 3 and the pooling run as in ``fast``.

``impl="auto"`` (the default) uses ``triton`` on CUDA tensors (``fast`` where Triton does not
import) and ``reference`` elsewhere; all give the same outputs and gradients within float32
rounding (tests check it on CPU, the Triton kernels through Triton's interpreter).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.weak import WeakIdKeyDictionary


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether the fused Triton kernels import (Triton installed, a GPU build of torch)."""
    try:
        from . import adapter_triton  # noqa: F401
    except ImportError:
        return False
    return True


AdapterImpl = Literal["auto", "reference", "fast", "triton"]
IMPLS: tuple[str, ...] = ("auto", "reference", "fast", "triton")


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


_INVERSE: WeakIdKeyDictionary = WeakIdKeyDictionary()


@torch.compiler.disable
def _inverse(index: torch.Tensor, n_src: int) -> torch.Tensor:
    """Where each source element occurs in ``index``, for the backward of ``fixed_gather``.

    Returns int64 (n_src, M) positions into ``index.flatten()``, padded with
    ``index.numel()`` (the position of a zero appended to the gradient).

    Built once per index tensor (the adapters cache their indices) on the CPU.
    """
    inv = _INVERSE.get(index)
    if inv is None or inv.shape[0] != n_src:
        flat = index.reshape(-1).cpu()
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=n_src + 1)[:n_src]
        width = max(int(counts.max()), 1) if n_src else 1
        inv = torch.full((n_src, width), flat.numel(), dtype=torch.int64)
        starts = torch.cumsum(counts, 0) - counts
        sorted_src = flat[order]
        keep = sorted_src < n_src
        src, pos = sorted_src[keep], order[keep]
        rank = torch.arange(src.numel()) - starts[src]
        inv[src, rank] = pos
        inv = inv.to(index.device)
        _INVERSE[index] = inv
    return inv


class _FixedGather(torch.autograd.Function):
    """``cat([src.flatten(), 0])[index]`` whose backward is a gather and a row sum.

    Autograd's backward of an advanced-indexing gather is an accumulating ``index_put_``,
    which on CUDA sorts the whole index on every call: 6 ms for one banded weight of the
    adapter, five times a step, 30% of the adapter's time at batch 256. Each source element
    here occurs at most M times (M = output positions of the layer), so its gradient is the
    sum of an (n_src, M) gather: exact, deterministic, microseconds.
    """

    @staticmethod
    def forward(
        ctx: Any, src: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor
    ) -> torch.Tensor:
        ctx.src_shape = src.shape
        ctx.save_for_backward(inverse)
        return torch.cat([src.reshape(-1), src.new_zeros(1)])[index]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inv,) = ctx.saved_tensors
        g = torch.cat([grad.reshape(-1), grad.new_zeros(1)])
        return g[inv].sum(1).reshape(ctx.src_shape), None, None


def fixed_gather(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``cat([src.flatten(), [0]])[index]``, differentiable in ``src`` with a fast backward.

    ``index`` (int64, any shape) holds positions into the flattened ``src`` and
    ``src.numel()`` for a zero; it should be a long-lived tensor (its inverse is cached).
    """
    return _FixedGather.apply(src, index, _inverse(index, src.numel()))


def banded_weight(weight: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The dense banded matrix of a (out, in, k, 1, 1) conv weight (differentiable gather)."""
    return fixed_gather(weight, index)


class SpectralAdapter(nn.Sequential):
    """SpectralEarth's spectral adapter, (B, bands, H, W) -> (B, 128, H, W).

    Args:
        impl: ``"auto"`` (triton on CUDA, reference elsewhere), ``"reference"`` (Conv3d stack),
            ``"fast"`` (banded GEMMs in channels-last) or ``"triton"`` (fused kernels for layers
            1-2), see the module docstring.
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
        #: fold BatchNorm-1 into the first GEMM (statistics from the input moments); when off,
        #: or for a BatchNorm subclass (SyncBatchNorm) in training, it runs as a module
        self.fold_first_layer = True
        self.out_channels = OUT_CHANNELS
        self._index_cache: dict[tuple[int, str], list[torch.Tensor]] = {}
        self._recomputing = False

    # -- dispatch -------------------------------------------------------------------------------
    def resolved_impl(self, x: torch.Tensor) -> str:
        """The implementation used for input ``x``."""
        if self.impl == "auto":
            if not x.is_cuda:
                return "reference"
            return "triton" if triton_available() else "fast"
        return self.impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: float (B, bands, H, W). Returns: (B, 128, H, W)."""
        if x.dim() != 4:
            raise ValueError(f"the spectral adapter expects (B, bands, H, W), got {tuple(x.shape)}")
        impl = self.resolved_impl(x)
        if impl == "triton":
            return self.forward_triton(x)
        if impl == "fast":
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

    def _conv_bn_relu(
        self, i: int, h_in: torch.Tensor, index: torch.Tensor, fused: bool = False
    ) -> torch.Tensor:
        """Layer ``i`` on (N, in features) rows: GEMM + BatchNorm + ReLU -> (N, out features)."""
        conv, bn = self[3 * i], self[3 * i + 1]
        assert isinstance(conv, nn.Conv3d) and isinstance(bn, nn.modules.batchnorm._BatchNorm)
        w = banded_weight(conv.weight, index)
        n_pos = index.shape[1] // conv.out_channels
        bias = conv.bias.repeat(n_pos) if conv.bias is not None else None
        h = F.linear(h_in, w.t(), bias) if bias is not None else h_in @ w
        return self._bn_relu(bn, h, n_pos, fused)

    def _bn_relu(
        self, bn: nn.Module, h: torch.Tensor, n_pos: int, fused: bool = False
    ) -> torch.Tensor:
        """BatchNorm + ReLU of (N, n_pos * C) rows, statistics over rows and positions.

        ``fused``: the Triton row kernels (``adapter_triton.BatchNormReLURows``).
        """
        assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
        rows, c = h.shape[0], bn.num_features
        if fused and type(bn) is nn.BatchNorm3d:
            y = _bn_relu_rows_fused(bn, h.reshape(rows * n_pos, c).contiguous())
            return y.reshape(rows, n_pos * c)
        if type(bn) is nn.BatchNorm3d:
            y = _bn_relu_rows(bn, h.reshape(rows * n_pos, c), update=not self._recomputing)
            return y.reshape(rows, n_pos * c)
        with self._bn_state_guard(bn):
            y = bn(h.reshape(rows * n_pos, c, 1, 1, 1))
        return F.relu(y).reshape(rows, n_pos * c)

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

    def _first_two_generic(
        self, rows: torch.Tensor, idx0: torch.Tensor, idx1: torch.Tensor
    ) -> torch.Tensor:
        """Layers 1 and 2 up to the second GEMM's output (N, 512), BatchNorm-1 as a module."""
        a1 = self._conv_bn_relu(0, rows, idx0)
        w2, b2 = self._banded(1, idx1)
        return torch.addmm(b2, a1, w2)

    def _banded(self, i: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv = self[3 * i]
        assert isinstance(conv, nn.Conv3d) and conv.bias is not None
        return banded_weight(conv.weight, index), conv.bias.repeat(
            index.shape[1] // conv.out_channels
        )

    def _first_layer_bn(
        self, mu: torch.Tensor, cov: torch.Tensor, index: torch.Tensor, count: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BatchNorm-1 as a per-channel (scale, shift) from the input's first two moments.

        The first conv is linear in the input, so its batch statistics follow from the mean
        ``mu`` (R,) and covariance ``cov`` (R, R) of the (padded) input rows: mean_f = mu @ W + b
        and var_f = diag(W^T C W) for the banded weight W, pooled over the positions by the law
        of total variance. In training the running statistics are updated as BatchNorm does,
        ``count`` being the number of pixels the moments were taken over.
        """
        conv, bn = self[0], self[1]
        assert isinstance(conv, nn.Conv3d) and isinstance(bn, nn.modules.batchnorm._BatchNorm)

        def batch_moments() -> tuple[torch.Tensor, torch.Tensor, int]:
            w, b = self._banded(0, index)  # (R, P*C), (P*C,)
            c = conv.out_channels
            n_pos = w.shape[1] // c
            with torch.autocast(mu.device.type, enabled=False):
                wf = w.to(mu.dtype)
                mean_f = mu @ wf + b.to(mu.dtype)  # (P*C,)
                var_f = ((cov @ wf) * wf).sum(0)
            mean_pc = mean_f.reshape(n_pos, c)
            mean = mean_pc.mean(0)
            var = (var_f.reshape(n_pos, c) + mean_pc.square()).mean(0) - mean.square()
            return mean, var.clamp_min(0), count * n_pos

        mean, var, _ = _statistics(bn, batch_moments)
        return _affine(bn, mean, var)

    def _folded_first_layer(
        self, rows: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer 1's banded GEMM with BatchNorm-1 folded in: (weight (R, P*32), bias (P*32,)).

        BatchNorm is a per-column scale and shift of the banded weight (``_first_layer_bn``),
        so the widest activation is written once, by a GEMM + ReLU.
        """
        mu, cov = _row_moments(rows)
        scale, shift = self._first_layer_bn(mu, cov, index, rows.shape[0])
        w, b = self._banded(0, index)
        conv = self[0]
        assert isinstance(conv, nn.Conv3d)
        n_pos = w.shape[1] // conv.out_channels
        scale_f, shift_f = scale.repeat(n_pos), shift.repeat(n_pos)
        return w * scale_f.to(w.dtype), b * scale_f + shift_f

    def _can_fold(self) -> bool:
        """BatchNorm-1 folds unless it is a BatchNorm subclass (SyncBatchNorm) in training."""
        bn1 = self[1]
        return self.fold_first_layer and (not bn1.training or type(bn1) is nn.BatchNorm3d)

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Banded-GEMM implementation (same parameters and results as the reference)."""
        b, bands, hh, ww = x.shape
        idx = self._indices(bands, x.device)
        dev = x.device.type
        if torch.is_autocast_enabled(dev):
            x = x.to(torch.get_autocast_dtype(dev))
        # channels-last rows (N, bands padded to a multiple of 8): one transpose of the input
        rows = x.permute(0, 2, 3, 1).reshape(b * hh * ww, bands)
        if idx[0].shape[0] > bands:
            rows = F.pad(rows, (0, idx[0].shape[0] - bands))
        # a BatchNorm subclass in training (SyncBatchNorm, a global-batch BN) keeps its own
        # statistics code: it runs as a module on the wide activation
        fold = self._can_fold()
        recompute = self.recompute and torch.is_grad_enabled()
        if fold:
            w1, b1 = self._folded_first_layer(rows, idx[0])
            w2, b2 = self._banded(1, idx[1])
            args = (rows, w1, b1, w2, b2)
            h2 = (
                checkpoint(_two_gemms, *args, use_reentrant=False)
                if recompute
                else _two_gemms(*args)
            )
        elif recompute:
            h2 = checkpoint(
                self._first_two_generic,
                rows,
                idx[0],
                idx[1],
                use_reentrant=False,
                context_fn=lambda: (contextlib.nullcontext(), self._recompute_mode()),
            )
        else:
            h2 = self._first_two_generic(rows, idx[0], idx[1])
        return self._last_layers(h2, idx[2], (b, hh, ww))

    def _last_layers(
        self,
        h2: torch.Tensor,
        index: torch.Tensor,
        bhw: tuple[int, int, int],
        fused: bool = False,
    ) -> torch.Tensor:
        """BatchNorm-2 + ReLU, layer 3 and the average over positions, from (N, P2*64) rows."""
        bn = self[4]
        assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
        a2 = self._bn_relu(bn, h2, h2.shape[1] // bn.num_features, fused)
        a3 = self._conv_bn_relu(2, a2, index, fused)  # (N, last positions * 128)
        b, hh, ww = bhw
        out = a3.reshape(b * hh * ww, -1, OUT_CHANNELS).mean(dim=1)  # adaptive avg pool
        return out.reshape(b, hh, ww, OUT_CHANNELS).permute(0, 3, 1, 2)

    def forward_triton(self, x: torch.Tensor) -> torch.Tensor:
        """Layers 1-2 as fused Triton kernels (``adapter_triton``), the rest as ``fast``.

        Falls back to ``forward_fast`` where the kernels do not apply: an input that requires a
        gradient, or BatchNorm-1 that cannot be folded (SyncBatchNorm in training).
        """
        if x.requires_grad or not self._can_fold():
            return self.forward_fast(x)
        from . import adapter_triton as kt

        b, bands, hh, ww = x.shape
        idx = self._indices(bands, x.device)
        dev = x.device.type
        if torch.is_autocast_enabled(dev):
            x = x.to(torch.get_autocast_dtype(dev))
        x = x.contiguous()
        mu, cov = _image_moments(x)
        pad = idx[0].shape[0] - bands
        mu, cov = F.pad(mu, (0, pad)), F.pad(cov, (0, pad, 0, pad))
        scale, shift = self._first_layer_bn(mu, cov, idx[0], b * hh * ww)
        conv1, conv2 = self[0], self[3]
        assert isinstance(conv1, nn.Conv3d) and isinstance(conv2, nn.Conv3d)
        assert conv1.bias is not None and conv2.bias is not None
        w1 = conv1.weight.reshape(conv1.out_channels, -1) * scale[:, None]
        b1 = conv1.bias * scale + shift
        blocks = kt.block_weights(w1, b1, conv2.weight)
        lens = adapter_positions(bands)
        geometry = kt.BlockGeometry(bands=bands, pos1=lens[1], pos2=lens[2])
        h2 = kt.fused_layers12(x, *blocks, conv2.bias, geometry)
        return self._last_layers(h2, idx[2], (b, hh, ww), fused=True)


def _two_gemms(
    rows: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    """relu(rows @ w1 + b1) @ w2 + b2: layer 1 (BatchNorm folded) and layer 2's GEMM."""
    a1 = F.relu(torch.addmm(b1, rows, w1), inplace=True)
    return torch.addmm(b2, a1, w2)


def _image_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (C,) and covariance (C, C) over the pixels of (B, C, H, W), float32 or more.

    Same moments as ``_row_moments`` of the pixel rows, without making the rows: one batched
    Gram product over (B, C, H*W).
    """
    b, c = x.shape[:2]
    x3 = x.reshape(b, c, -1)
    n = x3.shape[0] * x3.shape[2]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    mu = x3.sum((0, 2), dtype=acc) / n
    gram = None
    if x.dtype in (torch.bfloat16, torch.float16) and x.is_cuda:
        try:  # half inputs, float32 accumulation and output (torch >= 2.8 on CUDA)
            gram = torch.bmm(x3, x3.mT, out_dtype=torch.float32).sum(0)  # type: ignore[call-arg]
        except (TypeError, RuntimeError, NotImplementedError):
            gram = None
    if gram is None:
        xf = x3.to(acc)
        gram = torch.bmm(xf, xf.mT).sum(0)
    return mu, gram / n - torch.outer(mu, mu)


def _row_moments(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (R,) and covariance (R, R) of the rows of (N, R), accumulated in float32 or more."""
    n = rows.shape[0]
    acc = torch.float64 if rows.dtype == torch.float64 else torch.float32
    mu = rows.mean(0, dtype=acc)
    gram = None
    if rows.dtype in (torch.bfloat16, torch.float16) and rows.is_cuda:
        try:  # half inputs, float32 accumulation and output (torch >= 2.8 on CUDA)
            gram = torch.mm(rows.t(), rows, out_dtype=torch.float32)  # type: ignore[call-arg]
        except (TypeError, RuntimeError, NotImplementedError):
            gram = None
    if gram is None:
        r = rows.to(acc)
        gram = r.t() @ r
    return mu, gram / n - torch.outer(mu, mu)


def _statistics(
    bn: nn.modules.batchnorm._BatchNorm,
    batch_moments: Callable[[], tuple[torch.Tensor, torch.Tensor, int]],
    update: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The (mean, biased variance) BatchNorm normalises with, and whether they are the batch's.

    In training (or without running statistics) they are the batch's, from ``batch_moments()``
    (mean, variance and the number of values they were taken over), and the running statistics
    move as BatchNorm moves them (unless ``update`` is off); else the running ones.
    """
    if bn.training or bn.running_mean is None:
        mean, var, count = batch_moments()
        if update and bn.training and bn.track_running_stats and bn.running_mean is not None:
            _update_running_stats(bn, mean.detach(), var.detach(), count)
        return mean, var, True
    assert bn.running_var is not None
    return bn.running_mean, bn.running_var, False


def _affine(
    bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm as a per-channel (scale, shift) for the statistics ``mean`` and ``var``."""
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _bn_relu_rows(
    bn: nn.modules.batchnorm._BatchNorm, h: torch.Tensor, update: bool = True
) -> torch.Tensor:
    """relu(BatchNorm(h)) for (M, C) rows with plain tensor ops (autograd-native).

    PyTorch's BatchNorm kernels slow down sharply on tensors of more than 2**31 elements (the
    second layer's output at batch 256); sums and sums of squares accumulated in float32 by the
    reduction kernels, then one multiply-add per element, do not. Same statistics, running-stat
    update and gradients as BatchNorm (the gradient flows through the batch mean and variance).
    """

    def batch_moments() -> tuple[torch.Tensor, torch.Tensor, int]:
        m = h.shape[0]
        acc = torch.float64 if h.dtype == torch.float64 else torch.float32
        mean = h.sum(0, dtype=acc) / m
        sq = torch.linalg.vector_norm(h, 2, dim=0, dtype=acc).square() / m
        return mean, (sq - mean.square()).clamp_min(0), m

    mean, var, _ = _statistics(bn, batch_moments, update)
    scale, shift = _affine(bn, mean, var)
    return F.relu(torch.addcmul(shift.to(h.dtype), h, scale.to(h.dtype)))


def _bn_relu_rows_fused(bn: nn.modules.batchnorm._BatchNorm, h: torch.Tensor) -> torch.Tensor:
    """``_bn_relu_rows`` through the Triton row kernels.

    One reduction and one elementwise pass each way, float32 arithmetic; the running-stat
    update stays in eager code.
    """
    from . import adapter_triton as kt

    def batch_moments() -> tuple[torch.Tensor, torch.Tensor, int]:
        return (*kt.row_moments(h), h.shape[0])

    mean, var, batch = _statistics(bn, batch_moments)
    return kt.bn_relu_rows(h, bn.weight, bn.bias, mean.float(), var.float(), bn.eps, batch)


def _update_running_stats(
    bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor, count: int
) -> None:
    """BatchNorm's running-stat update (momentum or cumulative average, unbiased variance)."""
    assert bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():
        factor = bn.momentum
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if factor is None:
                factor = 1.0 / float(bn.num_batches_tracked)
        assert factor is not None
        unbiased = var * (count / max(count - 1, 1))
        bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
        bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
