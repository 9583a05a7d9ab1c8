"""Reprojecting a label product onto one patch grid, reading only the window it needs.

For a location (``PixelGrid`` of ``P x P`` pixels in its UTM CRS) :func:`plan_window` maps the
patch outline (densified edges) into the label CRS and takes the bounding rectangle on the
label lattice, padded by one pixel so that resampling kernels at the patch border see their
neighbours: CORINE's 65,000 x 46,000 px are never read whole, a location reads about
``(P * 30 m / res + 3)^2`` label pixels.  It also picks the resampling: a label as fine as the
patch grid or coarser is sampled (``nearest``; ``bilinear`` for continuous values), a finer one
is aggregated (``mode``; ``average``), judged by the number of label pixels along a patch side.

:class:`WindowReader` assembles the window from the tiles it touches (cells no tile covers are
a sentinel), and :func:`pair_location` warps it onto the patch grid with
``rasterio.warp.reproject`` and classifies the result: ``ok``, ``outside`` (no label pixel
under the patch), ``partial`` (not fully covered) or ``nodata`` (a nodata value under the
patch; with kernel resampling, in the window under the patch).  Only ``ok`` locations get a
mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..crs import transformer
from ..errors import InputError, error_line
from ..grid import PixelGrid
from .source import LabelSource

STATUSES = ("ok", "outside", "partial", "nodata")
FINER_THAN = 1.1
"""A label is *finer* than the patch grid when a patch side spans more than 1.1 x P pixels."""
INT_SENTINEL = np.iinfo(np.int32).min


@dataclass(frozen=True)
class LabelWindow:
    """The label-lattice rectangle a location needs (rows/cols of the common lattice).

    ``core`` is the bounding rectangle of the patch itself, ``padded`` adds the kernel margin.
    Both are ``(row0, col0, row1, col1)``, end-exclusive.
    """

    core: tuple[int, int, int, int]
    padded: tuple[int, int, int, int]
    label_px_per_side: float
    """Label pixels along one patch side (sqrt of the patch area in label pixels)."""

    @property
    def shape_yx(self) -> tuple[int, int]:
        r0, c0, r1, c1 = self.padded
        return r1 - r0, c1 - c0


def _outline(grid: PixelGrid, per_edge: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Points along the patch outline (x, y in the patch CRS), corners included."""
    h, w = grid.shape_yx
    t = np.linspace(0.0, 1.0, per_edge + 1)[:-1]
    cols = np.concatenate([t * w, np.full_like(t, w), (1 - t) * w, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), (1 - t) * h])
    a, b, c, d, e, f = grid.transform
    return a * cols + b * rows + c, d * cols + e * rows + f


def plan_window(grid: PixelGrid, source: LabelSource, pad: int = 1) -> LabelWindow:
    """The label window of patch ``grid`` (pure geometry: no file is opened)."""
    x, y = _outline(grid)
    if grid.crs != source.crs:
        x, y = transformer(grid.crs, source.crs).transform(x, y)
        x, y = np.asarray(x), np.asarray(y)
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    x0, y0 = source.origin_xy
    res = source.res
    cols = (x - x0) / res
    rows = (y0 - y) / res
    eps = 1e-9
    core = (
        math.floor(rows.min() + eps),
        math.floor(cols.min() + eps),
        math.ceil(rows.max() - eps),
        math.ceil(cols.max() - eps),
    )
    padded = (core[0] - pad, core[1] - pad, core[2] + pad, core[3] + pad)
    side = math.sqrt(area) / res / max(grid.shape_yx)
    return LabelWindow(core, padded, side * max(grid.shape_yx))


def locations_touching(grids: tuple[PixelGrid, ...], source: LabelSource) -> int:
    """How many of ``grids`` have a label window that touches one of the source's files.

    Pure geometry (no file is opened), vectorised per CRS: the patch corners are mapped into
    the label CRS and their bounding rectangle on the label lattice, padded by one pixel, is
    tested against every file's rectangle.  Zero means the label cannot label any location
    (another region, or a wrong CRS tag).
    """
    if not grids:
        return 0
    rects = np.array(
        [
            (r, c, r + f.shape_yx[0], c + f.shape_yx[1])
            for f, (r, c) in zip(source.files, source.offsets)
        ],
        dtype=np.float64,
    )
    x0, y0 = source.origin_xy
    touching = 0
    by_crs: dict[str, list[PixelGrid]] = {}
    for g in grids:
        by_crs.setdefault(g.crs, []).append(g)
    for crs, group in by_crs.items():
        t = np.array([g.transform for g in group], dtype=np.float64)
        hw = np.array([g.shape_yx for g in group], dtype=np.float64)
        cols = np.stack([np.zeros(len(group)), hw[:, 1], hw[:, 1], np.zeros(len(group))], 1)
        rows = np.stack([np.zeros(len(group)), np.zeros(len(group)), hw[:, 0], hw[:, 0]], 1)
        x = t[:, 0:1] * cols + t[:, 1:2] * rows + t[:, 2:3]
        y = t[:, 3:4] * cols + t[:, 4:5] * rows + t[:, 5:6]
        if crs != source.crs:
            xs, ys = transformer(crs, source.crs).transform(x.ravel(), y.ravel())
            x, y = np.asarray(xs).reshape(x.shape), np.asarray(ys).reshape(y.shape)
        with np.errstate(invalid="ignore"):
            c = (x - x0) / source.res
            r = (y0 - y) / source.res
            r0, r1 = r.min(1) - 1, r.max(1) + 1
            c0, c1 = c.min(1) - 1, c.max(1) + 1
            hit = (
                (r0[:, None] < rects[None, :, 2])
                & (r1[:, None] > rects[None, :, 0])
                & (c0[:, None] < rects[None, :, 3])
                & (c1[:, None] > rects[None, :, 1])
            )
        touching += int(hit.any(1).sum())
    return touching


