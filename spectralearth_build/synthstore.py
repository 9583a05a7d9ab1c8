"""A synthetic dataset written straight into the store format, for loader benchmarks.

:func:`write_synthetic_store` writes what ``build-dataset`` writes (``data.zarr`` with the
current :class:`~spectralearth_build.formats.StoreLayout`, ``index.parquet`` as GeoParquet,
``views.parquet``, ``dropped_views.parquet``, the group attributes with exact band statistics,
``build.json`` and ``_COMPLETE``) for ``n_locations`` locations of 1..``max_views`` views,
without GeoTIFFs, rasterio, GDAL or geopandas: it imports only numpy, pandas, pyarrow and zarr,
so a GPU node without a raster stack can make a store of any size to benchmark data loading.

Pixels are random-walk spectra over the real EnMAP band centres (the reference band table, the
configured band selection: 202 bands by default): per location a smooth spectrum, per view a
brightness change, per pixel a smooth spatial pattern and sensor-like noise, int16 reflectance
x 10000 in 0..10000, so codecs see data of the character of real reflectance.  Locations sit
on a regular grid of patches in UTM zone 32N; their longitude/latitude footprints come from
Snyder's inverse UTM series (no pyproj; accurate to well under a metre here).  Every location
has its own random generator (seeded by ``seed`` and its id), so the store does not depend on
the shard size.

The images are written one shard block at a time (``k`` locations, one full-shard assignment);
each block is an independent task (:class:`_ShardWriter`) that generates, writes and returns
its view rows and exact band sums, so ``workers > 1`` runs the blocks in a pool of worker
processes and the driver combines the results in block order: the store is the same bytes for
any number of workers (band sums are exact integers, the tables follow slot order).  Time goes
mostly to drawing the per-pixel noise (about 85% of generating a view), then to Blosc and the
band sums, so processes, not vectorisation, are what speed it up.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from . import formats as fmt
from .bands import reference_bands
from .config import BuildConfig
from .errors import InputError, OutputWriteError

if TYPE_CHECKING:
    from .extract.results import BandSums

CRS = "EPSG:32632"
ORIGIN_XY = (300_015.0, 5_400_015.0)
"""Upper-left corner of the patch grid (metres, UTM 32N)."""
PIXEL_M = 30.0
START = datetime(2022, 4, 1, 10, 30, tzinfo=timezone.utc)
DAYS = 730
"""Acquisition days are drawn from two years after :data:`START`."""
LONLAT_PROJJSON = {
    "$schema": "https://proj.org/schemas/v0.7/projjson.schema.json",
    "type": "GeographicCRS",
    "name": "WGS 84",
    "datum": {
        "type": "GeodeticReferenceFrame",
        "name": "World Geodetic System 1984",
        "ellipsoid": {
            "name": "WGS 84",
            "semi_major_axis": 6378137,
            "inverse_flattening": 298.257223563,
        },
    },
    "coordinate_system": {
        "subtype": "ellipsoidal",
        "axis": [
            {
                "name": "Geodetic latitude",
                "abbreviation": "Lat",
                "direction": "north",
                "unit": "degree",
            },
            {
                "name": "Geodetic longitude",
                "abbreviation": "Lon",
                "direction": "east",
                "unit": "degree",
            },
        ],
    },
    "id": {"authority": "EPSG", "code": 4326},
}
"""EPSG:4326 as PROJJSON, for the GeoParquet metadata of ``index.parquet``."""


def _polygon_wkb(xy: np.ndarray) -> bytes:
    """WKB (little endian) of a polygon with one closed ring ``(n, 2)``."""
    ring = np.asarray(xy, dtype="<f8")
    return struct.pack("<BII", 1, 3, 1) + struct.pack("<I", len(ring)) + ring.tobytes()


def _utm32_to_lonlat(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UTM zone 32N (WGS 84) to longitude/latitude in degrees: Snyder's inverse series."""
    a, f, k0 = 6_378_137.0, 1 / 298.257223563, 0.9996
    e2 = f * (2 - f)
    ep2 = e2 / (1 - e2)
    mu = (y / k0) / (a * (1 - e2 / 4 - 3 * e2**2 / 64 - 5 * e2**3 / 256))
    e1 = (1 - math.sqrt(1 - e2)) / (1 + math.sqrt(1 - e2))
    phi = (
        mu
        + (3 * e1 / 2 - 27 * e1**3 / 32) * np.sin(2 * mu)
        + (21 * e1**2 / 16 - 55 * e1**4 / 32) * np.sin(4 * mu)
        + (151 * e1**3 / 96) * np.sin(6 * mu)
        + (1097 * e1**4 / 512) * np.sin(8 * mu)
    )
    sin, cos, tan = np.sin(phi), np.cos(phi), np.tan(phi)
    c1, t1 = ep2 * cos**2, tan**2
    n1 = a / np.sqrt(1 - e2 * sin**2)
    r1 = a * (1 - e2) / (1 - e2 * sin**2) ** 1.5
    d = (x - 500_000.0) / (n1 * k0)
    lat = phi - (n1 * tan / r1) * (
        d**2 / 2
        - (5 + 3 * t1 + 10 * c1 - 4 * c1**2 - 9 * ep2) * d**4 / 24
        + (61 + 90 * t1 + 298 * c1 + 45 * t1**2 - 252 * ep2 - 3 * c1**2) * d**6 / 720
    )
    lon = (
        d
        - (1 + 2 * t1 + c1) * d**3 / 6
        + (5 - 2 * c1 + 28 * t1 - 3 * c1**2 + 8 * ep2 + 24 * t1**2) * d**5 / 120
    ) / cos
    return 9.0 + np.degrees(lon), np.degrees(lat)


