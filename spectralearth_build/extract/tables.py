"""The dataset's tables and store attributes, made from the units' results after extraction.

:func:`write_tables` writes ``index.parquet`` (one row per stored location: the plan's row plus
slot, view count, first view row and unit), ``views.parquet`` and ``dropped_views.parquet``
from the :class:`~.results.UnitResult` of every unit, in unit order; :func:`store_attributes`
is the ``data.zarr`` group's attributes (layout, bands, band statistics combined exactly from
the units' integer sums).  Column names and order are in :mod:`spectralearth_build.formats`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config import BuildConfig
from ..formats import (
    ADD_OFFSET,
    DROPPED,
    DROPPED_COLUMNS,
    FORMAT_NAME,
    INDEX,
    INDEX_COLUMNS,
    NODATA,
    SCALE_FACTOR,
    STORE_NAME,
    UNITS,
    VIEW_COLUMNS,
    VIEWS,
    StoreLayout,
)
from ..plan import PlannedPatch
from .results import BandSums, UnitResult


def views_frame(results: list[UnitResult]) -> Any:
    """``views.parquet`` as a DataFrame, sorted by ``patch_id`` then ``t``."""
    import pandas as pd

    views = pd.DataFrame([v.to_dict() for r in results for v in r.views], columns=VIEW_COLUMNS)
    views = views.sort_values(["patch_id", "t"], kind="stable").reset_index(drop=True)
    views["time"] = pd.to_datetime(views["time"], utc=True)
    for col in ("patch_id", "slot", "t", "datatake", "tile", "row_off", "col_off"):
        views[col] = views[col].astype("int64")
    for col in ("height", "width"):
        views[col] = views[col].astype("int64")
    views["resampled"] = views["resampled"].astype(bool)
    return views


def index_frame(patches: list[PlannedPatch], results: list[UnitResult]) -> Any:
    """``index.parquet`` as a GeoDataFrame, one row per stored location, by ``patch_id``."""
    import geopandas as gpd
    import pandas as pd

    from ..plan import patches_to_frame

    locs = pd.DataFrame(
        [loc.to_dict() | {"unit": r.index} for r in results for loc in r.locations],
        columns=["patch_id", "slot", "n_views", "unit"],
    ).sort_values("patch_id", kind="stable")
    stored = set(locs["patch_id"].tolist())
    frame = patches_to_frame([p for p in patches if p.patch_id in stored])
    frame = frame.drop(columns=["n_views", "tile_ids", "times", "windows", "resampled"])
    index = frame.merge(locs, on="patch_id", how="inner").sort_values("patch_id", kind="stable")
    starts = np.concatenate([[0], np.cumsum(index["n_views"].to_numpy())[:-1]]).astype(np.int64)
    index["view_start"] = starts if len(index) else np.zeros(0, np.int64)
    index = gpd.GeoDataFrame(index.reset_index(drop=True), geometry="geometry", crs="EPSG:4326")
    index = index[list(INDEX_COLUMNS)]
    for col in ("slot", "n_views", "unit"):
        index[col] = index[col].astype("int64")
    return index


def dropped_frame(results: list[UnitResult]) -> Any:
    """``dropped_views.parquet`` as a DataFrame, by ``patch_id``, ``time``, ``product``."""
    import pandas as pd

    return pd.DataFrame(
        [d.to_dict() for r in results for d in r.dropped_views], columns=DROPPED_COLUMNS
    ).sort_values(["patch_id", "time", "product"], kind="stable")


def write_tables(out: Path, patches: list[PlannedPatch], results: list[UnitResult]) -> int:
    """Write the index, view and dropped-view tables; returns the number of stored views."""
    index = index_frame(patches, results)
    views = views_frame(results)
    index.to_parquet(out / INDEX, index=False, schema_version="1.0.0")
    views.to_parquet(out / VIEWS, index=False)
    dropped_frame(results).to_parquet(out / DROPPED, index=False)
    return len(views)


def store_attributes(
    config: BuildConfig,
    layout: StoreLayout,
    n_locations: int,
    n_views: int,
    stats: BandSums,
    wavelengths: np.ndarray | None,
    fwhm: np.ndarray | None,
) -> dict[str, Any]:
    """The ``data.zarr`` group attributes (docs/FORMAT.md, group attributes).

    Args:
        config: the build config (stored whole; its band selection gives ``band_indices``).
        layout: the store layout (``t_max``, ``patch_px``, shard size, format version).
        n_locations: rows of ``index.parquet``.
        n_views: rows of ``views.parquet``.
        stats: exact band sums over every stored view.
        wavelengths: nm per stored band (or None).
        fwhm: nm per stored band (or None).
    """
    mean, std = stats.mean_std()
    return {
        "format": FORMAT_NAME,
        "format_version": layout.format_version,
        "package_version": __version__,
        "config": config.to_dict(),
        "n_locations": int(n_locations),
        "n_views": int(n_views),
        "t_max": layout.t_max,
        "patch_px": layout.patch_px,
        "locations_per_shard": layout.locations_per_shard,
        "band_indices": [int(i) for i in config.bands.kept_indices],
        "wavelengths": [float(v) for v in wavelengths] if wavelengths is not None else None,
        "fwhm": [float(v) for v in fwhm] if fwhm is not None else None,
        "scale_factor": SCALE_FACTOR,
        "add_offset": ADD_OFFSET,
        "nodata": NODATA,
        "units": UNITS,
        "band_mean": mean,
        "band_std": std,
        "band_stats_pixels": stats.count,
    }


def write_attributes(out: Path, attrs: dict[str, Any]) -> None:
    """Store ``attrs`` on the ``data.zarr`` group (NaN allowed, as in JSON readers of Zarr)."""
    import zarr

    group = zarr.open_group(store=str(out / STORE_NAME), mode="r+")
    group.attrs.update(json.loads(json.dumps(attrs, allow_nan=True)))


def finalize(
    out: Path,
    patches: list[PlannedPatch],
    results: list[UnitResult],
    config: BuildConfig,
    layout: StoreLayout,
    wavelengths: np.ndarray | None,
    fwhm: np.ndarray | None,
) -> None:
    """Write the tables and the store attributes of a finished extraction."""
    n_views = write_tables(out, patches, results)
    n_locations = sum(len(r.locations) for r in results)
    stats = sum((r.stats for r in results), BandSums.zeros(layout.n_bands))
    attrs = store_attributes(config, layout, n_locations, n_views, stats, wavelengths, fwhm)
    write_attributes(out, attrs)


def kept_band_wavelengths(catalog: Any, config: BuildConfig) -> tuple[np.ndarray, np.ndarray]:
    """Wavelengths and FWHM (nm) of the kept bands, from the first usable product's metadata.

    Falls back to the reference band table when no product's metadata can be read.
    """
    from ..bands import reference_bands
    from ..catalog import source_from_json
    from ..enmap.product import EnmapProduct
    from ..errors import ProductError

    kept = config.bands.kept_indices
    for r in catalog[catalog["status"] == "ok"].itertuples(index=False):
        try:
            meta = EnmapProduct(source_from_json(r.source)).metadata
        except ProductError:
            continue
        return np.asarray(meta.wavelengths)[kept], np.asarray(meta.fwhm)[kept]
    wl, fw = reference_bands()
    return wl[kept], fw[kept]
