"""The whole job: scan -> plan -> extract into one dataset directory, resumable.

:func:`build_dataset` is what ``build-dataset`` runs.  It writes ``OUT/build.json`` (the config,
the package version and a fingerprint of the input folder: file names and sizes) first, then the
catalog and the plan, then the Zarr store, then runs the work units
(:mod:`spectralearth_build.extract.execute`) and finally writes the tables, the attributes
(band statistics combined exactly, in unit order) and ``_COMPLETE``.  Every step is skipped when
its output already exists, so rerunning into the same ``OUT`` (or ``--resume``) continues a
build killed at any point and yields the same dataset; the manifest is checked first, and a
different config or changed inputs are an error rather than a silently mixed dataset.

:func:`extract_dataset` is the extraction stage alone, for a given plan and
:class:`~spectralearth_build.extract.reader.TileReader` (tests use it with an in-memory fake).

Execution: ``workers=0`` runs everything in this process; ``scheduler`` (an address or a
scheduler file) uses an existing Dask cluster; otherwise a ``distributed.LocalCluster`` of
``workers`` single-threaded processes (default: one per core) is started for the build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .cluster import client_map, dask_client
from .config import BuildConfig, ConfigError
from .errors import InputError
from .extract import store as st
from .plan import PlannedPatch

VIEW_COLUMNS = (
    "patch_id",
    "slot",
    "t",
    "time",
    "product",
    "datatake",
    "tile",
    "processor_version",
    "row_off",
    "col_off",
    "height",
    "width",
    "resampled",
    "cloud_fraction",
    "snow_fraction",
)
"""Columns of ``views.parquet``, in order (see docs/FORMAT.md)."""
WINDOW_COLUMNS = ("row_off", "col_off", "height", "width")

EXIT_OK = 0
EXIT_INVALID_PRODUCTS = 3
"""Exit status of ``build-dataset`` when products were skipped as invalid (unless allowed)."""


@dataclass
class BuildReport:
    """What a build did: counts, drops, skipped products, bytes and time per stage."""

    out: str
    products: dict[str, Any] = field(default_factory=dict)
    invalid_products: list[dict[str, str]] = field(default_factory=list)
    """Products skipped as unusable: ``{"product", "reason", "detail"}`` (scan or extraction)."""
    planned_patches: int = 0
    patches: int = 0
    views: int = 0
    patches_by_timestamps: dict[int, int] = field(default_factory=dict)
    dropped_views: dict[str, int] = field(default_factory=dict)
    dropped_patches: int = 0
    units: int = 0
    units_resumed: int = 0
    bytes_written: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["patches_by_timestamps"] = {str(k): v for k, v in self.patches_by_timestamps.items()}
        return d

    @property
    def exit_status(self) -> int:
        return EXIT_INVALID_PRODUCTS if self.invalid_products else EXIT_OK


# -- config and manifest ------------------------------------------------------------------------
def validate_config(config: BuildConfig) -> None:
    """Reject extraction settings the pipeline cannot carry out (a ConfigError, not a traceback)."""
    from rasterio.enums import Resampling

    ex = config.extract
    if ex.compressor not in st.COMPRESSORS and ex.compressor != "deflate":
        raise ConfigError(f"extract.compressor {ex.compressor!r}: expected one of {st.COMPRESSORS}")
    if ex.resampling not in Resampling.__members__:
        raise ConfigError(f"extract.resampling {ex.resampling!r} is not a rasterio method")
    for name in ("max_cloud_fraction", "max_snow_fraction"):
        if not 0.0 <= getattr(ex, name) <= 1.0:
            raise ConfigError(f"extract.{name} must be a fraction in 0..1")
    for name in ("max_unit_tiles", "max_unit_patches", "shard_max_mib"):
        if getattr(ex, name) < 1:
            raise ConfigError(f"extract.{name} must be >= 1")
    if ex.locations_per_shard < 0:
        raise ConfigError("extract.locations_per_shard must be >= 0 (0 = auto)")


def inputs_fingerprint(tiles: Path) -> str:
    """Hash of the input folder's file names (relative) and sizes: cheap, detects changes."""
    h = hashlib.sha256()
    tiles = Path(tiles)
    if tiles.is_file():
        h.update(f"{tiles.name}\0{tiles.stat().st_size}\n".encode())
        return h.hexdigest()
    for root, dirs, files in os.walk(tiles):
        dirs.sort()
        for f in sorted(files):
            p = Path(root, f)
            h.update(f"{p.relative_to(tiles).as_posix()}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()


def _check_or_write_manifest(out: Path, manifest: dict[str, Any], resume: bool) -> bool:
    """Write ``OUT/build.json`` or check it matches; True if an earlier build is continued."""
    path = out / st.MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        for key, what in (
            ("config", "config"),
            ("inputs", "input products"),
            ("plan_sha256", "plan"),
        ):
            if key in manifest and old.get(key) != manifest[key]:
                raise InputError(
                    f"{out}: the build there used a different {what}; resume it with the same "
                    "--tiles and --config, or choose a new --out"
                )
        return True
    if resume:
        raise InputError(f"--resume: {out} holds no build to resume ({st.MANIFEST} missing)")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: folder exists and is not a dataset build; choose a new one")
    st.atomic_write_text(path, json.dumps(manifest, sort_keys=True, indent=1))
    return False


# -- extraction stage -----------------------------------------------------------------------
def plan_layout(patches: list[PlannedPatch], config: BuildConfig) -> dict[str, int]:
    """``t_max``, ``n_bands``, ``patch_px`` and ``locations_per_shard`` for a plan."""
    sizes = {p.grid.shape_yx for p in patches}
    if len(sizes) > 1 or any(h != w for h, w in sizes):
        raise InputError(f"plan patches must all be square and of one size, got {sorted(sizes)}")
    patch_px = sizes.pop()[0] if sizes else config.plan.patch_px
    t_max = max((p.n_views for p in patches), default=1)
    n_bands = config.bands.count
    k = st.locations_per_shard(config.extract, t_max, n_bands, patch_px)
    return {"t_max": t_max, "n_bands": n_bands, "patch_px": patch_px, "locations_per_shard": k}


def extract_dataset(
    out: str | Path,
    patches: list[PlannedPatch],
    reader: Any,
    config: BuildConfig,
    client: Any = None,
    wavelengths: np.ndarray | None = None,
    fwhm: np.ndarray | None = None,
    progress: bool = False,
    report: BuildReport | None = None,
) -> BuildReport:
    """Extract ``patches`` into ``OUT`` (store, tables, attributes, ``_COMPLETE``); resumable."""
    from .extract.execute import UnitContext, drop_counts, run_units
    from .extract.units import make_units, total_slots

    out = Path(out)
    report = report or BuildReport(str(out))
    validate_config(config)
    t0 = time.perf_counter()
    layout = plan_layout(patches, config)
    ex = config.extract
    units = make_units(
        patches, layout["locations_per_shard"], ex.max_unit_patches, ex.max_unit_tiles
    )
    st.create_images(
        out,
        total_slots(units),
        layout["t_max"],
        layout["n_bands"],
        layout["patch_px"],
        layout["locations_per_shard"],
        ex,
    )
    ctx = UnitContext(
        str(out),
        tuple(int(i) for i in config.bands.kept_indices),
        layout["t_max"],
        layout["patch_px"],
        ex,
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(units), desc="extracting", unit="unit")
    resumed = {u.name for u in units if st.read_marker(out, u.name) is not None}

    def on_done(res: dict[str, Any]) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(patches=len(res["locations"]), refresh=False)

    try:
        results = run_units(units, reader, ctx, client, on_done)
    finally:
        if bar is not None:
            bar.close()
    report.seconds["extract"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    finalize(out, patches, results, config, layout, wavelengths, fwhm)
    report.seconds["finalize"] = time.perf_counter() - t0
    report.planned_patches = len(patches)
    report.units = len(units)
    report.units_resumed = len(resumed)
    report.patches = sum(len(r["locations"]) for r in results)
    report.views = sum(len(r["views"]) for r in results)
    report.patches_by_timestamps = dict(
        sorted(Counter(loc["n_views"] for r in results for loc in r["locations"]).items())
    )
    report.dropped_views = drop_counts(results)
    report.dropped_patches = sum(len(r["dropped_patches"]) for r in results)
    failed: dict[str, str] = {}
    for r in results:
        failed.update(r["failed_products"])
    report.invalid_products.extend(
        {"product": p, "reason": "read failed during extraction", "detail": d}
        for p, d in sorted(failed.items())
    )
    report.bytes_written = st.store_bytes(out)
    st.atomic_write_text(out / st.REPORT, json.dumps(report.to_dict(), indent=1, sort_keys=True))
    st.atomic_write_text(out / st.COMPLETE, f"spectralearth-build {__version__}\n")
    return report


def band_statistics(results: list[dict[str, Any]], n_bands: int) -> dict[str, Any]:
    """Per-band mean and std of the stored pixels, from the units' exact integer sums."""
    count = 0
    s = [0] * n_bands
    ss = [0] * n_bands
    for r in results:  # Python ints: exact, so the result does not depend on unit order
        count += r["stats"]["count"]
        s = [a + b for a, b in zip(s, r["stats"]["sum"])]
        ss = [a + b for a, b in zip(ss, r["stats"]["sumsq"])]
    if count == 0:
        nan = [float("nan")] * n_bands
        return {"pixels_per_band": 0, "mean": nan, "std": nan}
    mean = [a / count for a in s]
    std = [math.sqrt(max(b * count - a * a, 0) / count**2) for a, b in zip(s, ss)]
    return {"pixels_per_band": count, "mean": mean, "std": std}


def finalize(
    out: Path,
    patches: list[PlannedPatch],
    results: list[dict[str, Any]],
    config: BuildConfig,
    layout: dict[str, int],
    wavelengths: np.ndarray | None,
    fwhm: np.ndarray | None,
) -> None:
    """Write the index, view and dropped-view tables and the store attributes."""
    import geopandas as gpd
    import pandas as pd
    import zarr

    from .plan import patches_to_frame

    locs = pd.DataFrame(
        [loc | {"unit": r["index"]} for r in results for loc in r["locations"]],
        columns=["patch_id", "slot", "n_views", "unit"],
    ).sort_values("patch_id", kind="stable")
    views = pd.DataFrame([v for r in results for v in r["views"]])
    if views.empty:
        views = pd.DataFrame(
            columns=[c for c in VIEW_COLUMNS if c not in WINDOW_COLUMNS] + ["window"]
        )
    views = views.sort_values(["patch_id", "t"], kind="stable").reset_index(drop=True)
    views["time"] = pd.to_datetime(views["time"], utc=True)
    win = np.array(views["window"].tolist(), dtype=np.int64).reshape(-1, 4)
    for i, col in enumerate(WINDOW_COLUMNS):
        views[col] = win[:, i]
    views = views.drop(columns=["window"])
    for col in ("patch_id", "slot", "t", "datatake", "tile"):
        views[col] = views[col].astype("int64")
    views["resampled"] = views["resampled"].astype(bool)
    views = views[list(VIEW_COLUMNS)]

    stored = set(locs["patch_id"].tolist())
    frame = patches_to_frame([p for p in patches if p.patch_id in stored])
    frame = frame.drop(columns=["n_views", "tile_ids", "times", "windows", "resampled"])
    index = frame.merge(locs, on="patch_id", how="inner").sort_values("patch_id", kind="stable")
    starts = np.concatenate([[0], np.cumsum(index["n_views"].to_numpy())[:-1]]).astype(np.int64)
    index["view_start"] = starts if len(index) else np.zeros(0, np.int64)
    index = gpd.GeoDataFrame(index.reset_index(drop=True), geometry="geometry", crs="EPSG:4326")
    index = index[
        [
            "patch_id",
            "slot",
            "n_views",
            "view_start",
            "crs",
            "transform",
            "height",
            "width",
            "component",
            "unit",
            "footprint_native",
            "geometry",
        ]
    ]
    for col in ("slot", "n_views", "unit"):
        index[col] = index[col].astype("int64")
    index.to_parquet(out / st.INDEX, index=False, schema_version="1.0.0")
    views.to_parquet(out / st.VIEWS, index=False)

    dropped = pd.DataFrame(
        [d for r in results for d in r["dropped_views"]],
        columns=["patch_id", "tile_id", "time", "reason", "cloud_fraction", "snow_fraction"],
    ).sort_values(["patch_id", "time", "tile_id"], kind="stable")
    dropped.rename(columns={"tile_id": "product"}).to_parquet(out / st.DROPPED, index=False)

    n_bands = layout["n_bands"]
    stats = band_statistics(results, n_bands)
    kept = [int(i) for i in config.bands.kept_indices]
    attrs = {
        "format": "spectralearth-build",
        "format_version": st.FORMAT_VERSION,
        "package_version": __version__,
        "config": config.to_dict(),
        "n_locations": int(len(index)),
        "n_views": int(len(views)),
        "t_max": layout["t_max"],
        "patch_px": layout["patch_px"],
        "locations_per_shard": layout["locations_per_shard"],
        "band_indices": kept,
        "wavelengths": [float(v) for v in wavelengths] if wavelengths is not None else None,
        "fwhm": [float(v) for v in fwhm] if fwhm is not None else None,
        "scale_factor": 1e-4,
        "add_offset": 0.0,
        "nodata": st.NODATA,
        "units": "reflectance x 10000",
        "band_mean": stats["mean"],
        "band_std": stats["std"],
        "band_stats_pixels": stats["pixels_per_band"],
    }
    group = zarr.open_group(store=str(out / st.STORE_NAME), mode="r+")
    group.attrs.update(json.loads(json.dumps(attrs, allow_nan=True)))


# -- the whole job --------------------------------------------------------------------------
def reference_bands_of(catalog: Any, config: BuildConfig) -> tuple[np.ndarray, np.ndarray]:
    """Wavelengths and FWHM of the kept bands, from the first usable product's metadata."""
    from .bands import reference_bands
    from .catalog import source_from_json
    from .enmap.product import EnmapProduct, ProductError

    kept = config.bands.kept_indices
    for r in catalog[catalog["status"] == "ok"].itertuples(index=False):
        try:
            meta = EnmapProduct(source_from_json(r.source)).metadata
        except ProductError:
            continue
        return np.asarray(meta.wavelengths)[kept], np.asarray(meta.fwhm)[kept]
    wl, fw = reference_bands()
    return wl[kept], fw[kept]


def build_dataset(
    tiles: str | Path,
    out: str | Path,
    config: BuildConfig | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> BuildReport:
    """Scan ``tiles``, plan and extract into ``out``; continue an earlier build found there."""
    from .catalog import read_catalog, scan, summarize, tile_records, write_catalog
    from .extract.reader import EnmapReader
    from .geometry import PlanningError, plan_patches
    from .plan import read_plan, write_plan

    config = config or BuildConfig()
    validate_config(config)
    tiles, out = Path(tiles), Path(out)
    say = log or (lambda _msg: None)
    if not tiles.exists():
        raise InputError(f"--tiles {tiles}: no such file or folder")
    if st.is_complete(out) and not (out / st.MANIFEST).exists():
        raise InputError(f"{out}: complete marker without build manifest")
    manifest = {
        "kind": "spectralearth-build",
        "format_version": st.FORMAT_VERSION,
        "package_version": __version__,
        "config": config.to_dict(),
        "inputs": inputs_fingerprint(tiles),
    }
    continued = _check_or_write_manifest(out, manifest, resume)
    report = BuildReport(str(out))
    if continued and st.is_complete(out):
        say(f"{out} is already complete")
        old = json.loads((out / st.REPORT).read_text())
        report = BuildReport(**{k: v for k, v in old.items() if k != "patches_by_timestamps"})
        report.patches_by_timestamps = {int(k): v for k, v in old["patches_by_timestamps"].items()}
        return report
    if continued:
        say(f"continuing the build in {out}")

    with dask_client(workers, scheduler) as client:
        t0 = time.perf_counter()
        if (out / st.CATALOG).exists():
            catalog = read_catalog(out / st.CATALOG)
        else:
            catalog = scan(tiles, config, map_fn=client_map(client), progress=progress)
            write_catalog(catalog, out / st.CATALOG, config)
        report.seconds["scan"] = time.perf_counter() - t0
        report.products = summarize(catalog)
        bad = catalog[catalog["status"] == "invalid"]
        report.invalid_products = [
            {"product": str(r.location), "reason": str(r.reason), "detail": str(r.detail)}
            for r in bad.itertuples(index=False)
        ]

        t0 = time.perf_counter()
        if (out / st.PLAN).exists():
            patches, _ = read_plan(out / st.PLAN)
        else:
            try:
                result = plan_patches(tile_records(catalog), config.plan, map_fn=client_map(client))
            except PlanningError as exc:
                raise ConfigError(f"planning failed: {exc}") from exc
            patches = list(result.patches)
            write_plan(patches, out / st.PLAN, result.file_metadata(config))
        report.seconds["plan"] = time.perf_counter() - t0
        say(
            f"{len(patches)} patches planned from {int((catalog['status'] == 'ok').sum())} products"
        )

        reader = EnmapReader.from_catalog(catalog)
        wavelengths, fwhm = reference_bands_of(catalog, config)
        extract_dataset(out, patches, reader, config, client, wavelengths, fwhm, progress, report)
    return report
