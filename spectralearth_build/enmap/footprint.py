"""Footprints: few-vertex polygons inside the valid (and the clear-sky) pixels of a product.

The valid swath of an L2A tile is a rotated quadrilateral inside a north-up raster.  We polygonise
the valid-pixel mask (a staircase outline), erode it by the simplification tolerance and then
simplify it with Douglas-Peucker by that same tolerance.  Douglas-Peucker moves the outline by at
most the tolerance, so the result stays inside the un-eroded outline: the footprint is never
larger than the real valid area, and costs about ``perimeter * tolerance`` of area (under 1% for a
real tile at 1.5 px).  The planner relies on that guarantee: a patch inside the footprint is inside
valid data.

The clear-sky footprint is the area where a patch passes the extraction checks.  Pixels flagged
cloud, cloud shadow or haze (and cirrus from ``medium`` on) are removed outright, as holes.
Snow is allowed up to a fraction of a patch, so it is handled with a window rule: a pixel is
*blocked* when the ``P x P`` window whose rows and columns start ``P // 2`` before it (the window
"centred" on it, the patch it is the centre pixel of) holds more than ``max_snow_fraction``
snow.  A pixel-aligned patch wholly inside the unblocked area has its centre pixel unblocked, and
the window of that pixel is the patch itself, so the patch passes the snow check.  The clear mask
(valid, not flagged, not blocked) is reduced to the pixels of some fully clear pixel-aligned
patch (an opening by the patch square, grown back by twice the tolerance within the clear
pixels), which drops the specks and slivers no patch can use and keeps polygonising cheap; it is
then polygonised with its holes, parts too small for one patch are dropped, and the rest is
eroded and simplified exactly like the valid footprint, so it is never larger than the clear
area.
"""

from __future__ import annotations

import math

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.polygon import orient


def _largest(geom: object) -> Polygon | None:
    if isinstance(geom, Polygon):
        return None if geom.is_empty else geom
    if isinstance(geom, MultiPolygon) and not geom.is_empty:
        return max(geom.geoms, key=lambda g: g.area)
    if hasattr(geom, "geoms"):
        polys = [g for g in geom.geoms if isinstance(g, Polygon) and not g.is_empty]
        return max(polys, key=lambda g: g.area) if polys else None
    return None


def valid_footprint(
    valid_yx: np.ndarray,
    transform: Affine | tuple[float, ...],
    simplify_px: float = 1.5,
) -> Polygon | None:
    """Footprint of the largest connected valid region of ``valid_yx`` (bool, shape (y, x)).

    Coordinates are in the raster's CRS.  Returns None when there is no valid region larger
    than the tolerance.
    """
    if not isinstance(transform, Affine):
        transform = Affine(*transform[:6])
    mask = np.ascontiguousarray(valid_yx, dtype=np.uint8)
    if not mask.any():
        return None
    polys = [
        shape(geom)
        for geom, value in rasterio.features.shapes(
            mask, mask=mask.astype(bool), transform=transform
        )
        if value == 1
    ]
    outline = max(polys, key=lambda p: p.area)
    tol = float(simplify_px) * abs(transform.a)
    eroded = _largest(outline.buffer(-tol, join_style="mitre"))
    if eroded is None:
        return None
    simple = _largest(eroded.simplify(tol, preserve_topology=True))
    if simple is None:
        return None
    if not outline.contains(simple):  # belt and braces: the guarantee must hold exactly
        simple = _largest(simple.intersection(outline))
        if simple is None:
            return None
    return orient(simple, sign=1.0)


def snow_blocked(snow_yx: np.ndarray, patch_px: int, max_fraction: float) -> np.ndarray:
    """Bool ``(y, x)``: pixels whose centred ``patch_px`` window holds too much snow.

    The window of pixel ``(r, c)`` covers rows ``r - patch_px // 2 ...`` and columns
    ``c - patch_px // 2 ...`` (``patch_px`` of each; pixels outside the raster count as snow
    free), and the pixel is blocked when ``snow / patch_px**2 > max_fraction``: the comparison
    extraction makes for a patch on that window.
    """
    snow = np.asarray(snow_yx, dtype=bool)
    h, w = snow.shape
    if not snow.any():
        return np.zeros((h, w), dtype=bool)
    s = np.zeros((h + 1, w + 1), dtype=np.int64)
    np.cumsum(np.cumsum(snow, axis=0, dtype=np.int64), axis=1, out=s[1:, 1:])
    half = patch_px // 2
    r0 = np.clip(np.arange(h) - half, 0, h)
    r1 = np.clip(np.arange(h) - half + patch_px, 0, h)
    c0 = np.clip(np.arange(w) - half, 0, w)
    c1 = np.clip(np.arange(w) - half + patch_px, 0, w)
    count = s[np.ix_(r1, c1)] - s[np.ix_(r0, c1)] - s[np.ix_(r1, c0)] + s[np.ix_(r0, c0)]
    return count / float(patch_px * patch_px) > max_fraction


