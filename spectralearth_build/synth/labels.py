"""Label rasters of the synthetic sites, in the native form of each label product.

The class map of a site is evaluated at the label raster's pixel centres and coded through the
product's lookup table (:func:`~.spectra.code_table`):

- CORINE-like over Europe: EPSG:3035, 100 m, uint8 grid codes 1..44, nodata 48;
- CDL-like over the US: EPSG:5070, 30 m, uint8 CDL codes, 0 = background, no nodata tag;
- NLCD-like over the US: EPSG:5070, 30 m, uint8 NLCD codes, nodata 0.

The 30 m grids have their origin at 15 mod 30 m like the real CONUS rasters.  File names do not
parse as EnMAP product names, so product discovery ignores the ``labels/`` folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.windows

from .landcover import LandCoverMap
from .spectra import CORINE_NODATA, NLCD_NODATA, code_table


@dataclass(frozen=True)
class LabelSpec:
    """One label product: which site, CRS, resolution, grid offset, nodata and file name."""

    product: str
    site: str
    crs: str
    res: float
    origin_offset: float
    nodata: int | None
    file_name: str


LABEL_SPECS: tuple[LabelSpec, ...] = (
    LabelSpec(
        "corine",
        "europe",
        "EPSG:3035",
        100.0,
        0.0,
        CORINE_NODATA,
        "CLC2018_synthetic_100m_EPSG3035.tif",
    ),
    LabelSpec("cdl", "us", "EPSG:5070", 30.0, 15.0, None, "CDL_2023_synthetic_30m_EPSG5070.tif"),
    LabelSpec(
        "nlcd", "us", "EPSG:5070", 30.0, 15.0, NLCD_NODATA, "NLCD_2021_synthetic_30m_EPSG5070.tif"
    ),
)


@dataclass(frozen=True)
class LabelRaster:
    """A written label raster (path relative to the archive folder)."""

    product: str
    site: str
    path: str
    crs: str
    res: float
    shape_yx: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "site": self.site,
            "path": self.path,
            "crs": self.crs,
            "res": self.res,
            "shape_yx": list(self.shape_yx),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelRaster:
        return cls(
            d["product"],
            d["site"],
            d["path"],
            d["crs"],
            float(d["res"]),
            (int(d["shape_yx"][0]), int(d["shape_yx"][1])),
        )


def write_label(
    spec: LabelSpec, lc: LandCoverMap, out: Path, rows_per_block: int = 256
) -> LabelRaster:
    """Write one label raster covering the map's extent; rows are evaluated in blocks."""
    xmin, ymin, xmax, ymax = lc.extent
    x0 = xmin + spec.origin_offset
    y0 = ymax - spec.origin_offset
    width = int((xmax - x0) // spec.res)
    height = int((y0 - ymin) // spec.res)
    table = code_table(spec.product)
    path = out / "labels" / spec.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    transform = rasterio.Affine(spec.res, 0.0, x0, 0.0, -spec.res, y0)
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 1,
        "dtype": "uint8",
        "crs": spec.crs,
        "transform": transform,
        "nodata": spec.nodata,
        "compress": "deflate",
        "predictor": 2,
        "tiled": False,
    }
    xs = x0 + spec.res * (np.arange(width) + 0.5)
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, height, rows_per_block):
            r1 = min(height, r0 + rows_per_block)
            ys = y0 - spec.res * (np.arange(r0, r1) + 0.5)
            gx, gy = np.meshgrid(xs, ys)
            codes = table[lc.class_at(gx, gy)]
            dst.write(codes, 1, window=rasterio.windows.Window(0, r0, width, r1 - r0))
    return LabelRaster(
        spec.product, spec.site, f"labels/{spec.file_name}", spec.crs, spec.res, (height, width)
    )
