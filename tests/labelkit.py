"""A minimal dataset folder around given patch grids (tables and store attributes, no images).

Enough for label pairing, splits and the label loader, so tests can place patches anywhere
(over a real label raster, a huge synthetic one) without building EnMAP products there.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
import zarr

from spectralearth_build.crs import reproject
from spectralearth_build.grid import PixelGrid


def write_dataset(out: Path, grids: list[PixelGrid], products: list[list[str]]) -> Path:
    """Write ``index.parquet``, ``views.parquet``, ``data.zarr`` and ``_COMPLETE`` for ``grids``."""
    out.mkdir(parents=True)
    rows, views = [], []
    for pid, (g, prods) in enumerate(zip(grids, products)):
        x0, y0, x1, y1 = g.bounds
        box = shapely.box(x0, y0, x1, y1)
        rows.append(
            {
                "patch_id": pid,
                "slot": pid,
                "n_views": len(prods),
                "view_start": len(views),
                "crs": g.crs,
                "transform": list(g.transform),
                "height": g.height,
                "width": g.width,
                "component": 0,
                "unit": 0,
                "footprint_native": shapely.to_wkb(box),
                "geometry": reproject(box, g.crs, "EPSG:4326", segment_m=100.0),
            }
        )
        for t, p in enumerate(prods):
            views.append(
                {
                    "patch_id": pid,
                    "slot": pid,
                    "t": t,
                    "time": pd.Timestamp("2024-06-01", tz="UTC") + pd.Timedelta(days=t),
                    "product": p,
                }
            )
    gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326").to_parquet(out / "index.parquet")
    pd.DataFrame(views).to_parquet(out / "views.parquet")
    group = zarr.open_group(str(out / "data.zarr"), mode="w", zarr_format=3)
    group.attrs.update({"format": "test", "format_version": 2})
    (out / "_COMPLETE").write_text(json.dumps({}))
    return out
