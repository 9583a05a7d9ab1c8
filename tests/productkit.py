"""Small but complete EnMAP L2A products in the real layout, for reader and catalog tests."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from spectralearth_build.bands import reference_bands
from spectralearth_build.enmap.metadata import ProductMetadata, metadata_to_xml

STEM = "ENMAP01-____L2A-DT0000001049_20220612T105735Z_001_V010111_20220613T102034Z"


def make_meta(**kw) -> ProductMetadata:
    wl, fwhm = reference_bands()
    base = dict(
        name=f"{STEM}-METADATA.XML",
        start_time=datetime(2022, 6, 12, 10, 57, 35, 160668, tzinfo=timezone.utc),
        stop_time=datetime(2022, 6, 12, 10, 57, 39, 695369, tzinfo=timezone.utc),
        corners_lonlat=((10.7, 47.2), (11.1, 47.1), (11.0, 46.9), (10.6, 47.0)),
        cloud_cover=3.5,
        haze_cover=0.0,
        cirrus_cover=1.0,
        snow_cover=0.0,
        sun_elevation=62.1,
        wavelengths=tuple(wl),
        fwhm=tuple(fwhm),
        gains=(0.0001,) * 224,
        offsets=(0.0,) * 224,
        projection="UTM_Zone32_North",
        datatake_id=1049,
        tile_id=1,
        number_of_tiles=3,
        revision="01.01.11",
        processing_time=datetime(2022, 6, 13, 10, 20, 34, tzinfo=timezone.utc),
    )
    base.update(kw)
    return ProductMetadata(**base)


def write_product(
    folder: Path,
    stem: str,
    *,
    prefix: bool = True,
    lower_meta: bool = False,
    cog: bool = False,
    bands: int = 224,
    size: int = 40,
    **meta_kw,
) -> None:
    """A small but complete product in the real layout (for discovery and reader tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = stem if prefix else stem.removeprefix("ENMAP01-____L2A-")
    meta_name = f"{name}-METADATA.{'xml' if lower_meta else 'XML'}"
    img_name = f"{name}-SPECTRAL_IMAGE{'_COG' if cog else ''}.TIF"
    meta = make_meta(name=meta_name, **meta_kw)
    (folder / meta_name).write_bytes(metadata_to_xml(meta, (10.85, 47.05), [img_name], size, size))
    t = from_origin(600015.0, 5200015.0, 30, 30)
    yy, xx = np.mgrid[0:size, 0:size]
    valid = (np.abs(xx - size / 2 + 0.3 * (yy - size / 2)) < size / 3) & (
        np.abs(yy - size / 2) < size / 2.5
    )
    img = np.where(valid, 1000, -32768).astype("int16")[None].repeat(bands, 0)
    prof = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=bands,
        dtype="int16",
        crs="EPSG:32632",
        transform=t,
        nodata=-32768,
        compress="deflate",
    )
    with rasterio.open(folder / img_name, "w", **prof) as dst:
        dst.write(img)
    classes = np.where(valid, 1, 3).astype("uint8")
    prof.update(count=1, dtype="uint8", nodata=None)
    with rasterio.open(folder / f"{name}-QL_QUALITY_CLASSES.TIF", "w", **prof) as dst:
        dst.write(classes, 1)


def zip_folder(folder: Path, dest: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"{folder.name}/{f.name}")
    dest.write_bytes(buf.getvalue())
    return buf.getvalue()
