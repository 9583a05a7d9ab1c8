"""The tile catalog: one row per product found, with a status saying whether it is usable.

Scanning reads each product's metadata and image header and computes its valid-data footprint
(:func:`scan_source`, a plain function that runs anywhere, one product at a time).  Then
archive-wide rules are applied (:func:`apply_status_rules`): reprocessing duplicates, night and
cloudy acquisitions.  Every product ends with a ``status`` and a ``reason``:

=============  ==================================================================================
``ok``         usable for planning
``invalid``    unreadable, zero-byte, truncated, wrong band count, no/unknown CRS, metadata missing
               or malformed (``reason`` says which, ``detail`` gives the underlying message)
``duplicate``  another copy of the same acquisition (datatake + tile + start) with a newer
               processor version, or the same product found twice, is kept instead
``night``      sun elevation below ``scan.min_sun_elevation``
``cloudy``     cloud + cirrus cover above ``scan.max_cloud_cover`` percent
=============  ==================================================================================

The catalog is written as GeoParquet: the geometry column is the footprint in EPSG:4326 and
``footprint_native`` (WKB) holds it in the product's own CRS (named in ``crs``).  Beside it,
``clear_native`` (WKB, same CRS) is the clear-sky footprint: where a patch of ``plan.patch_px``
passes the extraction cloud and snow checks (:mod:`.enmap.footprint`), a MultiPolygon with holes,
empty when no patch fits; ``clear_fraction`` is its area over the valid footprint's.  Planning
uses the clear-sky footprint.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely

from .config import BuildConfig
from .crs import footprint_to_lonlat
from .enmap.discovery import Container, DiscoveryProblem, ProductSource, discover_products
from .enmap.naming import ProductName
from .enmap.product import EnmapProduct, ProductError
from .grid import PixelGrid
from .records import TileRecord

STATUSES = ("ok", "invalid", "duplicate", "night", "cloudy")
CATALOG_VERSION = 2

MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


def source_to_json(source: ProductSource) -> str:
    """The catalog's ``source`` column: a product source as JSON (sorted keys)."""
    return json.dumps(asdict(source), sort_keys=True)


def source_from_json(text: str) -> ProductSource:
    """Inverse of :func:`source_to_json`."""
    d = json.loads(text)
    return ProductSource(
        d["product_id"],
        tuple(Container(**c) for c in d["containers"]),
        d["folder"],
        tuple(tuple(f) for f in d["files"]),  # type: ignore[misc]
    )


def _empty_row(source_id: str, location: str) -> dict[str, Any]:
    return {
        "product_id": source_id,
        "location": location,
        "source": None,
        "datatake": None,
        "tile": None,
        "start_time": None,
        "stop_time": None,
        "processor_version": None,
        "processing_time": None,
        "crs": None,
        "transform": None,
        "height": None,
        "width": None,
        "band_count": None,
        "cloud_cover": None,
        "haze_cover": None,
        "cirrus_cover": None,
        "snow_cover": None,
        "sun_elevation": None,
        "footprint_native": None,
        "footprint_area_m2": None,
        "valid_fraction": None,
        "clear_native": None,
        "clear_fraction": None,
        "geometry": None,
        "status": "ok",
        "reason": "",
        "detail": "",
    }


def _name_fields(product_id: str) -> dict[str, Any]:
    """Catalog fields that the product name alone gives."""
    name = ProductName.parse(product_id)
    return {
        "datatake": name.datatake,
        "tile": name.tile,
        "start_time": name.start_time,
        "processor_version": name.processor_version,
        "processing_time": name.processing_time,
    }