def synthetic_views(
    rng: np.random.Generator,
    wavelengths: np.ndarray,
    n_views: int,
    patch_px: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """int16 ``(n_views, C, P, P)`` of one location: random-walk spectra over ``wavelengths``.

    Args:
        rng: the location's generator; the draws are, in order, the spectrum, the spatial
            field, then per view its gain and its ``(C, P, P)`` noise.
        wavelengths: band centres ``(C,)`` in nm.
        n_views: number of views T.
        patch_px: patch side P in pixels.
        out: int16 ``(>= n_views, C, P, P)`` to fill (its first ``n_views``); a new array if None.

    Returns:
        ``out[:n_views]`` (or the new array), reflectance x 10000 in 0..10000.
    """
    c = wavelengths.size
    spacing = np.abs(np.diff(wavelengths, prepend=wavelengths[0]))  # nm; VNIR/SWIR overlap
    steps = rng.normal(0.0, 1.0, c) * np.sqrt(spacing + 1.0)
    base = 1500.0 + 900.0 * rng.random() + 60.0 * np.cumsum(steps)
    base = np.clip(base, 100.0, 8000.0).astype(np.float32)
    # a smooth spatial pattern: a coarse random field upsampled to the patch
    coarse = rng.normal(0.0, 1.0, (8, 8)).astype(np.float32)
    rep = -(-patch_px // 8)
    field = np.kron(coarse, np.ones((rep, rep), np.float32))[:patch_px, :patch_px]
    pattern = 1.0 + 0.15 * field  # float32 (P, P)
    if out is None:
        out = np.empty((n_views, c, patch_px, patch_px), np.int16)
    # one float32 (C, P, P) buffer for every view: noise drawn into it, the signal added in place
    # (the same float32 operations, so the same values, as base * gain * pattern + 25 * noise)
    image = np.empty((c, patch_px, patch_px), np.float32)
    for t in range(n_views):
        gain = np.float32(0.8 + 0.4 * rng.random())
        rng.standard_normal(dtype=np.float32, out=image)
        image *= np.float32(25.0)
        image += (base * gain)[:, None, None] * pattern
        np.clip(image, 0.0, 10_000.0, out=image)
        out[t] = image  # truncating cast to int16, as astype
    return out[:n_views]


def write_synthetic_store(
    out: str | Path,
    n_locations: int,
    max_views: int = 4,
    patch_px: int = 128,
    seed: int = 0,
    config: BuildConfig | None = None,
    progress: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Write a synthetic dataset of ``n_locations`` locations into ``out`` (see module doc).

    Args:
        out: dataset folder; must not exist or be empty.
        n_locations: number of locations (>= 1).
        max_views: each location gets 1..``max_views`` views (uniformly); ``T_max``.
        patch_px: patch side P in pixels.
        seed: random seed; the same arguments give the same store.
        config: band selection and ``extract`` settings (codec, shard size); defaults if None.
        progress: show a progress bar.
        workers: processes writing shard blocks (1: in this process); the store is the same
            bytes for any number.  Each holds one uncompressed shard block (up to
            ``extract.shard_max_mib``) at a time.

    Returns:
        A summary: ``locations``, ``views``, ``t_max``, ``bands``, ``bytes`` (on disk), ``out``.
    """
    import pandas as pd

    from .extract import store as st
    from .extract.results import BandSums
    from .extract.tables import store_attributes, write_attributes

    config = config or BuildConfig()
    out = Path(out)
    if n_locations < 1 or max_views < 1 or patch_px < 1:
        raise InputError("synth-store: --locations, --max-views and --patch-px must be >= 1")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"synth-store: --workers must be a whole number >= 1, got {workers!r}")
    if config.extract.compressor not in fmt.COMPRESSORS and config.extract.compressor != "deflate":
        raise InputError(f"extract.compressor {config.extract.compressor!r} is not known")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: folder exists and is not empty; choose a new one")
    out.mkdir(parents=True, exist_ok=True)
    kept = config.bands.kept_indices
    wl_all, fwhm_all = reference_bands()
    wavelengths, fwhm = wl_all[kept], fwhm_all[kept]
    n_bands = int(kept.size)
    ex = config.extract
    k = st.locations_per_shard(ex, max_views, n_bands, patch_px)
    if ex.locations_per_shard == 0:  # no shard larger than the store needs
        k = min(k, 1 << (n_locations - 1).bit_length())
    n_slots = -(-n_locations // k) * k
    layout = fmt.StoreLayout.for_store(
        n_slots, max_views, n_bands, patch_px, k, ex.compressor, ex.compression_level
    )
    st.create_images(out, layout)

    counts = np.random.default_rng([seed, 0]).integers(1, max_views + 1, n_locations)
    cols = math.ceil(math.sqrt(n_locations))
    side = patch_px * PIXEL_M
    task = _ShardWriter(
        str(out),
        seed,
        tuple(int(n) for n in counts),
        tuple(float(w) for w in wavelengths),
        max_views,
        patch_px,
        k,
        cols,
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_locations, desc="writing", unit="location")
    try:
        blocks = _write_blocks(task, range(0, n_slots, k), workers, bar)
    finally:
        if bar is not None:
            bar.close()
    stats = BandSums.zeros(n_bands)
    view_rows: list[dict[str, Any]] = []
    for block in blocks:  # slot order, whoever wrote them
        stats = stats + block.sums
        view_rows.extend(block.views)

    _write_index(out, counts, cols, side, patch_px, k)
    views = pd.DataFrame(view_rows, columns=fmt.VIEW_COLUMNS)
    views["time"] = pd.to_datetime(views["time"], utc=True)
    views.to_parquet(out / fmt.VIEWS, index=False)
    pd.DataFrame(columns=fmt.DROPPED_COLUMNS).to_parquet(out / fmt.DROPPED, index=False)
    attrs = store_attributes(config, layout, n_locations, len(views), stats, wavelengths, fwhm)
    attrs["synthetic"] = {"seed": seed, "max_views": max_views}
    write_attributes(out, attrs)
    manifest = {
        "kind": "synthetic-store",
        "format_version": fmt.FORMAT_VERSION,
        "package_version": __version__,
        "config": config.to_dict(),
        "synthetic": {"n_locations": n_locations, "max_views": max_views, "seed": seed},
    }
    st.atomic_write_text(out / fmt.MANIFEST, json.dumps(manifest, sort_keys=True, indent=1))
    st.atomic_write_text(out / fmt.COMPLETE, f"spectralearth-build {__version__} synth-store\n")
    return {
        "out": str(out),
        "locations": n_locations,
        "views": int(len(views)),
        "t_max": max_views,
        "bands": n_bands,
        "bytes": st.store_bytes(out),
    }


@dataclass(frozen=True)
class _ShardBlock:
    """What writing one shard block produced: its view rows (slot order) and band sums."""

    first: int
    """First slot of the block."""
    locations: int
    """Locations generated (the block's slots past ``n_locations`` stay empty)."""
    views: tuple[dict[str, Any], ...]
    """Rows of ``views.parquet`` (``time`` an ISO string), by slot and timestamp."""
    sums: BandSums


@dataclass(frozen=True)
class _ShardWriter:
    """Picklable task: generate the locations of the shard block at ``first`` and write it.

    Plain values only, so it pickles to a worker process; each call opens the images array
    itself.
    """

    out: str
    seed: int
    counts: tuple[int, ...]
    """Views per location, by location id (``n_locations`` entries)."""
    wavelengths: tuple[float, ...]
    """Band centres in nm (C entries)."""
    max_views: int
    patch_px: int
    k: int
    """Locations per shard."""
    cols: int
    """Columns of the location grid."""

    def __call__(self, first: int, tick: Callable[[], object] | None = None) -> _ShardBlock:
        """Write slots ``first .. first + k``; ``tick()`` after each location (in-process runs)."""
        from .extract import store as st
        from .extract.results import BandSums

        wavelengths = np.asarray(self.wavelengths, np.float64)
        n_bands, p = wavelengths.size, self.patch_px
        block = np.full((self.k, self.max_views, n_bands, p, p), fmt.NODATA, np.int16)
        stats = BandSums.zeros(n_bands)
        rows: list[dict[str, Any]] = []
        last = min(first + self.k, len(self.counts))
        for pid in range(first, last):
            rng = np.random.default_rng([self.seed, 1, pid])
            n = self.counts[pid]
            views = synthetic_views(rng, wavelengths, n, p, out=block[pid - first])
            stats = stats + BandSums.of(list(views), n_bands)
            days = np.sort(rng.choice(DAYS, size=n, replace=False))
            row, col = divmod(pid, self.cols)
            for t, day in enumerate(days):
                start = START + timedelta(days=int(day), seconds=int(rng.integers(0, 600)))
                rows.append(_view_row(pid, t, start, row, col, p))
            if tick is not None:
                tick()
        st.write_block(st.open_images(self.out, mode="r+"), first, block)
        return _ShardBlock(first, max(last - first, 0), tuple(rows), stats)


def _write_blocks(
    task: _ShardWriter, firsts: Sequence[int], workers: int, bar: Any = None
) -> list[_ShardBlock]:
    """Run ``task`` for every block start in ``firsts``; results in the order of ``firsts``.

    One worker: in this process, ``bar`` advancing per location.  More: a pool of
    ``min(workers, blocks)`` processes of the platform's start method (fork on Linux: no
    re-import of the caller's script; Zarr resets its I/O thread in a forked child), ``bar``
    advancing per finished block.  The first failure cancels the blocks not
    started and is raised; a worker that dies (killed, out of memory) is an
    :class:`~spectralearth_build.errors.OutputWriteError`.
    """
    if workers <= 1 or len(firsts) <= 1:
        tick = None if bar is None else (lambda: bar.update(1))
        return [task(first, tick) for first in firsts]
    done: dict[int, _ShardBlock] = {}
    with ProcessPoolExecutor(min(workers, len(firsts))) as pool:
        futures: dict[Future[_ShardBlock], int] = {pool.submit(task, f): f for f in firsts}
        try:
            for future in as_completed(futures):
                block = future.result()
                done[block.first] = block
                if bar is not None:
                    bar.update(block.locations)
        except BrokenProcessPool as exc:
            pool.shutdown(cancel_futures=True)
            mib = task.k * task.max_views * len(task.wavelengths) * task.patch_px**2 * 2 / 2**20
            raise OutputWriteError(
                f"synth-store: a worker process ended abruptly while writing {task.out} "
                f"(killed or out of memory? each worker holds a {mib:.0f} MiB shard block); "
                "rerun into an empty folder with fewer --workers"
            ) from exc
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return [done[f] for f in firsts]


def _view_row(pid: int, t: int, start: datetime, row: int, col: int, patch_px: int) -> dict:
    datatake = 10_000 + (start - START).days
    tile = 1 + row // 8
    stamp = start.strftime("%Y%m%dT%H%M%S")
    product = f"ENMAP01-____L2A-DT{datatake:010d}_{stamp}Z_{tile:03d}_V010111_{stamp}Z"
    return {
        "patch_id": pid,
        "slot": pid,
        "t": t,
        "time": start.isoformat(),
        "product": product,
        "datatake": datatake,
        "tile": tile,
        "processor_version": "010111",
        "row_off": (row % 8) * patch_px,
        "col_off": col * patch_px,
        "height": patch_px,
        "width": patch_px,
        "resampled": False,
        "cloud_fraction": 0.0,
        "snow_fraction": 0.0,
    }


def _write_index(
    out: Path, counts: np.ndarray, cols: int, side: float, patch_px: int, k: int
) -> None:
    """``index.parquet`` as GeoParquet 1.0.0 (WKB footprints, EPSG:4326 geometry)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = counts.size
    pid = np.arange(n, dtype=np.int64)
    row, col = np.divmod(pid, cols)
    x0 = ORIGIN_XY[0] + col * side
    y0 = ORIGIN_XY[1] - row * side
    corners = np.array([[0, 0], [1, 0], [1, -1], [0, -1], [0, 0]], np.float64) * side
    native, lonlat, boxes = [], [], []
    for x, y in zip(x0, y0):
        ring = corners + [x, y]
        native.append(_polygon_wkb(ring))
        lon, lat = _utm32_to_lonlat(ring[:, 0], ring[:, 1])
        lonlat.append(_polygon_wkb(np.column_stack([lon, lat])))
        boxes.append((lon.min(), lat.min(), lon.max(), lat.max()))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    frame = pd.DataFrame(
        {
            "patch_id": pid,
            "slot": pid,
            "n_views": counts.astype(np.int64),
            "view_start": starts,
            "crs": CRS,
            "transform": [
                [PIXEL_M, 0.0, float(x), 0.0, -PIXEL_M, float(y)] for x, y in zip(x0, y0)
            ],
            "height": np.int64(patch_px),
            "width": np.int64(patch_px),
            "component": np.zeros(n, np.int64),
            "unit": (pid // k).astype(np.int64),
            "footprint_native": native,
            "geometry": lonlat,
        },
        columns=list(fmt.INDEX_COLUMNS),
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    b = np.array(boxes)
    geo = {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Polygon"],
                "crs": LONLAT_PROJJSON,
                "bbox": [b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()],
            }
        },
    }
    meta = dict(table.schema.metadata or {})
    meta[b"geo"] = json.dumps(geo).encode()
    pq.write_table(table.replace_schema_metadata(meta), out / fmt.INDEX)