def _polygons(geoms: object, min_area: float) -> list[Polygon]:
    """The non-empty polygons of at least ``min_area`` in a geometry or a list of them."""
    parts = geoms if isinstance(geoms, list) else getattr(geoms, "geoms", [geoms])
    return [g for g in parts if isinstance(g, Polygon) and not g.is_empty and g.area >= min_area]


def patch_opening(mask_yx: np.ndarray, patch_px: int) -> np.ndarray:
    """Bool ``(y, x)``: the pixels of ``mask_yx`` that some all-True ``patch_px`` window covers.

    The union of every pixel-aligned patch that fits in the mask (a morphological opening by the
    patch square): a subset of the mask that loses no such patch, without the slivers and
    specks between flags that no patch can use.
    """
    m = np.asarray(mask_yx, dtype=bool)
    h, w = m.shape
    if h < patch_px or w < patch_px:
        return np.zeros((h, w), dtype=bool)
    s = np.zeros((h + 1, w + 1), dtype=np.int32)
    np.cumsum(np.cumsum(m, axis=0, dtype=np.int32), axis=1, out=s[1:, 1:])
    p = patch_px
    fits = (s[p:, p:] - s[:-p, p:] - s[p:, :-p] + s[:-p, :-p]) == p * p  # by upper-left pixel
    return _covered(fits, h, w, p)


def _covered(fits: np.ndarray, h: int, w: int, p: int) -> np.ndarray:
    """Pixels within ``p`` rows and columns after some True upper-left position of ``fits``."""
    ip = np.zeros((h + p + 1, w + p + 1), dtype=np.int32)
    ip[p + 1 : p + 1 + fits.shape[0], p + 1 : p + 1 + fits.shape[1]] = fits
    np.cumsum(ip, axis=0, out=ip)
    np.cumsum(ip, axis=1, out=ip)
    count = (
        ip[p + 1 :, p + 1 :]
        - ip[1 : h + 1, p + 1 :]
        - ip[p + 1 :, 1 : w + 1]
        + ip[1 : h + 1, 1 : w + 1]
    )
    return count > 0


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """``mask`` grown by ``r`` pixels (a square of side ``2 r + 1``)."""
    h, w = mask.shape
    k = 2 * r + 1
    ip = np.zeros((h + k, w + k), dtype=np.int32)
    ip[r + 1 : r + 1 + h, r + 1 : r + 1 + w] = mask
    np.cumsum(ip, axis=0, out=ip)
    np.cumsum(ip, axis=1, out=ip)
    return (ip[k:, k:] - ip[:-k, k:] - ip[k:, :-k] + ip[:-k, :-k]) > 0


def clear_footprint(
    clear_yx: np.ndarray,
    transform: Affine | tuple[float, ...],
    patch_px: int,
    simplify_px: float = 1.5,
) -> MultiPolygon:
    """Footprint of the clear pixels ``clear_yx`` (bool, shape (y, x)), holes included.

    The mask is first reduced to :func:`patch_opening` (pixels of some fully clear
    ``patch_px`` window), then every connected region of at least one patch area is kept,
    eroded and simplified by ``simplify_px`` as in :func:`valid_footprint`, and clipped to the
    un-eroded outline, so the result never exceeds the clear pixels.  Returns a (possibly
    empty) MultiPolygon in the raster's CRS.
    """
    if not isinstance(transform, Affine):
        transform = Affine(*transform[:6])
    min_area = (patch_px * abs(transform.a)) ** 2
    clear = np.asarray(clear_yx, dtype=bool)
    # grow the opening back by twice the tolerance (within the clear pixels), so that erosion
    # and simplification below do not eat into patches that fit the opening exactly
    margin = 2 * math.ceil(simplify_px)
    mask = np.ascontiguousarray(clear & _dilate(patch_opening(clear, patch_px), margin), np.uint8)
    if not mask.any():
        return MultiPolygon()
    shapes = rasterio.features.shapes(mask, mask=mask.astype(bool), transform=transform)
    outlines = _polygons([shape(geom) for geom, value in shapes if value == 1], min_area)
    if not outlines:
        return MultiPolygon()
    outline = MultiPolygon(outlines)
    tol = float(simplify_px) * abs(transform.a)
    eroded = outline.buffer(-tol, join_style="mitre")
    simple = shapely.simplify(eroded, tol, preserve_topology=True)
    if not outline.contains(simple):  # belt and braces: the guarantee must hold exactly
        simple = simple.intersection(outline)
    parts = _polygons(simple, max(min_area, 1e-12))
    return MultiPolygon([orient(p, sign=1.0) for p in parts])


def clip_to_valid(clear: MultiPolygon, valid: Polygon, patch_side_m: float) -> MultiPolygon:
    """The clear-sky footprint clipped to the valid footprint (parts of a patch or more).

    Both are eroded and simplified from their own masks, so near the swath edge the clear one
    can reach up to a tolerance beyond the valid one; the planner needs it inside.
    """
    if clear.is_empty or valid.covers(clear):
        return clear
    parts = _polygons(clear.intersection(valid), max(patch_side_m**2, 1e-12))
    return MultiPolygon([orient(p, sign=1.0) for p in parts])