def scan_source(source: ProductSource, config: BuildConfig) -> dict[str, Any]:
    """Scan one product: a catalog row, with ``status="invalid"`` if it cannot be used."""
    row = _empty_row(source.product_id, source.location)
    row["source"] = source_to_json(source)
    row.update(_name_fields(source.product_id))
    product = EnmapProduct(source)
    try:
        meta = product.metadata
        row.update(
            start_time=meta.start_time,
            stop_time=meta.stop_time,
            band_count=meta.band_count,
            cloud_cover=meta.cloud_cover,
            haze_cover=meta.haze_cover,
            cirrus_cover=meta.cirrus_cover,
            snow_cover=meta.snow_cover,
            sun_elevation=meta.sun_elevation,
        )
        grid = product.check(config.bands, verify_pixels=config.scan.verify_pixels)
        row.update(
            crs=grid.crs, transform=list(grid.transform), height=grid.height, width=grid.width
        )
        fp, clear = product.footprints(
            config.plan.patch_px,
            config.extract.max_snow_fraction,
            config.scan.footprint_simplify_px,
        )
        row["footprint_native"] = shapely.to_wkb(fp)
        row["footprint_area_m2"] = fp.area
        row["valid_fraction"] = fp.area / (grid.height * grid.width * grid.res**2)
        row["clear_native"] = shapely.to_wkb(clear)
        row["clear_fraction"] = clear.area / fp.area
        row["geometry"] = footprint_to_lonlat(fp, grid.crs)
    except ProductError as exc:
        row.update(status="invalid", reason=exc.reason, detail=exc.detail or str(exc))
    return row


def _problem_row(problem: DiscoveryProblem) -> dict[str, Any]:
    row = _empty_row(problem.product_id or Path(problem.path).name, problem.path)
    if problem.product_id:
        row.update(_name_fields(problem.product_id))
    row.update(status="invalid", reason=problem.category, detail=problem.reason)
    return row


def apply_status_rules(rows: list[dict[str, Any]], config: BuildConfig) -> None:
    """Mark duplicates, night and cloudy products in place (``invalid`` rows are left alone)."""
    readable = [r for r in rows if r["status"] != "invalid"]
    by_acq: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in readable:
        key = (r["datatake"], r["tile"], pd.Timestamp(r["start_time"]).floor("s"))
        by_acq.setdefault(key, []).append(r)
    for group in by_acq.values():
        group.sort(
            key=lambda r: (r["processor_version"], r["processing_time"], r["location"]),
            reverse=True,
        )
        keep = group[0]
        for r in group[1:]:
            if r["product_id"] == keep["product_id"]:
                reason, detail = "same product found twice", f"kept copy at {keep['location']}"
            else:
                reason = "older processor version"
                detail = f"V{r['processor_version']} superseded by {keep['product_id']}"
            r.update(status="duplicate", reason=reason, detail=detail)
    sc = config.scan
    for r in readable:
        if r["status"] != "ok":
            continue
        if r["sun_elevation"] is not None and r["sun_elevation"] < sc.min_sun_elevation:
            r.update(
                status="night",
                reason="sun below horizon",
                detail=f"sun elevation {r['sun_elevation']:.1f} deg < {sc.min_sun_elevation:g}",
            )
            continue
        cover = (r["cloud_cover"] or 0.0) + (r["cirrus_cover"] or 0.0)
        if cover > sc.max_cloud_cover:
            r.update(
                status="cloudy",
                reason="cloud cover above limit",
                detail=f"cloud + cirrus {cover:.1f}% > {sc.max_cloud_cover:g}%",
            )


def _progress(iterable: Iterable[Any], total: int, desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="product", leave=False)


def scan_sources(
    sources: list[ProductSource],
    problems: list[DiscoveryProblem],
    config: BuildConfig,
    map_fn: MapFn | None = None,
    progress: bool = False,
) -> gpd.GeoDataFrame:
    """Scan products (optionally in parallel through ``map_fn``) and apply the status rules."""
    mapper: MapFn = map_fn or map  # type: ignore[assignment]
    rows = list(
        _progress(mapper(_ScanOne(config), sources), len(sources), "scanning products", progress)
    )
    rows.extend(_problem_row(p) for p in problems)
    apply_status_rules(rows, config)
    return rows_to_catalog(rows)


class _ScanOne:
    """Picklable ``scan_source`` bound to a config (for process pools and Dask)."""

    def __init__(self, config: BuildConfig):
        self.config = config

    def __call__(self, source: ProductSource) -> dict[str, Any]:
        return scan_source(source, self.config)


