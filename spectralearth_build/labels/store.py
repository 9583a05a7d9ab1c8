"""Pairing a dataset with label products: work units, masks in the store, tables, attributes.

:func:`pair_labels` is what ``spectralearth-build labels`` (and ``build-dataset --labels``)
runs.  Per label it resolves the source (metadata only), creates ``data.zarr/labels/<NAME>``
(``(N, P, P)``, raw codes, one chunk per location, shards of ``shard_locations`` locations)
and cuts the dataset positions into units of one shard each.  A unit
(:func:`run_label_unit`, a plain function that Dask runs on a worker or ``map`` in this
process) opens the label files once, pairs its locations in position order (locations of one
component are neighbours, so windows share GDAL's block cache), writes its shard with one
assignment and then a JSON marker holding each location's status and code counts.  The driver
then writes ``OUT/labels/<NAME>.parquet`` from the markers in unit order, the ``labels``
attribute, and finally the splits and ``tasks`` attribute of every paired label
(:mod:`.tasks`).  A rerun skips units that have a marker, so a killed pairing continues where
it stopped; the same inputs give the same store for any number of workers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import formats as fmt
from ..errors import IncompleteDatasetError, InputError, naming
from ..extract.store import atomic_write_text
from ..grid import PixelGrid
from .loader import mask_array_path, table_path
from .pairing import locations_touching
from .source import LabelSource, resolve_source
from .spec import LabelSpec

UNITS_DIR = "units"
DEFAULT_SHARD_LOCATIONS = 256


@dataclass(frozen=True)
class LabelUnit:
    """One shard of one label: positions ``[start, start + len(grids))`` and their grids."""

    out: str
    name: str
    index: int
    start: int
    grids: tuple[PixelGrid, ...]
    source: LabelSource
    kind: str
    resampling: str

    @property
    def key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(self.source.to_dict(), sort_keys=True).encode())
        h.update(f"{self.name}|{self.kind}|{self.resampling}|{self.start}".encode())
        for g in self.grids:
            h.update(json.dumps(g.to_dict()).encode())
        return h.hexdigest()[:16]

    @property
    def marker(self) -> Path:
        return (
            Path(self.out)
            / fmt.LABELS_DIR
            / UNITS_DIR
            / self.name
            / f"unit-{self.index:06d}-{self.key}.json"
        )


@dataclass
class LabelReport:
    """What a pairing did, per label: coverage counts, resampling, bytes read, seconds."""

    out: str
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "labels": self.labels,
            "tasks": self.tasks,
            "seconds": self.seconds,
        }


def _code_counts(mask: np.ndarray) -> tuple[list[int], list[int]]:
    codes, counts = np.unique(mask, return_counts=True)
    return [int(c) for c in codes], [int(n) for n in counts]


def run_label_unit(unit: LabelUnit) -> dict[str, Any]:
    """Pair the unit's locations, write its shard and marker; return the marker content.

    A unit whose marker exists is not redone (its marker is returned).
    """
    import rasterio
    import zarr

    from .pairing import WindowReader, pair_location

    if unit.marker.exists():
        return json.loads(unit.marker.read_text())  # type: ignore[no-any-return]
    arr = zarr.open_array(store=str(mask_array_path(unit.out, unit.name)), mode="r+")
    n = len(unit.grids)
    p = arr.shape[1]
    block = np.full((n, p, p), unit.source.fill_value, dtype=arr.dtype)
    statuses: list[str] = []
    resamplings: list[str] = []
    codes: list[list[int]] = []
    counts: list[list[int]] = []
    t0 = time.perf_counter()
    # one GDAL environment for the unit, so tiles stay in GDAL's block cache between locations
    with rasterio.Env(), WindowReader(unit.source) as reader:
        for k, grid in enumerate(unit.grids):
            res = pair_location(grid, reader, unit.kind, unit.resampling)
            statuses.append(res.status)
            resamplings.append(res.resampling)
            if res.mask is not None:
                block[k] = res.mask
                if unit.kind == "categorical":
                    c, m = _code_counts(res.mask)
                    codes.append(c)
                    counts.append(m)
                    continue
            codes.append([])
            counts.append([])
        bytes_read = reader.bytes_requested
    with naming(mask_array_path(Path(unit.out), unit.name)):  # zarr's write errors lose it
        arr[unit.start : unit.start + n] = block
    result = {
        "index": unit.index,
        "start": unit.start,
        "status": statuses,
        "resampling": resamplings,
        "codes": codes,
        "counts": counts,
        "bytes_requested": bytes_read,
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_text(unit.marker, json.dumps(result))
    return result


def read_locations(out: Path) -> Any:
    """``patch_id``, ``crs``, ``transform``, ``height``, ``width`` of every location (pandas)."""
    import pandas as pd

    return pd.read_parquet(
        out / fmt.INDEX, columns=["patch_id", "crs", "transform", "height", "width"]
    )


def _check_dataset(out: Path) -> None:
    if not out.is_dir():
        raise InputError(f"--dataset {out}: no such dataset folder")
    if not (out / fmt.COMPLETE).exists():
        raise IncompleteDatasetError(
            f"{out}: the dataset build has not finished (no _COMPLETE marker); finish it first"
        )


def _create_mask_array(out: Path, name: str, n: int, p: int, source: LabelSource, k: int) -> Any:
    import zarr
    from zarr.codecs import BloscCodec

    group = zarr.open_group(store=str(out / fmt.STORE_NAME), mode="r+")
    labels = group.require_group(fmt.LABELS_DIR)
    fill = source.fill_value
    return labels.create_array(
        name,
        shape=(n, p, p),
        chunks=(1, p, p),
        shards=(k, p, p),
        dtype=source.dtype,
        fill_value=fill,
        compressors=[BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")],
        dimension_names=("location", "y", "x"),
        attributes={"label": name},
        config={"write_empty_chunks": False},
        overwrite=True,
    )


def _label_meta(spec: LabelSpec, source: LabelSource, k: int) -> dict[str, Any]:
    return {
        "kind": spec.kind,
        "preset": spec.preset,
        "product": spec.product,
        "year": spec.year,
        "source": spec.path,
        "files": len(source.files),
        "fingerprint": source.fingerprint(),
        "crs": source.crs,
        "res": source.res,
        "dtype": source.dtype,
        "nodata": list(source.nodata_values),
        "fill_value": None if np.isnan(source.fill_value) else source.fill_value,
        "resampling_option": spec.resampling,
        "shard_locations": k,
    }


def _extent(source: LabelSource) -> str:
    """``x0, y0, x1, y1`` of the label's files in its CRS units (rounded)."""
    x0, y0 = source.origin_xy
    rows = max(r + f.shape_yx[0] for f, (r, _) in zip(source.files, source.offsets))
    cols = max(c + f.shape_yx[1] for f, (_, c) in zip(source.files, source.offsets))
    x1, y1 = x0 + cols * source.res, y0 - rows * source.res
    return f"{x0:.6g}, {y1:.6g}, {x1:.6g}, {y0:.6g}"


