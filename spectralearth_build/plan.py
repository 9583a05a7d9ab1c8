"""The patch plan: which multi-timestamp patches to cut, and from where.

A plan is a list of :class:`PlannedPatch`, one per location, each with its pixel grid and its
views (source tile, acquisition time, pixel window in the source tile) in time order.  Planning
(:mod:`spectralearth_build.geometry`) produces it from footprints alone; extraction only carries
it out.  On disk it is GeoParquet, one row per patch:

==================  ===========================================================================
``patch_id``        int64, 0..N-1 in plan order (multi-timestamp patches first)
``crs``             the patch CRS, e.g. ``"EPSG:32633"``
``transform``       6 affine coefficients (rasterio order) of the patch grid
``height, width``   patch size in pixels
``n_views``         number of timestamps
``component``       connected component of the overlap graph the patch belongs to
``tile_ids``        product ids of the views, ascending time
``times``           view start times (UTC), ascending
``windows``         per view ``[row_off, col_off, height, width]`` in the source tile's grid; for a
                    resampled view, the source window that covers the patch (plus a margin)
``resampled``       per view: True when the source tile is on another grid (another UTM zone)
``footprint_native``WKB of the patch footprint in ``crs``
``geometry``        patch footprint in EPSG:4326
==================  ===========================================================================

The file metadata (key ``spectralearth_build``) holds the config and the planning summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .grid import PixelGrid, Window

PLAN_VERSION = 1


@dataclass(frozen=True)
class PatchView:
    """One timestamp of a patch: where its pixels come from."""

    tile_id: str
    start_time: datetime
    window: Window
    """Pixel window in the source tile's grid (exactly the patch unless ``resampled``)."""
    resampled: bool = False


@dataclass(frozen=True)
class PlannedPatch:
    """One location: a patch grid and its views in ascending time."""

    patch_id: int
    grid: PixelGrid
    views: tuple[PatchView, ...]
    component: int = 0

    @property
    def n_views(self) -> int:
        return len(self.views)

    @property
    def tile_ids(self) -> tuple[str, ...]:
        return tuple(v.tile_id for v in self.views)


def patches_to_frame(patches: list[PlannedPatch]) -> Any:
    """The plan as a GeoDataFrame (geometry in EPSG:4326), one row per patch."""
    import geopandas as gpd
    import pandas as pd
    import shapely
    from shapely.geometry import box

    from .crs import footprint_to_lonlat

    rows = []
    for p in patches:
        fp = box(*p.grid.bounds)
        rows.append(
            {
                "patch_id": p.patch_id,
                "crs": p.grid.crs,
                "transform": list(p.grid.transform),
                "height": p.grid.height,
                "width": p.grid.width,
                "n_views": p.n_views,
                "component": p.component,
                "tile_ids": [v.tile_id for v in p.views],
                "times": [pd.Timestamp(v.start_time) for v in p.views],
                "windows": [v.window.to_list() for v in p.views],
                "resampled": [v.resampled for v in p.views],
                "footprint_native": shapely.to_wkb(fp),
                "geometry": footprint_to_lonlat(fp, p.grid.crs, segment_m=1e9),
            }
        )
    columns = [
        "patch_id",
        "crs",
        "transform",
        "height",
        "width",
        "n_views",
        "component",
        "tile_ids",
        "times",
        "windows",
        "resampled",
        "footprint_native",
        "geometry",
    ]
    df = pd.DataFrame(rows, columns=columns)
    for col in ("patch_id", "height", "width", "n_views", "component"):
        df[col] = df[col].astype("int64")
    return gpd.GeoDataFrame(df, geometry="geometry", crs="EPSG:4326")


def frame_to_patches(frame: Any) -> list[PlannedPatch]:
    """Inverse of :func:`patches_to_frame`."""
    import pandas as pd

    out = []
    for r in frame.itertuples(index=False):
        views = tuple(
            PatchView(
                str(t),
                _utc(pd.Timestamp(ts).to_pydatetime()),
                Window(*(int(v) for v in w)),
                bool(rs),
            )
            for t, ts, w, rs in zip(r.tile_ids, r.times, r.windows, r.resampled)
        )
        grid = PixelGrid(r.crs, tuple(r.transform), (int(r.height), int(r.width)))  # type: ignore[arg-type]
        out.append(PlannedPatch(int(r.patch_id), grid, views, int(r.component)))
    return out


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def write_plan(
    patches: list[PlannedPatch], path: str | Path, metadata: dict[str, Any] | None = None
) -> None:
    """Write the plan as GeoParquet; ``metadata`` (config, summary) goes into the file metadata.

    Written atomically and byte-for-byte reproducibly (same patches + metadata = same bytes).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = patches_to_frame(patches)
    tmp = path.with_name(path.name + ".tmp")
    try:
        frame.to_parquet(tmp, index=False, schema_version="1.0.0")
        table = pq.read_table(tmp)
        meta = dict(table.schema.metadata or {})
        meta[b"spectralearth_build"] = json.dumps(
            {"kind": "plan", "version": PLAN_VERSION, **(metadata or {})},
            sort_keys=True,
            default=str,
        ).encode()
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    except OSError:  # a full disk: leave no half-written file behind
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def read_plan(path: str | Path) -> tuple[list[PlannedPatch], dict[str, Any]]:
    """Read a plan file: the patches and the metadata stored with them."""
    import geopandas as gpd
    import pyarrow.parquet as pq

    frame = gpd.read_parquet(path)
    raw = (pq.read_schema(path).metadata or {}).get(b"spectralearth_build", b"{}")
    return frame_to_patches(frame), json.loads(raw)
