"""Valid-data footprints: a few-vertex polygon inside the valid pixels of a product.

The valid swath of an L2A tile is a rotated quadrilateral inside a north-up raster.  We polygonise
the valid-pixel mask (a staircase outline), erode it by the simplification tolerance and then
simplify it with Douglas-Peucker by that same tolerance.  Douglas-Peucker moves the outline by at
most the tolerance, so the result stays inside the un-eroded outline: the footprint is never
larger than the real valid area, and costs about ``perimeter * tolerance`` of area (under 1% for a
real tile at 1.5 px).  The planner relies on that guarantee: a patch inside the footprint is inside
valid data.
"""

from __future__ import annotations

import numpy as np
import rasterio.features
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