def _encoding(spec: LabelSpec, codes: set[int]) -> str | None:
    """CORINE: ``grid`` (codes 1..50), ``clc`` (111..523) or ``mixed``, from the codes seen."""
    if spec.preset != "corine" or not codes:
        return None
    low = any(c <= 50 for c in codes)
    high = any(c >= 100 for c in codes if c != 255)
    return "mixed" if low and high else ("clc" if high else "grid")


def pair_labels(
    out: str | Path,
    specs: list[LabelSpec],
    client: Any = None,
    progress: bool = False,
    shard_locations: int | None = None,
    replace: bool = False,
    split_config: Any = None,
    log: Callable[[str], None] | None = None,
) -> LabelReport:
    """Pair every location of dataset ``out`` with each label of ``specs``; resumable.

    Args:
        out: a complete dataset folder.
        specs: the labels (see :func:`~.spec.parse_label_option`); names must be distinct.
        client: a ``distributed.Client`` (see :mod:`spectralearth_build.cluster`) or None to
            run in this process.
        progress: show a tqdm bar per label.
        shard_locations: locations per shard of the mask arrays, one work unit each (default:
            that of an earlier pairing of the label, else :data:`DEFAULT_SHARD_LOCATIONS`).
        replace: pair a label again when NAME exists from another source or options.
        split_config: :class:`~.splits.SplitConfig` for the task splits (default settings).
        log: where to say what is skipped or resumed.

    Returns:
        a :class:`LabelReport`: per label ``coverage`` (locations by status), resampling
        counts, bytes requested from the label files; per task split sizes and balance.
    """
    import zarr

    from ..cluster import client_map
    from .tasks import update_tasks

    out = Path(out)
    say = log or (lambda _m: None)
    _check_dataset(out)
    names = [s.name for s in specs]
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise InputError(f"--labels: name {dup[0]!r} given twice")
    if shard_locations is not None and shard_locations < 1:
        raise InputError("shard_locations must be >= 1")
    report = LabelReport(str(out))
    locs = read_locations(out)
    grids = tuple(
        PixelGrid(str(r.crs), tuple(r.transform), (int(r.height), int(r.width)))
        for r in locs.itertuples(index=False)
    )
    if specs and not len(locs):
        raise InputError(f"{out}: the dataset has no locations to label")
    p = int(locs["height"].max()) if len(locs) else 0
    group = zarr.open_group(store=str(out / fmt.STORE_NAME), mode="r+")
    attrs_file = out / fmt.STORE_NAME / "zarr.json"
    all_meta: dict[str, Any] = dict(group.attrs.get("labels") or {})  # type: ignore[arg-type]
    mapper = client_map(client) or map
    # every label's files and coverage checked before any is paired (nothing half done)
    sources = {}
    for spec in specs:
        sources[spec.name] = source = resolve_source(spec)
        if not locations_touching(grids, source):
            raise InputError(
                f"--labels {spec.name}: {spec.path} covers none of the {len(grids)} locations "
                f"of {out} (label extent {_extent(source)} in {source.crs}; another region, or "
                "a wrong CRS?)"
            )
    for spec in specs:
        t0 = time.perf_counter()
        source = sources[spec.name]
        old = all_meta.get(spec.name)
        k = shard_locations or (old or {}).get("shard_locations") or DEFAULT_SHARD_LOCATIONS
        meta = _label_meta(spec, source, int(k))
        same = old is not None and {k: old.get(k) for k in meta} == meta
        units_dir = out / fmt.LABELS_DIR / UNITS_DIR / spec.name
        if old is not None and not same:
            if not replace:
                raise InputError(
                    f"{out}: label {spec.name!r} was paired from {old.get('source')} with other "
                    "options; use --replace to pair it again, or another NAME"
                )
            shutil.rmtree(units_dir, ignore_errors=True)
        done_marker = units_dir / fmt.COMPLETE
        if same and done_marker.exists() and table_path(out, spec.name).exists():
            say(f"label {spec.name}: already paired")
            report.labels[spec.name] = old  # type: ignore[assignment]
            continue
        array_file = mask_array_path(out, spec.name) / "zarr.json"
        if not (same and array_file.exists()) or not units_dir.exists():
            _create_mask_array(out, spec.name, len(grids), p, source, int(k))
            with naming(attrs_file):
                group.attrs["labels"] = all_meta | {spec.name: meta | {"complete": False}}
            all_meta = dict(group.attrs["labels"])  # type: ignore[arg-type]
        units = [
            LabelUnit(
                str(out),
                spec.name,
                u,
                s,
                grids[s : s + int(k)],
                source,
                spec.kind,
                spec.resampling,
            )
            for u, s in enumerate(range(0, len(grids), int(k)))
        ]
        resumed = sum(u.marker.exists() for u in units)
        if resumed:
            say(f"label {spec.name}: {resumed} of {len(units)} units done earlier")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(units), desc=f"labels {spec.name}", unit="unit")
        results = []
        try:
            for res in mapper(run_label_unit, units):
                results.append(res)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        meta = meta | _write_table(out, spec, locs, results)
        meta["encoding"] = _encoding(spec, set(meta.pop("_codes")))
        meta["complete"] = True
        all_meta = dict(group.attrs.get("labels") or {})  # type: ignore[arg-type]
        all_meta[spec.name] = meta
        with naming(attrs_file):
            group.attrs["labels"] = all_meta
        done_marker.write_text("")
        report.labels[spec.name] = meta | {"units": len(units), "units_resumed": resumed}
        report.seconds[f"labels {spec.name}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report.tasks = update_tasks(out, split_config)
    report.seconds["splits"] = time.perf_counter() - t0
    return report


def _write_table(
    out: Path, spec: LabelSpec, locs: Any, results: list[dict[str, Any]]
) -> dict[str, Any]:
    """``OUT/labels/<NAME>.parquet`` from the unit markers; returns coverage statistics."""
    import pandas as pd

    from .pairing import STATUSES

    results = sorted(results, key=lambda r: r["index"])
    status = [s for r in results for s in r["status"]]
    table = pd.DataFrame(
        {
            "position": np.arange(len(locs), dtype=np.int64),
            "patch_id": locs["patch_id"].to_numpy(np.int64),
            "status": pd.Categorical(status, categories=list(STATUSES)),
            "resampling": [s for r in results for s in r["resampling"]],
            "codes": [c for r in results for c in r["codes"]],
            "counts": [c for r in results for c in r["counts"]],
        }
    )
    path = table_path(out, spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        table.to_parquet(tmp, index=False)
    except OSError as exc:  # a full disk: no half-written table; the error names it
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    tmp.replace(path)
    counts = Counter(status)
    ok = table["status"] == "ok"
    return {
        "coverage": {s: int(counts.get(s, 0)) for s in STATUSES} | {"locations": len(status)},
        "resampling": dict(sorted(Counter(table.loc[ok, "resampling"]).items())),
        "bytes_requested": int(sum(r["bytes_requested"] for r in results)),
        "_codes": sorted({c for cs in table.loc[ok, "codes"] for c in cs}),
    }
