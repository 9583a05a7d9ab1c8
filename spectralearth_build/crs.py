"""Coordinate transformations shared by scanning, planning and the synthetic archive.

Transformers are cached per ``(src, dst)`` pair and always take ``(x, y)`` / ``(lon, lat)``
order.  Geometries are densified before reprojection when asked, so that straight edges in one
CRS follow their true, slightly curved, course in another.  Imports only pyproj, shapely and
numpy, so the pure geometry code can use it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer

LONLAT = "EPSG:4326"


@lru_cache(maxsize=256)
def transformer(src: str, dst: str) -> Transformer:
    """A cached ``always_xy`` transformer from ``src`` to ``dst``."""
    return Transformer.from_crs(src, dst, always_xy=True)


def reproject(geom: Any, src: str, dst: str, segment_m: float | None = None) -> Any:
    """Reproject shapely geometries (or arrays of them), densified to ``segment_m`` first."""
    if src == dst:
        return geom
    t = transformer(src, dst)
    if segment_m is not None:
        geom = shapely.segmentize(geom, segment_m)
    return shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def footprint_to_lonlat(footprint: Any, crs: str, segment_m: float = 1000.0) -> Any:
    """Reproject a footprint polygon from ``crs`` to EPSG:4326.

    Args:
        footprint: shapely polygon (or array of them) in ``crs`` coordinates (metres).
        crs: its CRS, e.g. ``"EPSG:32633"``.
        segment_m: edges are densified to segments of at most this length (metres) first, so
            that long edges follow their curved course in longitude/latitude.
    """
    return reproject(footprint, crs, LONLAT, segment_m)
