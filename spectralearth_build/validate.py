"""Checking a finished dataset against itself and, optionally, against its source products.

:func:`validate_dataset` is what ``spectralearth-build validate OUT`` runs.  It opens ``OUT``
with :func:`~spectralearth_build.dataset.open_dataset` and checks, in order:

1. **layout**: the ``images`` array (shape, dtype, chunking, fill value) agrees with the group
   attributes and the tables (``n_locations``, ``n_views``, ``t_max``, ``patch_px``, bands);
2. **tables**: ``index.parquet`` (unique sorted patch ids, unique slots inside the array,
   ``view_start`` the running sum of ``n_views``), ``views.parquet`` (one run of rows per
   location, ``t`` = 0..n-1, times ascending), the plan (every stored location and view is a
   planned one, on the planned grid; every planned view is either stored or in
   ``dropped_views.parquet``), the catalog (every view's product is a usable product with the
   same datatake, tile, processor version and start time) and ``report.json``;
3. **chunks**: every shard is read once (shards are spread over the Dask workers): every indexed
   location has its chunk (its views hold no nodata pixel, its unused timestamps are nodata), no
   unindexed slot holds data, and the per-band statistics recomputed exactly (int64 sums) from
   the stored views equal the ``band_mean`` / ``band_std`` attributes;
4. **sources** (with ``tiles``): a seeded sample of views is re-read from the source products
   found under ``tiles`` (discovered afresh, so a moved archive works) and compared pixel by
   pixel; views from another grid (another UTM zone) are resampled onto the patch grid the way
   the build does (:func:`rasterio.warp.reproject`, the configured method, one thread); the
   patch CRS and transform must be the source's shifted by the window.

Every failed check is a :class:`Mismatch`; the verdict is valid only if there is none.  The
checks in step 3 and 4 are plain functions mapped over a ``map_fn`` (a Dask client's, see
:mod:`spectralearth_build.cluster`), so validation runs where the build ran.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import formats as fmt
from .errors import InputError
from .formats import NODATA

EXIT_VALID = 0
EXIT_MISMATCH = 4
"""Exit status of ``validate`` when the dataset fails a check."""
STATS_RTOL = 1e-9
MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


@dataclass(frozen=True)
class Mismatch:
    """One failed check: ``check`` (layout, tables, chunks, statistics, sources), where, what."""

    check: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.where}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "where": self.where, "message": self.message}


@dataclass
class ValidationReport:
    """The verdict on a dataset: counts of what was checked and the mismatches found."""

    out: str
    locations: int = 0
    views: int = 0
    shards_read: int = 0
    views_compared: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def exit_status(self) -> int:
        return EXIT_VALID if self.ok else EXIT_MISMATCH

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "ok": self.ok,
            "locations": self.locations,
            "views": self.views,
            "shards_read": self.shards_read,
            "views_compared": self.views_compared,
            "mismatches": [m.to_dict() for m in self.mismatches],
        }


# -- 1. layout --------------------------------------------------------------------------------
def check_layout(ds: Any) -> list[Mismatch]:
    """The array against the attributes and the tables."""
    bad: list[Mismatch] = []
    arr, a = ds.images, ds.attrs

    def expect(what: str, got: Any, want: Any) -> None:
        if got != want:
            bad.append(Mismatch("layout", what, f"{got!r}, expected {want!r}"))

    if arr.ndim != 5:
        return [Mismatch("layout", "images", f"{arr.ndim} dimensions, expected 5")]
    _, t_max, n_bands, py, px = arr.shape
    expect("images dtype", str(arr.dtype), "int16")
    expect("images fill value", int(arr.fill_value), NODATA)
    t_chunk = 1 if ds.format_version >= 2 else t_max  # format 2: one inner chunk per view
    expect("images chunks", tuple(arr.chunks), (1, t_chunk, n_bands, py, px))
    expect("images patch shape", py, px)
    expect("attribute n_locations", a.get("n_locations"), len(ds.index))
    expect("attribute n_views", a.get("n_views"), len(ds.views))
    expect("attribute t_max", a.get("t_max"), t_max)
    expect("attribute patch_px", a.get("patch_px"), px)
    expect("attribute band_indices (count)", len(a.get("band_indices") or []), n_bands)
    for key in ("wavelengths", "fwhm", "band_mean", "band_std"):
        if a.get(key) is not None:
            expect(f"attribute {key} (count)", len(a[key]), n_bands)
    expect("attribute locations_per_shard", a.get("locations_per_shard"), arr.shards[0])
    if a.get("nodata") != NODATA:
        bad.append(Mismatch("layout", "attribute nodata", f"{a.get('nodata')!r}"))
    return bad


# -- 2. tables --------------------------------------------------------------------------------
def check_tables(ds: Any) -> list[Mismatch]:
    """Index, views, plan, dropped views, catalog and report agree with each other."""
    import pandas as pd

    from .catalog import read_catalog
    from .plan import read_plan

    bad: list[Mismatch] = []
    idx, views = ds.index, ds.views
    n_slots, t_max = ds.images.shape[0], ds.images.shape[1]
    pid = idx["patch_id"].to_numpy()
    if len(np.unique(pid)) != len(pid) or (np.diff(pid) <= 0).any():
        bad.append(Mismatch("tables", "index.parquet", "patch ids not unique and ascending"))
    slots = idx["slot"].to_numpy()
    if len(np.unique(slots)) != len(slots):
        bad.append(Mismatch("tables", "index.parquet", "two locations share a slot"))
    if len(slots) and (slots.min() < 0 or slots.max() >= n_slots):
        bad.append(Mismatch("tables", "index.parquet", f"slot outside 0..{n_slots - 1}"))
    n = idx["n_views"].to_numpy()
    if len(n) and (n.min() < 1 or n.max() > t_max):
        bad.append(Mismatch("tables", "index.parquet", f"n_views outside 1..{t_max}"))
    starts = np.concatenate([[0], np.cumsum(n)[:-1]]) if len(n) else n
    if not np.array_equal(idx["view_start"].to_numpy(), starts):
        bad.append(Mismatch("tables", "index.parquet", "view_start is not the sum of n_views"))
    if int(n.sum()) != len(views):
        bad.append(
            Mismatch("tables", "views.parquet", f"{len(views)} rows, index counts {n.sum()}")
        )
        return bad  # row runs cannot be matched up
    exp_pid = np.repeat(pid, n)
    exp_slot = np.repeat(slots, n)
    exp_t = np.arange(len(views)) - np.repeat(starts, n)
    for col, want in (("patch_id", exp_pid), ("slot", exp_slot), ("t", exp_t)):
        rows = np.flatnonzero(views[col].to_numpy() != want)
        if rows.size:
            r = int(rows[0])
            bad.append(
                Mismatch(
                    "tables",
                    f"views.parquet row {r}",
                    f"{col} {views[col].iloc[r]}, index gives {want[r]} ({rows.size} rows differ)",
                )
            )
    t = views["time"].dt.tz_localize(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
    same_loc = exp_pid[1:] == exp_pid[:-1]
    if (np.diff(t)[same_loc] <= 0).any():
        bad.append(Mismatch("tables", "views.parquet", "times not ascending within a location"))

    # the plan: every stored location and view was planned, on the planned grid
    out = ds.path
    plan, _ = read_plan(out / fmt.PLAN)
    planned = {p.patch_id: p for p in plan}
    stored_views: set[tuple[int, str]] = set()
    for r in views.itertuples(index=False):
        stored_views.add((int(r.patch_id), str(r.product)))
    for row in idx.itertuples(index=False):
        p = planned.get(int(row.patch_id))
        where = f"location {int(row.patch_id)}"
        if p is None:
            bad.append(Mismatch("tables", where, "not in the plan"))
            continue
        if str(row.crs) != p.grid.crs or tuple(float(v) for v in row.transform) != tuple(
            p.grid.transform
        ):
            bad.append(Mismatch("tables", where, "grid differs from the plan"))
        if (int(row.height), int(row.width)) != p.grid.shape_yx:
            bad.append(Mismatch("tables", where, "size differs from the plan"))
    plan_views = {(p.patch_id, v.tile_id): v for p in plan for v in p.views}
    for r in views.itertuples(index=False):
        key = (int(r.patch_id), str(r.product))
        where = f"view {key[0]}/{key[1]}"
        if key not in plan_views:
            bad.append(Mismatch("tables", where, "not a planned view"))
            continue
        v = plan_views[key]
        win = [int(r.row_off), int(r.col_off), int(r.height), int(r.width)]
        if win != v.window.to_list() or bool(r.resampled) != v.resampled:
            bad.append(Mismatch("tables", where, "window differs from the plan"))
        if abs(pd.Timestamp(r.time).timestamp() - v.start_time.timestamp()) > 1e-3:
            bad.append(Mismatch("tables", where, "time differs from the plan"))
    dropped_path = out / fmt.DROPPED
    dropped = pd.read_parquet(dropped_path) if dropped_path.exists() else pd.DataFrame()
    dropped_keys = {
        (int(a), str(b)) for a, b in zip(dropped.get("patch_id", []), dropped.get("product", []))
    }
    missing = [k for k in plan_views if k not in stored_views and k not in dropped_keys]
    if missing:
        bad.append(
            Mismatch(
                "tables",
                f"view {missing[0][0]}/{missing[0][1]}",
                f"planned view neither stored nor dropped ({len(missing)} such views)",
            )
        )
    both = stored_views & dropped_keys
    if both:
        k = sorted(both)[0]
        bad.append(Mismatch("tables", f"view {k[0]}/{k[1]}", "both stored and dropped"))

    # the catalog: every view's product is a usable product with the same identity
    catalog = read_catalog(out / fmt.CATALOG)
    ok = catalog[catalog["status"] == "ok"].drop_duplicates("product_id").set_index("product_id")
    for r in views.drop_duplicates("product").itertuples(index=False):
        prod = str(r.product)
        if prod not in ok.index:
            bad.append(Mismatch("tables", f"product {prod}", "not a usable product in the catalog"))
            continue
        c = ok.loc[prod]
        vals = views.loc[views["product"] == r.product]
        for col in ("datatake", "tile", "processor_version"):
            if (vals[col].astype(str) != str(c[col])).any():
                bad.append(Mismatch("tables", f"product {prod}", f"{col} differs from the catalog"))
    report_path = out / fmt.REPORT
    if report_path.exists():
        rep = json.loads(report_path.read_text())
        if rep.get("patches") != len(idx) or rep.get("views") != len(views):
            bad.append(
                Mismatch(
                    "tables",
                    "report.json",
                    f"{rep.get('patches')} patches / {rep.get('views')} views, "
                    f"tables hold {len(idx)} / {len(views)}",
                )
            )
    else:
        bad.append(Mismatch("tables", "report.json", "missing"))
    return bad


# -- 3. chunks and statistics -----------------------------------------------------------------
@dataclass(frozen=True)
class ShardTask:
    """Shards to read: ``(shard, {slot: (patch_id, n_views)})`` for the indexed slots in each."""

    out: str
    shards: tuple[tuple[int, tuple[tuple[int, int, int], ...]], ...]


def check_shards(task: ShardTask) -> dict[str, Any]:
    """Read each shard once: chunk presence and exact per-band sums of the stored views."""
    arr = _open_images(task.out)
    k, n_bands = arr.shards[0], arr.shape[2]
    bad: list[Mismatch] = []
    count = 0
    s = np.zeros(n_bands, dtype=np.int64)
    ss = np.zeros(n_bands, dtype=np.int64)
    for shard, located in task.shards:
        lo = shard * k
        block = np.asarray(arr[lo : min(lo + k, arr.shape[0])])
        indexed = {slot: (p, n) for slot, p, n in located}
        for i in range(block.shape[0]):
            slot = lo + i
            loc = block[i]
            if slot not in indexed:
                if (loc != NODATA).any():
                    msg = "data stored without an index row"
                    bad.append(Mismatch("chunks", f"slot {slot}", msg))
                continue
            patch, n = indexed[slot]
            where = f"location {patch} (slot {slot})"
            used = loc[:n]
            if (used == NODATA).all():
                bad.append(Mismatch("chunks", where, "no data stored (chunk or shard missing)"))
                continue
            if (used == NODATA).any():
                bad.append(Mismatch("chunks", where, "nodata pixels inside its stored views"))
            if (loc[n:] != NODATA).any():
                bad.append(Mismatch("chunks", where, "data past its last timestamp"))
            flat = used.transpose(1, 0, 2, 3).reshape(n_bands, -1)
            wide = flat.astype(np.int64)
            s += wide.sum(axis=1)
            ss += np.einsum("ij,ij->i", wide, wide)
            count += flat.shape[1]
    return {
        "mismatches": bad,
        "count": count,
        "sum": [int(v) for v in s],
        "sumsq": [int(v) for v in ss],
        "shards": len(task.shards),
    }


def check_statistics(attrs: dict[str, Any], parts: list[dict[str, Any]]) -> list[Mismatch]:
    """Recombine the exact sums and compare mean, std and pixel count with the attributes."""
    n_bands = len(attrs.get("band_mean") or [])
    count = sum(p["count"] for p in parts)
    s = [sum(p["sum"][b] for p in parts) for b in range(n_bands)]
    ss = [sum(p["sumsq"][b] for p in parts) for b in range(n_bands)]
    bad = []
    if attrs.get("band_stats_pixels") != count:
        bad.append(
            Mismatch(
                "statistics",
                "band_stats_pixels",
                f"{attrs.get('band_stats_pixels')}, the data holds {count}",
            )
        )
    if count == 0:
        return bad
    for b in range(n_bands):
        mean = s[b] / count
        std = math.sqrt(max(ss[b] * count - s[b] * s[b], 0) / count**2)
        for name, want in (("band_mean", mean), ("band_std", std)):
            got = attrs[name][b]
            if got is None or not math.isclose(got, want, rel_tol=STATS_RTOL, abs_tol=1e-9):
                bad.append(Mismatch("statistics", f"{name}[{b}]", f"{got}, recomputed {want:.10g}"))
    return bad


# -- 4. sources -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewTask:
    """One stored view to compare with its source product."""

    out: str
    slot: int
    t: int
    where: str
    source: str | None
    """The product's ``ProductSource`` as JSON (None: not found under ``--tiles``)."""
    window: tuple[int, int, int, int]
    resampled: bool
    crs: str
    transform: tuple[float, ...]
    patch_px: int
    band_indices: tuple[int, ...]
    resampling: str


