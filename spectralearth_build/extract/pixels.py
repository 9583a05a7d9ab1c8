"""Pixel checks and resampling of one view onto its patch grid.

A view is kept only if it has no nodata pixel in the kept bands, at most
``max_cloud_fraction`` of its pixels flagged cloud, cloud shadow or haze, and at most
``max_snow_fraction`` flagged snow.  Views from a tile on another grid (another UTM zone) are
resampled onto the patch grid with :func:`rasterio.warp.reproject` (nearest neighbour by
default, single-threaded so results do not depend on the machine); their quality layers are
resampled with nearest neighbour always.  Pixels of the patch that the source does not cover
come out as nodata, so such views are dropped by the nodata check.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..config import ExtractConfig
from ..formats import NODATA
from ..grid import PixelGrid, Window

CLOUD_LAYERS = ("CLOUD", "CLOUDSHADOW", "HAZE")
SNOW_LAYER = "SNOW"

# Drop reasons (keys of the counts in the build report).
NODATA_REASON = "nodata pixels"
CLOUD_REASON = "cloud/shadow/haze above limit"
SNOW_REASON = "snow above limit"
OUTSIDE_REASON = "window outside tile"
READ_FAILED_REASON = "source read failed"


def bounding_window(windows: Iterable[Window]) -> Window:
    """The smallest window containing all ``windows``."""
    ws = list(windows)
    r0 = min(w.row_off for w in ws)
    c0 = min(w.col_off for w in ws)
    r1 = max(w.row_off + w.height for w in ws)
    c1 = max(w.col_off + w.width for w in ws)
    return Window(r0, c0, r1 - r0, c1 - c0)


def clip_window(window: Window, grid: PixelGrid) -> Window | None:
    """``window`` clipped to the raster of ``grid``, or None if they do not intersect."""
    r0, c0 = max(window.row_off, 0), max(window.col_off, 0)
    r1 = min(window.row_off + window.height, grid.height)
    c1 = min(window.col_off + window.width, grid.width)
    if r1 <= r0 or c1 <= c0:
        return None
    return Window(r0, c0, r1 - r0, c1 - c0)


def relative(window: Window, outer: Window) -> tuple[slice, slice]:
    """Slices of ``window`` inside an array that holds ``outer``."""
    return Window(
        window.row_off - outer.row_off, window.col_off - outer.col_off, window.height, window.width
    ).to_slices()


def flag_fractions(
    layers: dict[str, np.ndarray | None], shape_yx: tuple[int, int]
) -> tuple[float, float]:
    """``(cloud, snow)`` fractions of pixels flagged (any non-zero value) in the quality layers.

    Cloud counts a pixel flagged in any of CLOUD, CLOUDSHADOW or HAZE once.  Missing layers
    count as unflagged.
    """
    n = shape_yx[0] * shape_yx[1]
    cloud = np.zeros(shape_yx, dtype=bool)
    for name in CLOUD_LAYERS:
        layer = layers.get(name)
        if layer is not None:
            cloud |= layer != 0
    snow_layer = layers.get(SNOW_LAYER)
    snow = int(np.count_nonzero(snow_layer)) if snow_layer is not None else 0
    return float(np.count_nonzero(cloud)) / n, float(snow) / n


def quality_reason(cloud: float, snow: float, config: ExtractConfig) -> str | None:
    """Why a view fails the quality-layer checks, or None."""
    if cloud > config.max_cloud_fraction:
        return CLOUD_REASON
    if snow > config.max_snow_fraction:
        return SNOW_REASON
    return None


def has_nodata(image: np.ndarray) -> bool:
    """True if any value of ``image`` (any shape) is the nodata value -32768."""
    return bool((image == NODATA).any())


def reproject_to(
    source: np.ndarray,
    source_grid: PixelGrid,
    target_grid: PixelGrid,
    resampling: str = "nearest",
    nodata: int | None = NODATA,
) -> np.ndarray:
    """Resample ``source`` (``(c, y, x)`` on ``source_grid``) onto ``target_grid``.

    Target pixels not covered by the source get ``nodata`` (0 when ``nodata`` is None).
    """
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    try:
        method = Resampling[resampling]
    except KeyError:
        raise ValueError(f"unknown resampling method {resampling!r}") from None
    fill = NODATA if nodata is not None else 0
    out = np.full((source.shape[0], *target_grid.shape_yx), fill, dtype=source.dtype)
    reproject(
        source=np.ascontiguousarray(source),
        destination=out,
        src_transform=Affine(*source_grid.transform),
        src_crs=source_grid.crs,
        src_nodata=nodata,
        dst_transform=Affine(*target_grid.transform),
        dst_crs=target_grid.crs,
        dst_nodata=nodata,
        resampling=method,
        num_threads=1,
    )
    return out
