"""Batched device-side transforms: int16 in, normalised and augmented float32 out.

The loader delivers int16 batches; they cross to the device as int16 (half the bytes of float32)
and everything else runs there, batched, with a random draw per sample:

1. **Normalise** with the store's per-band mean and std (raw int16 units):
   ``(x - mean) / std`` in float32.
2. **Random resized crop, flips and blur as two matrix products.**  Crop boxes follow
   torchvision's ``RandomResizedCrop`` rule (area fraction uniform in ``crop_scale``, log aspect
   ratio uniform in ``crop_ratio``, ten tries, then a centre crop); a horizontal or vertical flip
   swaps the box's ends. Bilinear resampling (``align_corners=True``, as kornia's
   ``crop_and_resize``) and the Gaussian blur (probability ``blur``, sigma uniform in
   ``blur_sigma`` per sample, kernel ``size // 10`` rounded to odd as in SpectralEarth's MoCo
   recipe, reflect border, kornia's kernel) each act on rows and columns separately, so the
   whole augmentation of sample ``b`` is ``rows[b] @ x[b, c] @ cols[b].T``: two batched GEMMs
   over all bands (TF32 on CUDA), no per-sample kernels. Tests check it against kornia's
   ``crop_and_resize`` + ``gaussian_blur2d`` (1e-6 in float64); on an H200, 256 views of the
   MoCo recipe take 9.2 ms against kornia's 37.5 ms (``benchmarks/device_transforms.py``).
   On CUDA, where Triton imports and the sides are at most 128 px, :class:`DeviceTransform`
   runs steps 1 and 2 as one kernel (:mod:`.transforms_triton`: the int16 input read once,
   the output written once in its final layout and dtype); the same draws, the same operators.
   The whole int16 transform of 256 views then takes 5.5 ms instead of 11.2.

Normalising first is exact: cropping, resizing and blurring take convex combinations of pixels,
which commute with a per-band affine map.  No colour jitter: it would distort spectra.

All random parameters are drawn on the CPU from a ``torch.Generator`` (the module's own, seeded
by ``seed`` and :meth:`DeviceTransform.set_epoch`, or one passed in), so a seed gives the same
augmentations on CUDA and on the CPU fallback.  :meth:`DeviceTransform.pair` augments the two
views of a pair with independent draws.  A label mask given with the image is warped with the
same crop and flips (nearest neighbour), never blurred.

Recipes (SpectralEarth's configs): ``moco`` and ``dino`` RRC(0.08, 1) + blur(p 0.5, sigma
0.1..2) + flips; ``mae`` RRC(0.4, 1) + flips.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from .hostcopy import to_device


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation of a batch (probabilities in 0..1, sizes in pixels)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    """Area of the crop as a fraction of the image."""
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """Aspect ratio (width / height) of the crop."""
    size: int | None = None
    """Output side; default the input's side."""
    hflip: float = 0.5
    vflip: float = 0.5
    blur: float = 0.5
    """Probability of a Gaussian blur."""
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    """Range of the blur's standard deviation, in output pixels."""
    blur_kernel: int | None = None
    """Odd kernel side; default ``size // 10`` made odd (13 for 128 px)."""

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise InputError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise InputError(f"crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}")
        for name in ("hflip", "vflip", "blur"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"{name} is a probability, got {getattr(self, name)}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise InputError(f"blur_sigma must satisfy 0 < lo <= hi, got {self.blur_sigma}")
        if self.blur_kernel is not None and (self.blur_kernel < 1 or self.blur_kernel % 2 == 0):
            raise InputError(f"blur_kernel must be odd and positive, got {self.blur_kernel}")
        if self.size is not None and self.size < 1:
            raise InputError(f"size must be positive, got {self.size}")

    def kernel_for(self, size: int) -> int:
        """Blur kernel side for an output of ``size`` pixels."""
        return self.blur_kernel if self.blur_kernel is not None else size // 10 // 2 * 2 + 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentConfig:
        d = dict(d)
        for k in ("crop_scale", "crop_ratio", "blur_sigma"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        return cls(**d)


RECIPES: dict[str, AugmentConfig] = {
    "moco": AugmentConfig(crop_scale=(0.08, 1.0), blur=0.5),
    "dino": AugmentConfig(crop_scale=(0.08, 1.0), blur=0.5),
    "mae": AugmentConfig(crop_scale=(0.4, 1.0), blur=0.0),
}
"""SpectralEarth's augmentation recipes by method."""


def recipe(name: str) -> AugmentConfig:
    """The augmentation recipe ``name`` (one of :data:`RECIPES`)."""
    if name not in RECIPES:
        raise InputError(
            f"unknown augmentation recipe {name!r} (expected one of {sorted(RECIPES)})"
        )
    return RECIPES[name]


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample draws of one augmentation of a batch of ``B`` images (CPU tensors)."""

    boxes: Tensor
    """float64 ``(B, 4)``: crop ``(y0, x0, h, w)`` in input pixels."""
    hflip: Tensor
    """bool ``(B,)``."""
    vflip: Tensor
    """bool ``(B,)``."""
    sigma: Tensor
    """float64 ``(B,)``: blur standard deviation, 0 for no blur."""

    def to(self, device: Any) -> AugmentParams:
        """The draws on ``device`` (CPU to CUDA: one copy that does not wait for the device)."""
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if self.boxes.device == dev:
            return self
        if dev.type == "cpu" or self.boxes.device.type != "cpu":
            return AugmentParams(*(t.to(dev) for t in self._parts()))
        flags = torch.stack([self.hflip, self.vflip], 1).to(torch.float64)
        packed = to_device(torch.cat([self.boxes, flags, self.sigma[:, None]], 1), dev)
        return AugmentParams(packed[:, :4], packed[:, 4] > 0, packed[:, 5] > 0, packed[:, 6])

    def _parts(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.boxes, self.hflip, self.vflip, self.sigma


def sample_params(
    config: AugmentConfig, batch: int, height: int, width: int, generator: torch.Generator
) -> AugmentParams:
    """Draw the crops, flips and blurs of ``batch`` images of ``height`` x ``width`` pixels."""
    g = generator
    tries = 10
    area = height * width
    scale = torch.empty(batch, tries, dtype=torch.float64)
    scale.uniform_(config.crop_scale[0], config.crop_scale[1], generator=g)
    log_r = torch.empty(batch, tries, dtype=torch.float64)
    log_r.uniform_(math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]), generator=g)
    ratio = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * scale * ratio))
    h = torch.round(torch.sqrt(area * scale / ratio))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.to(torch.int8), dim=1)
    rows = torch.arange(batch)
    w, h, found = w[rows, first], h[rows, first], ok.any(dim=1)
    # fallback of torchvision: the largest centred crop within the ratio bounds
    in_ratio = width / height
    if in_ratio < config.crop_ratio[0]:
        fw, fh = width, round(width / config.crop_ratio[0])
    elif in_ratio > config.crop_ratio[1]:
        fw, fh = round(height * config.crop_ratio[1]), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.tensor(float(fw), dtype=torch.float64))
    h = torch.where(found, h, torch.tensor(float(fh), dtype=torch.float64))
    u = torch.rand(batch, 2, dtype=torch.float64, generator=g)
    y0 = torch.floor(u[:, 0] * (height - h + 1))
    x0 = torch.floor(u[:, 1] * (width - w + 1))
    y0 = torch.where(found, y0, torch.floor((height - h) / 2))
    x0 = torch.where(found, x0, torch.floor((width - w) / 2))
    flips = torch.rand(batch, 2, dtype=torch.float64, generator=g)
    blur = torch.rand(batch, 2, dtype=torch.float64, generator=g)
    lo, hi = config.blur_sigma
    sigma = torch.where(blur[:, 0] < config.blur, lo + (hi - lo) * blur[:, 1], 0.0)
    return AugmentParams(
        boxes=torch.stack([y0, x0, h, w], dim=1),
        hflip=flips[:, 0] < config.hflip,
        vflip=flips[:, 1] < config.vflip,
        sigma=sigma,
    )


def _axis_coords(
    params: AugmentParams, height: int, width: int, size: int, device: Any
) -> tuple[Tensor, Tensor]:
    """Input row and column coordinate of each output sample: float64 ``(B, size)`` each.

    ``params`` are on ``device`` (``AugmentParams.to``).

    Output sample ``i`` reads ``start + (stop - start) * i / (size - 1)`` between the box's
    ends (``align_corners=True``, as kornia's ``crop_and_resize``); a flip swaps the ends.
    """
    y0, x0, h, w = params.boxes.to(torch.float64).unbind(1)
    y1, x1 = y0 + h - 1, x0 + w - 1
    vflip, hflip = params.vflip, params.hflip
    i = torch.arange(size, dtype=torch.float64, device=device) / max(size - 1, 1)

    def line(start: Tensor, stop: Tensor, n_in: int) -> Tensor:
        return (start[:, None] + (stop - start)[:, None] * i).clamp(0, n_in - 1)

    rows = line(torch.where(vflip, y1, y0), torch.where(vflip, y0, y1), height)
    cols = line(torch.where(hflip, x1, x0), torch.where(hflip, x0, x1), width)
    return rows, cols


def _resample_matrices(coord: Tensor, n_in: int) -> Tensor:
    """Bilinear sampling at ``coord`` (B, size) along one axis as matrices: ``(B, size, n_in)``."""
    lo = coord.floor()
    frac = coord - lo
    lo_i = lo.long()
    hi_i = (lo_i + 1).clamp(max=n_in - 1)
    m = coord.new_zeros(*coord.shape, n_in)
    m.scatter_add_(2, lo_i[..., None], (1 - frac)[..., None])
    m.scatter_add_(2, hi_i[..., None], frac[..., None])
    return m


def _blur_matrices(sigma: Tensor, size: int, kernel: int) -> Tensor:
    """Gaussian blur along one axis, reflect border, as matrices: float64 ``(B, size, size)``.

    The 1-D kernel is kornia's (``exp(-t^2 / 2 sigma^2)``, ``t`` in ``-k//2 .. k//2``,
    normalised); ``sigma == 0`` gives the identity. Border ``reflect`` mirrors about the edge
    pixel (index -1 reads 1), as ``torch.nn.functional.pad(mode="reflect")``.
    """
    dev = sigma.device
    t = torch.arange(kernel, dtype=torch.float64, device=dev) - kernel // 2
    sig = torch.where(sigma > 0, sigma, torch.ones_like(sigma))[:, None]
    g = torch.exp(-(t**2) / (2 * sig**2))
    g = g / g.sum(1, keepdim=True)
    ident = (t == 0).to(torch.float64).expand_as(g)
    g = torch.where(sigma[:, None] > 0, g, ident)  # (B, k)
    idx = torch.arange(size, device=dev)[:, None] + t.long()[None, :]  # (size, k)
    idx = idx.abs()
    idx = torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)
    b = len(sigma)
    m = torch.zeros(b, size, size, dtype=torch.float64, device=dev)
    m.scatter_add_(2, idx.expand(b, -1, -1), g[:, None, :].expand(-1, size, -1).contiguous())
    return m


def axis_operators(
    params: AugmentParams, config: AugmentConfig, height: int, width: int, device: Any
) -> tuple[Tensor, Tensor]:
    """The augmentation as two per-sample linear maps, rows ``(B, S, H)`` and columns ``(B, S, W)``.

    Crop, resize, flip and blur are each linear and act on rows and columns separately, so
    ``out[b, c] = rows[b] @ x[b, c] @ cols[b].T`` (float64, on ``device``). A recipe with blur
    multiplies every sample by its blur matrix, the exact identity where ``sigma`` is 0, so no
    step depends on the draws' values on the host.
    """
    size = config.size or width
    params = params.to(device)
    ry, rx = _axis_coords(params, height, width, size, device)
    rows, cols = _resample_matrices(ry, height), _resample_matrices(rx, width)
    if config.blur > 0:
        blur = _blur_matrices(params.sigma.to(torch.float64), size, config.kernel_for(size))
        rows, cols = torch.bmm(blur, rows), torch.bmm(blur, cols)
    return rows, cols


@contextlib.contextmanager
def _tf32_matmul(enabled: bool) -> Iterator[None]:
    """CUDA float32 matmuls in TF32 inside the block (no-op when not ``enabled``)."""
    mm = torch.backends.cuda.matmul
    if not enabled:
        yield
        return
    value: str | bool = "tf32"
    attr = "fp32_precision"
    if not hasattr(mm, attr):  # torch < 2.9
        attr, value = "allow_tf32", True
    old = getattr(mm, attr)
    setattr(mm, attr, value)
    try:
        yield
    finally:
        setattr(mm, attr, old)


def apply_params(
    x: Tensor,
    params: AugmentParams,
    config: AugmentConfig,
    mask: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Augment ``x`` float ``(B, C, H, W)`` (and ``mask`` ``(B, H, W)``) with drawn ``params``.

    Two batched matrix products (``axis_operators``): columns, then rows, about 1.7 GFLOP per
    202-band 128 px view and no per-sample kernel. On CUDA they run in TF32 (10-bit mantissa,
    finer than the bf16 the models compute in; relative error ~1e-3); on the CPU in float32.
    The products read and write rows of all bands, ``(B, H, C, W)`` memory: an ``x`` laid out
    so (as :meth:`DeviceTransform.normalize` writes it) is read without a transposed copy, any
    other is copied once. Only the result is laid out as ``(B, C, S, S)``, in ``dtype`` (default
    ``x``'s; bf16 for a bf16 model saves the model's own cast). The mask takes the nearest input
    pixel of each output pixel's (unblurred) coordinate.

    Returns the image ``(B, C, S, S)`` (contiguous) and the mask ``(B, S, S)`` (same dtype as
    given) or None.
    """
    b, c, h, w = x.shape
    params = params.to(x.device)  # once for the image and the mask
    rows, cols = axis_operators(params, config, h, w, x.device)
    s = rows.shape[1]
    with _tf32_matmul(x.is_cuda):
        band_rows = x.transpose(1, 2).reshape(b, h * c, w)  # a view for (B, H, C, W) memory
        t = torch.bmm(band_rows, cols.to(x.dtype).transpose(1, 2))  # (B, H*C, S)
        o = torch.bmm(rows.to(x.dtype), t.view(b, h, c * s))  # (B, S, C*S)
    out = torch.empty(b, c, s, s, dtype=dtype or x.dtype, device=x.device)
    out.copy_(o.view(b, s, c, s).transpose(1, 2))  # one pass: layout and dtype
    out_mask = None
    if mask is not None:
        out_mask = _nearest(mask.to(x.device), params, config)
    return out, out_mask


@functools.lru_cache(maxsize=1)
def _fused_kernel() -> Any:
    """The module of :func:`.transforms_triton.augment_fused`, or None without Triton.

    Looked up once: a failed import would otherwise search the path on every batch.
    """
    try:
        from . import transforms_triton
    except ImportError:
        return None
    return transforms_triton


def _nearest(mask: Tensor, params: AugmentParams, config: AugmentConfig) -> Tensor:
    """``mask`` ``(B, H, W)`` cropped, resized and flipped with nearest-neighbour sampling."""
    b, h, w = mask.shape
    size = config.size or w
    ry, rx = (c.round().long() for c in _axis_coords(params, h, w, size, mask.device))
    bi = torch.arange(b, device=mask.device)[:, None, None]
    return mask[bi, ry[:, :, None], rx[:, None, :]]


def _corners(params: AugmentParams) -> Tensor:
    """``(B, 4, 2)`` box corners ``(x, y)`` in kornia's order, swapped where flipped."""
    y0, x0, h, w = params.boxes.unbind(1)
    x1, y1 = x0 + w - 1, y0 + h - 1
    left = torch.where(params.hflip, x1, x0)
    right = torch.where(params.hflip, x0, x1)
    top = torch.where(params.vflip, y1, y0)
    bottom = torch.where(params.vflip, y0, y1)
    # top-left, top-right, bottom-right, bottom-left of the output
    return torch.stack(
        [
            torch.stack([left, top], 1),
            torch.stack([right, top], 1),
            torch.stack([right, bottom], 1),
            torch.stack([left, bottom], 1),
        ],
        dim=1,
    )


def kornia_reference(
    x: Tensor, params: AugmentParams, config: AugmentConfig, mask: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """The same augmentation through kornia, for tests and ``benchmarks/device_transforms.py``.

    ``crop_and_resize`` (bilinear, ``align_corners=True``) with the box corners swapped where
    flipped, then ``gaussian_blur2d`` (reflect border) on the blurred samples; the mask through
    ``crop_and_resize`` with nearest sampling. Computes in ``x``'s dtype.
    """
    from kornia.filters import gaussian_blur2d
    from kornia.geometry.transform import crop_and_resize

    size = config.size or x.shape[-1]
    corners = _corners(params).to(device=x.device, dtype=x.dtype)
    out = crop_and_resize(x, corners, (size, size), mode="bilinear", align_corners=True)
    blurred = torch.nonzero(params.sigma > 0).flatten()
    if len(blurred):
        k = config.kernel_for(size)
        idx = blurred.to(x.device)
        sig = params.sigma[blurred].to(device=x.device, dtype=x.dtype)[:, None].expand(-1, 2)
        out[idx] = gaussian_blur2d(out[idx], (k, k), sig.contiguous(), border_type="reflect")
    out_mask = None
    if mask is not None:
        m = crop_and_resize(
            mask[:, None].to(device=x.device, dtype=x.dtype),
            corners,
            (size, size),
            mode="nearest",
            align_corners=True,
        )
        out_mask = m[:, 0].round().to(mask.dtype)
    return out, out_mask


class DeviceTransform(nn.Module):
    """int16 batch -> normalised (and augmented) float32 batch on ``device``.

    Args:
        mean, std: per-band statistics ``(C,)`` in raw int16 units (``dataset.band_mean``,
            ``dataset.band_std``).
        augment: an :class:`AugmentConfig`, a recipe name (``moco``, ``dino``, ``mae``), or None
            to normalise only (evaluation).
        seed: seed of the module's generator (see :meth:`set_epoch`).
        device: where to run (default: CUDA when available, else CPU).
        dtype: dtype of the views returned (float32; ``torch.bfloat16`` for a model under
            bf16 autocast: the same values it would cast them to, one pass fewer).
        fused: on CUDA, normalise and augment int16 batches in one Triton kernel where it
            applies (Triton imports, sides up to 128 px); False: always the two-product path.
    """

    mean: Tensor
    inv_std: Tensor
    shift: Tensor

    def __init__(
        self,
        mean: Any,
        std: Any,
        augment: AugmentConfig | str | None = None,
        *,
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        fused: bool = True,
    ):
        super().__init__()
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        std_t = torch.as_tensor(np.asarray(std, dtype=np.float32))
        if mean_t.ndim != 1 or mean_t.shape != std_t.shape:
            raise InputError(
                f"mean and std must be (C,) vectors, got {mean_t.shape}, {std_t.shape}"
            )
        if (std_t <= 0).any():
            raise InputError("std must be positive in every band")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.register_buffer("mean", mean_t[:, None, None].to(self.device), persistent=False)
        self.register_buffer(
            "inv_std", (1 / std_t)[:, None, None].to(self.device), persistent=False
        )
        self.register_buffer("shift", -self.mean * self.inv_std, persistent=False)
        self.config = recipe(augment) if isinstance(augment, str) else augment
        self.fused = bool(fused)
        self.seed = int(seed)
        self.dtype = dtype
        self.generator = torch.Generator()
        self.set_epoch(0)

    @classmethod
    def from_dataset(cls, dataset: Any, augment: AugmentConfig | str | None = None, **kw: Any):
        """A transform with ``dataset.band_mean`` / ``band_std`` (of its selected bands)."""
        return cls(dataset.band_mean, dataset.band_std, augment, **kw)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the generator from ``(seed, epoch)``: an epoch's draws do not depend on others."""
        state = np.random.SeedSequence([self.seed, int(epoch)]).generate_state(2, dtype=np.uint32)
        self.generator.manual_seed(int(state[0]) << 32 | int(state[1]))

    def normalize(self, x: Tensor) -> Tensor:
        """float32 ``(x - mean) / std`` on the device; ``x`` ``(..., C, H, W)`` int16 or float.

        One kernel; the result's memory is ``(..., H, C, W)`` (a transposed view is returned),
        the layout :func:`apply_params` multiplies without a copy.
        """
        x = x.to(self.device, non_blocking=True)
        xt = x.transpose(-3, -2)
        out = torch.empty(xt.shape, dtype=torch.float32, device=self.device)
        shift = self.shift.transpose(-3, -2)
        torch.addcmul(shift, xt, self.inv_std.transpose(-3, -2), out=out)  # x / std - mean / std
        return out.transpose(-3, -2)

    def uses_fused(self, x: Tensor, config: AugmentConfig | None = None) -> bool:
        """Whether raw ``x`` ``(..., C, H, W)`` takes the fused kernel with ``config``.

        On CUDA, where Triton imports, for sides up to 128 px; ``config`` defaults to the
        module's.
        """
        config = config or self.config
        if config is None or not self.fused or self.device.type != "cuda":
            return False
        kernel = _fused_kernel()
        h, w = x.shape[-2:]
        return kernel is not None and bool(kernel.supports(h, w, config.size or w))

    def augment_with(
        self,
        x: Tensor,
        params: AugmentParams,
        config: AugmentConfig | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Raw ``x`` ``(B, C, H, W)`` normalised and augmented with drawn ``params``.

        ``x`` is int16 or float, on any device, with any strides; ``config`` defaults to the
        module's. Returns the views in ``dtype`` on the device and ``mask`` warped alike: one
        fused kernel where :meth:`uses_fused`, else :meth:`normalize` and :func:`apply_params`.
        """
        config = config or self.config
        if config is None:
            raise InputError("DeviceTransform.augment_with needs an augmentation config")
        x = x.to(self.device, non_blocking=True)
        if mask is not None:
            mask = mask.to(self.device, non_blocking=True)
        if not self.uses_fused(x, config):
            return apply_params(self.normalize(x), params, config, mask, dtype=self.dtype)
        _, _, h, w = x.shape
        params = params.to(x.device)
        rows, cols = axis_operators(params, config, h, w, x.device)
        out = _fused_kernel().augment_fused(x, self.inv_std, self.shift, rows, cols, self.dtype)
        return out, None if mask is None else _nearest(mask, params, config)

    def _draw_and_apply(
        self, x: Tensor, mask: Tensor | None, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor | None]:
        """Raw ``x`` ``(B, C, H, W)`` with fresh draws (the ones :meth:`augment` makes)."""
        if self.config is None:
            return self.augment(self.normalize(x), mask, generator)
        b, _, h, w = x.shape
        params = sample_params(self.config, b, h, w, generator or self.generator)
        return self.augment_with(x, params, self.config, mask)

    def augment(
        self, x: Tensor, mask: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Augment normalised ``x`` ``(B, C, H, W)`` (and its mask) with fresh draws."""
        if self.config is None:
            if mask is not None:
                mask = mask.to(self.device, non_blocking=True)
            return torch.empty(x.shape, dtype=self.dtype, device=x.device).copy_(x), mask
        b, _, h, w = x.shape
        params = sample_params(self.config, b, h, w, generator or self.generator)
        if mask is not None:
            mask = mask.to(self.device, non_blocking=True)
        return apply_params(x, params, self.config, mask, dtype=self.dtype)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``x`` int16 ``(B, C, H, W)`` -> ``(B, C, S, S)`` in ``dtype`` on the device."""
        return self._draw_and_apply(x, None, generator)[0]

    def with_mask(
        self, x: Tensor, mask: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Image and label mask ``(B, H, W)`` augmented with the same crops and flips."""
        out, m = self._draw_and_apply(x, mask, generator)
        assert m is not None
        return out, m

    def pair(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Two independently augmented views.

        ``x`` int16 ``(B, 2, C, H, W)`` (a :class:`~.data.TemporalPair` batch: view 0, view 1)
        or ``(B, C, H, W)`` (one view, augmented twice).  Returns two ``(B, C, S, S)`` in
        ``dtype``.
        """
        if x.ndim == 5 and x.shape[1] != 2:
            raise InputError(f"a pair batch has 2 views on axis 1, got shape {tuple(x.shape)}")
        x = x.to(self.device, non_blocking=True)
        fused = self.uses_fused(x)
        xn = x if fused else self.normalize(x)  # fused: each view read in place, strided
        a, b = (xn[:, 0], xn[:, 1]) if xn.ndim == 5 else (xn, xn)
        if fused:
            return self._draw_and_apply(a, None, generator)[0], self._draw_and_apply(
                b, None, generator
            )[0]
        return self.augment(a, generator=generator)[0], self.augment(b, generator=generator)[0]

    def extra_repr(self) -> str:
        cfg = self.config.to_dict() if self.config is not None else None
        return f"bands={self.mean.shape[0]}, device={self.device}, augment={cfg}"