def compare_view(task: ViewTask) -> list[Mismatch]:
    """Re-read one view from its source product and compare pixels and georeferencing."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from rasterio.windows import Window as RioWindow

    from .catalog import source_from_json
    from .enmap.discovery import IMAGE

    if task.source is None:
        return [Mismatch("sources", task.where, "product not found under --tiles")]
    stored = np.asarray(_open_images(task.out)[task.slot, task.t])
    row, col, h, w = task.window
    bands = [i + 1 for i in task.band_indices]
    try:
        with rasterio.open(source_from_json(task.source).gdal_path(IMAGE)) as f:
            if not task.resampled:
                if f.crs is None or f.crs.to_string() != task.crs:
                    return [Mismatch("sources", task.where, f"CRS {f.crs}, dataset {task.crs}")]
                t = f.window_transform(RioWindow(col, row, w, h))
                if not np.allclose(tuple(t)[:6], task.transform, rtol=0, atol=1e-6):
                    return [Mismatch("sources", task.where, "transform differs from the source")]
                ref = f.read(bands, window=RioWindow(col, row, w, h))
            else:
                r0, c0 = max(row, 0), max(col, 0)
                r1, c1 = min(row + h, f.height), min(col + w, f.width)
                win = RioWindow(c0, r0, c1 - c0, r1 - r0)
                src = f.read(bands, window=win)
                ref = np.full((len(bands), task.patch_px, task.patch_px), NODATA, np.int16)
                reproject(
                    src,
                    ref,
                    src_transform=f.window_transform(win),
                    src_crs=f.crs,
                    src_nodata=NODATA,
                    dst_transform=Affine(*task.transform),
                    dst_crs=task.crs,
                    dst_nodata=NODATA,
                    resampling=Resampling[task.resampling],
                    num_threads=1,
                )
    except (OSError, rasterio.errors.RasterioError) as exc:
        return [Mismatch("sources", task.where, f"source unreadable: {str(exc).splitlines()[0]}")]
    if ref.shape != stored.shape:
        return [Mismatch("sources", task.where, f"shape {stored.shape}, source {ref.shape}")]
    diff = int(np.count_nonzero(ref != stored))
    if diff:
        return [Mismatch("sources", task.where, f"{diff} of {ref.size} values differ")]
    return []


def sample_views(n_views: int, sample: int, seed: int) -> np.ndarray:
    """Row numbers of ``sample`` views (all if ``sample`` >= ``n_views``), ascending."""
    if sample >= n_views:
        return np.arange(n_views)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_views, size=sample, replace=False))


def source_tasks(ds: Any, tiles: Path, sample: int, seed: int) -> list[ViewTask]:
    """The sampled views, each with its product as found under ``tiles``."""
    from .catalog import source_to_json
    from .enmap.discovery import discover_products

    sources, _ = discover_products(tiles)
    by_id: dict[str, str] = {}
    for src in sources:  # the same product twice holds the same pixels: any copy will do
        by_id.setdefault(src.product_id, source_to_json(src))
    config = ds.attrs.get("config", {})
    resampling = str(config.get("extract", {}).get("resampling", "nearest"))
    index = ds.index.set_index("patch_id")
    bands = tuple(int(i) for i in ds.attrs["band_indices"])
    tasks = []
    for r in sample_views(len(ds.views), sample, seed):
        v = ds.views.iloc[int(r)]
        loc = index.loc[int(v["patch_id"])]
        tasks.append(
            ViewTask(
                str(ds.path),
                int(v["slot"]),
                int(v["t"]),
                f"view {int(v['patch_id'])}/{v['product']} (t={int(v['t'])})",
                by_id.get(str(v["product"])),
                (int(v["row_off"]), int(v["col_off"]), int(v["height"]), int(v["width"])),
                bool(v["resampled"]),
                str(loc["crs"]),
                tuple(float(x) for x in loc["transform"]),
                int(loc["height"]),
                bands,
                resampling,
            )
        )
    return tasks


# -- the whole check --------------------------------------------------------------------------
def _open_images(out: str) -> Any:
    import zarr

    return zarr.open_array(store=str(Path(out) / fmt.STORE_NAME / fmt.ARRAY_NAME), mode="r")


def shard_tasks(ds: Any, shards_per_task: int = 4) -> list[ShardTask]:
    """Every shard of the array, in groups, with the indexed slots each holds."""
    k = ds.images.shards[0]
    n_shards = math.ceil(ds.images.shape[0] / k)
    located: dict[int, list[tuple[int, int, int]]] = {}
    for slot, pid, n in zip(ds.index["slot"], ds.index["patch_id"], ds.index["n_views"]):
        if 0 <= int(slot) < ds.images.shape[0]:
            located.setdefault(int(slot) // k, []).append((int(slot), int(pid), int(n)))
    items = [(s, tuple(located.get(s, ()))) for s in range(n_shards)]
    return [
        ShardTask(str(ds.path), tuple(items[i : i + shards_per_task]))
        for i in range(0, len(items), shards_per_task)
    ]


def validate_dataset(
    out: str | Path,
    tiles: str | Path | None = None,
    sample: int = 64,
    seed: int = 0,
    map_fn: MapFn | None = None,
    progress: bool = False,
) -> ValidationReport:
    """Check the dataset in ``out``; with ``tiles``, compare a seeded sample of views to sources.

    Args:
        out: dataset folder written by ``build-dataset`` (must be complete).
        tiles: folder of the source products (the build's ``--tiles``, possibly moved).
        sample: number of views re-read from the sources (all of them if larger).
        seed: seed of the view sample.
        map_fn: an order-preserving ``map`` (e.g. :func:`~spectralearth_build.cluster.
            client_map`); None runs in this process.
        progress: show progress bars.

    Returns:
        The report; ``report.ok`` is the verdict, ``report.mismatches`` says what failed.
    """
    from .dataset import open_dataset

    out = Path(out)
    if tiles is not None and not Path(tiles).exists():
        raise InputError(f"--tiles {tiles}: no such file or folder")
    if sample < 0:
        raise InputError(f"--sample {sample}: must be >= 0")
    ds = open_dataset(out)
    report = ValidationReport(str(out), len(ds.index), len(ds.views))
    mapper = map_fn or map
    report.mismatches += check_layout(ds)
    report.mismatches += check_tables(ds)

    tasks = shard_tasks(ds)
    parts = list(_bar(mapper(check_shards, tasks), len(tasks), "reading shards", progress))
    for p in parts:
        report.mismatches += p["mismatches"]
    report.shards_read = sum(p["shards"] for p in parts)
    report.mismatches += check_statistics(ds.attrs, parts)

    if tiles is not None and sample:
        vtasks = source_tasks(ds, Path(tiles), sample, seed)
        for res in _bar(mapper(compare_view, vtasks), len(vtasks), "comparing views", progress):
            report.mismatches += res
        report.views_compared = len(vtasks)
    return report


def _bar(items: Iterable[Any], total: int, desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="task", leave=False)
