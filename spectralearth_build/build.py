"""The whole job: scan -> plan -> extract into one dataset directory, resumable.

:func:`build_dataset` is what ``build-dataset`` runs.  It writes ``OUT/build.json`` (the config,
the package version and a fingerprint of the input folder: file names and sizes) first, then the
catalog and the plan, then the Zarr store, then runs the work units
(:mod:`spectralearth_build.extract.execute`) and finally writes the tables, the attributes
(band statistics combined exactly, in unit order; :mod:`~spectralearth_build.extract.tables`)
and ``_COMPLETE``.  Every step is skipped when its output already exists, so rerunning into the
same ``OUT`` (or ``--resume``) continues a build killed at any point and yields the same
dataset; the manifest is checked first, and a different config or changed inputs are an error
rather than a silently mixed dataset.

:func:`extract_dataset` is the extraction stage alone, for a given plan and
:class:`~spectralearth_build.extract.reader.TileReader` (tests use it with an in-memory fake).

Execution: ``workers=0`` runs everything in this process; ``scheduler`` (an address or a
scheduler file) uses an existing Dask cluster; otherwise a ``distributed.LocalCluster`` of
``workers`` single-threaded processes (default: one per core) is started for the build.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from . import formats as fmt
from .buildreport import EXIT_INVALID_PRODUCTS, EXIT_OK, BuildReport
from .cluster import client_map, dask_client
from .config import BuildConfig, ConfigError
from .errors import InputError, output_errors
from .extract import store as st
from .plan import PlannedPatch

__all__ = [
    "EXIT_INVALID_PRODUCTS",
    "EXIT_OK",
    "BuildReport",
    "build_dataset",
    "extract_dataset",
]


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
    """Extract ``patches`` into ``OUT`` (store, tables, attributes, ``_COMPLETE``); resumable.

    Args:
        out: dataset folder.
        patches: the plan (:func:`~spectralearth_build.plan.read_plan`), all patches square and
            of one size.
        reader: a :class:`~spectralearth_build.extract.reader.TileReader` for the plan's tiles.
        config: the build config (band selection, checks, store layout, work units).
        client: a ``distributed.Client``, or None to run in this process.
        wavelengths: centre wavelength (nm) per kept band, stored as an attribute (or None).
        fwhm: full width at half maximum (nm) per kept band (or None).
        progress: show a progress bar.
        report: a report to complete (a new one if None).
    """
    from .extract.execute import UnitContext, run_units
    from .extract.tables import finalize
    from .extract.units import make_units, total_slots

    out = Path(out)
    report = report or BuildReport(str(out))
    config.validate()
    t0 = time.perf_counter()
    layout = st.plan_layout(patches, config)
    ex = config.extract
    units = make_units(patches, layout.locations_per_shard, ex.max_unit_patches, ex.max_unit_tiles)
    layout = layout.with_slots(total_slots(units))
    st.create_images(out, layout)
    bands = tuple(int(i) for i in config.bands.kept_indices)
    ctx = UnitContext(str(out), bands, layout.t_max, layout.patch_px, ex)
    resumed = sum(st.read_marker(out, u.name) is not None for u in units)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(units), desc="extracting", unit="unit")

    def on_done(res: Any) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(patches=len(res.locations), refresh=False)

    try:
        results = run_units(units, reader, ctx, client, on_done)
    finally:
        if bar is not None:
            bar.close()
    report.seconds["extract"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    finalize(out, patches, results, config, layout, wavelengths, fwhm)
    report.seconds["finalize"] = time.perf_counter() - t0
    report.planned_patches, report.units, report.units_resumed = len(patches), len(units), resumed
    report.add_units(results)
    report.bytes_written = st.store_bytes(out)
    st.atomic_write_text(out / fmt.REPORT, json.dumps(report.to_dict(), indent=1, sort_keys=True))
    st.atomic_write_text(out / fmt.COMPLETE, f"spectralearth-build {__version__}\n")
    return report


def build_dataset(
    tiles: str | Path,
    out: str | Path,
    config: BuildConfig | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    then: Callable[[Any], None] | None = None,
) -> BuildReport:
    """Scan ``tiles``, plan and extract into ``out``; continue an earlier build found there.

    Args:
        tiles: folder (or single file) of EnMAP L2A products: folders, ZIPs, tar.gz.
        out: dataset folder to create, or an unfinished build to continue.
        config: build config (defaults for everything if None).
        workers: single-threaded worker processes of a local Dask cluster (None: one per core;
            0: no Dask, everything in this process).
        scheduler: address (``tcp://host:port``) or scheduler file of an existing Dask cluster.
        resume: require an existing build in ``out`` (a rerun continues one anyway).
        progress: show progress bars.
        log: called with one-line status messages (e.g. ``click.echo``).
        then: more work on the finished dataset, called with the build's own Dask client (None
            without Dask) before the report page is written, also when ``out`` was complete
            already: label pairing (``build-dataset --labels``) runs on the build's workers.

    Returns:
        The :class:`BuildReport` (also written to ``OUT/report.json``).

    Raises:
        InputError: missing ``tiles``, ``out`` holding something else, or a rerun with another
            config or changed inputs.
        ConfigError: invalid config or planning failure.
    """
    config = config or BuildConfig()
    config.validate()
    tiles, out = Path(tiles), Path(out)
    say = log or (lambda _msg: None)
    if not tiles.exists():
        raise InputError(f"--tiles {tiles}: no such file or folder")
    if st.is_complete(out) and not (out / fmt.MANIFEST).exists():
        raise InputError(f"{out}: complete marker without build manifest")
    with output_errors(out):
        return _build(tiles, out, config, workers, scheduler, resume, progress, say, then)


def _build(
    tiles: Path,
    out: Path,
    config: BuildConfig,
    workers: int | None,
    scheduler: str | None,
    resume: bool,
    progress: bool,
    say: Callable[[str], None],
    then: Callable[[Any], None] | None,
) -> BuildReport:
    """The body of :func:`build_dataset` (write errors are turned into domain errors there)."""
    from .catalog import read_catalog, scan, summarize, tile_records, write_catalog
    from .extract.reader import EnmapReader
    from .extract.tables import kept_band_wavelengths
    from .geometry import PlanningError, plan_patches
    from .plan import read_plan, write_plan
    from .report import write_report

    continued = st.check_or_write_manifest(out, st.build_manifest(config, tiles), resume)
    if continued and st.is_complete(out):
        say(f"{out} is already complete")
        if then is not None:
            with dask_client(workers, scheduler) as client:
                then(client)
            say(f"report: {write_report(out)}")
        return BuildReport.from_dict(json.loads((out / fmt.REPORT).read_text()))
    if continued:
        say(f"continuing the build in {out}")

    report = BuildReport(str(out))
    with dask_client(workers, scheduler) as client:
        t0 = time.perf_counter()
        if (out / fmt.CATALOG).exists():
            catalog = read_catalog(out / fmt.CATALOG)
        else:
            catalog = scan(tiles, config, map_fn=client_map(client), progress=progress)
            with output_errors(out / fmt.CATALOG):  # pyarrow's errors do not name the file
                write_catalog(catalog, out / fmt.CATALOG, config)
        report.seconds["scan"] = time.perf_counter() - t0
        report.products = summarize(catalog)
        bad = catalog[catalog["status"] == "invalid"]
        report.invalid_products = [
            {"product": str(r.location), "reason": str(r.reason), "detail": str(r.detail)}
            for r in bad.itertuples(index=False)
        ]

        t0 = time.perf_counter()
        if (out / fmt.PLAN).exists():
            patches, _ = read_plan(out / fmt.PLAN)
        else:
            try:
                result = plan_patches(tile_records(catalog), config.plan, map_fn=client_map(client))
            except PlanningError as exc:
                raise ConfigError(f"planning failed: {exc}") from exc
            patches = list(result.patches)
            with output_errors(out / fmt.PLAN):
                write_plan(patches, out / fmt.PLAN, result.file_metadata(config))
        report.seconds["plan"] = time.perf_counter() - t0
        say(
            f"{len(patches)} patches planned from {int((catalog['status'] == 'ok').sum())} products"
        )

        reader = EnmapReader.from_catalog(catalog)
        wavelengths, fwhm = kept_band_wavelengths(catalog, config)
        extract_dataset(out, patches, reader, config, client, wavelengths, fwhm, progress, report)
        if then is not None:
            then(client)
    say(f"report: {write_report(out)}")
    return report