def rows_to_catalog(rows: list[dict[str, Any]]) -> gpd.GeoDataFrame:
    """Rows to a GeoDataFrame in a deterministic order (product id, then location)."""
    rows = sorted(rows, key=lambda r: (r["product_id"], r["location"]))
    df = pd.DataFrame(rows, columns=list(_empty_row("", "").keys()))
    for col in ("start_time", "stop_time", "processing_time"):
        df[col] = pd.to_datetime(df[col], utc=True)
    for col in ("datatake", "tile", "height", "width", "band_count"):
        df[col] = df[col].astype("Int64")
    for col in (
        "cloud_cover",
        "haze_cover",
        "cirrus_cover",
        "snow_cover",
        "sun_elevation",
        "footprint_area_m2",
        "valid_fraction",
        "clear_fraction",
    ):
        df[col] = df[col].astype("float64")
    return gpd.GeoDataFrame(df, geometry="geometry", crs="EPSG:4326")


def scan(
    tiles: str | Path,
    config: BuildConfig | None = None,
    map_fn: MapFn | None = None,
    progress: bool = False,
) -> gpd.GeoDataFrame:
    """Discover and scan every product under ``tiles``: the catalog as a GeoDataFrame.

    Args:
        tiles: folder (or single file) of EnMAP L2A products: folders, ZIPs, tar.gz.
        config: ``scan`` settings (cloud and sun limits, footprint tolerance, pixel check) and
            the band selection; defaults if None.
        map_fn: an order-preserving ``map`` (e.g. :func:`~.cluster.client_map` of a Dask client)
            to scan products in parallel; the built-in ``map`` if None.
        progress: show a progress bar.

    Returns:
        One row per product found (see the module docstring): ``status``, ``reason``, identity,
        grid (``crs``, ``transform``, ``height``, ``width``), times, cover percentages,
        ``footprint_native`` (WKB in ``crs``) and the footprint in EPSG:4326 as ``geometry``.
    """
    config = config or BuildConfig()
    sources, problems = discover_products(tiles)
    return scan_sources(sources, problems, config, map_fn=map_fn, progress=progress)


def write_catalog(catalog: gpd.GeoDataFrame, path: str | Path, config: BuildConfig) -> None:
    """Write GeoParquet (geometry in EPSG:4326), with the config in the file metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    import pyarrow.parquet as pq

    try:
        catalog.to_parquet(tmp, index=False, schema_version="1.0.0")
        table = pq.read_table(tmp)
        meta = dict(table.schema.metadata or {})
        meta[b"spectralearth_build"] = json.dumps(
            {"kind": "catalog", "version": CATALOG_VERSION, "config": config.to_dict()}
        ).encode()
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    except OSError:  # a full disk: leave no half-written file behind
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def read_catalog(path: str | Path) -> gpd.GeoDataFrame:
    """Read a catalog written by :func:`write_catalog`."""
    return gpd.read_parquet(path)


def tile_records(catalog: pd.DataFrame, status: str = "ok") -> list[TileRecord]:
    """Tile records of the catalog rows with the given status, in catalog order.

    Records carry the clear-sky footprint when the catalog has one (``clear_native``).
    """
    out = []
    has_clear = "clear_native" in catalog.columns
    for r in catalog[catalog["status"] == status].itertuples(index=False):
        start = pd.Timestamp(r.start_time).to_pydatetime()
        clear = r.clear_native if has_clear else None
        out.append(
            TileRecord(
                tile_id=r.product_id,
                datatake=int(r.datatake),
                tile=int(r.tile),
                start_time=start,
                grid=PixelGrid(r.crs, tuple(r.transform), (int(r.height), int(r.width))),  # type: ignore[arg-type]
                footprint=shapely.from_wkb(r.footprint_native),
                clear=shapely.from_wkb(clear) if isinstance(clear, bytes) else None,
            )
        )
    return out


def summarize(catalog: pd.DataFrame) -> dict[str, Any]:
    """Counts by status and by (status, reason), for reports."""
    by_status = Counter(catalog["status"])
    by_reason = Counter(
        f"{s}: {r}" for s, r in zip(catalog["status"], catalog["reason"]) if s != "ok"
    )
    return {
        "products": int(len(catalog)),
        "by_status": {s: int(by_status.get(s, 0)) for s in STATUSES},
        "by_reason": dict(sorted(by_reason.items())),
    }


__all__ = [
    "scan",
    "scan_source",
    "scan_sources",
    "write_catalog",
    "read_catalog",
    "tile_records",
    "summarize",
    "footprint_to_lonlat",
    "source_from_json",
    "source_to_json",
]