def choose_resampling(requested: str, kind: str, window: LabelWindow, patch_px: int) -> str:
    """The resampling to use: ``requested``, or for ``auto`` one chosen by scale.

    Nearest (bilinear for continuous) when the label is as fine as the patch grid or coarser,
    mode (average) when it is finer (see :data:`FINER_THAN`).
    """
    if requested != "auto":
        return requested
    finer = window.label_px_per_side > FINER_THAN * patch_px
    if kind == "categorical":
        return "mode" if finer else "nearest"
    return "average" if finer else "bilinear"


class WindowReader:
    """Reads lattice windows of a label product (files opened on first use, kept open)."""

    def __init__(self, source: LabelSource):
        self.source = source
        self._open: dict[int, Any] = {}
        self.bytes_requested = 0
        """Bytes of the label pixels read (window pixels x item size), all windows so far."""
        float_src = source.dtype.startswith("float")
        self.work_dtype = np.dtype(np.float64 if float_src else np.int32)
        self.sentinel: float = math.nan if float_src else float(INT_SENTINEL)

    def _file(self, k: int) -> Any:
        if k not in self._open:
            import rasterio

            self._open[k] = rasterio.open(self.source.files[k].path)
        return self._open[k]

    def read(self, rect: tuple[int, int, int, int]) -> np.ndarray:
        """The lattice rectangle ``(row0, col0, row1, col1)`` as an array.

        In the work dtype (int32 or float64), the sentinel where no file covers it.
        """
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        r0, c0, r1, c1 = rect
        out = np.full((r1 - r0, c1 - c0), self.sentinel, dtype=self.work_dtype)
        item = np.dtype(self.source.dtype).itemsize
        for k, (f, (fr, fc)) in enumerate(zip(self.source.files, self.source.offsets)):
            h, w = f.shape_yx
            ir0, ic0 = max(r0, fr), max(c0, fc)
            ir1, ic1 = min(r1, fr + h), min(c1, fc + w)
            if ir0 >= ir1 or ic0 >= ic1:
                continue
            win = Window(ic0 - fc, ir0 - fr, ic1 - ic0, ir1 - ir0)
            try:
                data = self._file(k).read(1, window=win)
            except (RasterioError, OSError) as exc:  # corrupt inside: name the file, one line
                raise InputError(
                    f"{f.path}: label raster unreadable at rows {ir0 - fr}..{ir1 - fr}, columns "
                    f"{ic0 - fc}..{ic1 - fc} ({error_line(exc)})"
                ) from None
            out[ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0] = data
            self.bytes_requested += data.size * item
        return out

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()

    def __enter__(self) -> WindowReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass(frozen=True)
class Paired:
    """The outcome for one location: status, resampling used, mask (``ok`` only)."""

    status: str
    resampling: str
    mask: np.ndarray | None


def _is_sentinel(a: np.ndarray, sentinel: float) -> np.ndarray:
    return np.isnan(a) if math.isnan(sentinel) else a == sentinel


def _is_nodata(a: np.ndarray, values: tuple[float, ...]) -> np.ndarray:
    hit = np.zeros(a.shape, dtype=bool)
    for v in values:
        hit |= np.isnan(a) if math.isnan(v) else a == v
    return hit


@lru_cache(maxsize=64)
def _rio_crs(crs: str) -> Any:
    """A parsed rasterio CRS (parsing a string on every reproject costs ~5 ms)."""
    from rasterio.crs import CRS

    return CRS.from_user_input(crs)


def pair_location(
    grid: PixelGrid, reader: WindowReader, kind: str, requested: str = "auto"
) -> Paired:
    """Reproject the label under ``grid`` onto it (see the module docstring).

    Returns the mask as ``(P, P)`` in the label's dtype, raw codes, when ``status == "ok"``.
    """
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    src = reader.source
    window = plan_window(grid, src)
    resampling = choose_resampling(requested, kind, window, max(grid.shape_yx))
    data = reader.read(window.padded)
    pr0, pc0 = window.padded[:2]
    cr0, cc0, cr1, cc1 = window.core
    core = data[cr0 - pr0 : cr1 - pr0, cc0 - pc0 : cc1 - pc0]
    uncovered = _is_sentinel(core, reader.sentinel)
    if uncovered.all():
        return Paired("outside", resampling, None)
    if resampling != "nearest":
        # kernels must not blend nodata into values: nodata under the patch means no label,
        # nodata in the margin is left out of the kernel (GDAL skips the sentinel)
        if _is_nodata(core, src.nodata_values).any():
            return Paired("nodata", resampling, None)
        data = np.where(_is_nodata(data, src.nodata_values), reader.sentinel, data)
    x0, y0 = src.origin_xy
    src_transform = Affine(src.res, 0.0, x0 + src.res * pc0, 0.0, -src.res, y0 - src.res * pr0)
    dst = np.full(grid.shape_yx, reader.sentinel, dtype=reader.work_dtype)
    reproject(
        data,
        dst,
        src_transform=src_transform,
        src_crs=_rio_crs(src.crs),
        src_nodata=reader.sentinel,
        dst_transform=Affine(*grid.transform),
        dst_crs=_rio_crs(grid.crs),
        dst_nodata=reader.sentinel,
        resampling=Resampling[resampling],
    )
    if _is_sentinel(dst, reader.sentinel).any():
        return Paired("partial", resampling, None)
    if _is_nodata(dst, src.nodata_values).any():
        return Paired("nodata", resampling, None)
    return Paired("ok", resampling, dst.astype(src.dtype))
