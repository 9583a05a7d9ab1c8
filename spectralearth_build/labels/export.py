"""Export to SpectralEarth's folder layout, so its dataset code reads what we build.

::

    DIR/enmap/<location>/<tile>.tif        one GeoTIFF per timestamp: int16, C bands, CRS and
                                           transform of the patch, nodata -32768, tags
                                           PRODUCT, TIME, PATCH_ID, WAVELENGTHS
    DIR/<task>/<location>/<tile>.tif       the task's mask on the same grid (one per image):
                                           CORINE as CLC codes 111..523 (uint16), CDL, NLCD
                                           and generic labels as their raw codes
    DIR/splits/enmap_<task>/{train,val,test}.txt   one ``<location>/<tile>.tif`` per line
    DIR/ids.csv                            location, tile, patch_id, t, product, time

``<location>`` is our ``patch_id`` in 7 digits and ``<tile>`` the 5-digit number of the source
product (products numbered in name order), as in SpectralEarth's ``0287155/07676.tif``.  Every
timestamp of a labelled location is a sample of that location's split.  Locations are cut into
units written in parallel (Dask, or ``map`` in this process); files depend only on the store,
so the export is the same for any number of workers.

An export is resumable like a build: ``DIR/export.json`` (dataset, scheme, tasks, unit size)
is written first, each unit writes its files (each GeoTIFF encoded in memory, then written to
a temporary name and renamed, so a file is whole or absent) and then a marker
``DIR/export_units/unit-NNNNNN.json``; the tables and splits follow, and ``DIR/_COMPLETE``
last.  Rerunning the same export into ``DIR`` skips the units that have a marker; another
dataset or other options there are an error.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import formats as fmt
from ..errors import InputError
from ..formats import NODATA
from .loader import SPLIT_NAMES, table_path
from .presets import LUT_SIZE, corine_clc_of_grid

FORMATS = ("spectralearth",)
IMAGES_DIR = "enmap"
IDS_FILE = "ids.csv"
MANIFEST = "export.json"
UNITS_DIR = "export_units"
MAX_LOCATION = 10**7
MAX_TILE = 10**5


@dataclass(frozen=True)
class ExportUnit:
    """Dataset positions ``[start, stop)`` to write into ``dest``."""

    out: str
    dest: str
    start: int
    stop: int
    tile_ids: dict[str, int]
    tasks: dict[str, str]
    """Task -> label name whose masks are written."""


@dataclass
class ExportReport:
    """What an export wrote."""

    dest: str
    locations: int = 0
    images: int = 0
    masks: dict[str, int] = field(default_factory=dict)
    samples: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0


def sample_name(patch_id: int, tile: int) -> str:
    """``<7-digit location>/<5-digit tile>.tif``."""
    return f"{patch_id:07d}/{tile:05d}.tif"


def export_mask(preset: str | None, mask: np.ndarray) -> np.ndarray:
    """The mask as written: CORINE grid codes become CLC codes (uint16), others unchanged."""
    if preset != "corine":
        return mask
    m = mask.astype(np.int64)
    inside = (m >= 0) & (m < LUT_SIZE)
    return np.where(inside, corine_clc_of_grid()[np.where(inside, m, 0)], 0).astype(np.uint16)


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` under a temporary name and rename: the file is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
    except OSError as exc:  # a full disk: no half-written file, the error names the target
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    tmp.replace(path)


def _write_tif(path: Path, data: np.ndarray, crs: str, transform: Any, **kw: Any) -> None:
    from rasterio.io import MemoryFile

    data = data if data.ndim == 3 else data[None]
    tags = kw.pop("tags", {})
    profile = {
        "driver": "GTiff",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "compress": "deflate",
        "predictor": 2,
    } | kw
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
            if tags:
                dst.update_tags(**tags)
        _write_bytes(path, mem.read())


def _marker(dest: str | Path, start: int) -> Path:
    return Path(dest) / UNITS_DIR / f"unit-{start:09d}.json"


def export_unit(unit: ExportUnit) -> dict[str, Any]:
    """Write the images and masks of one unit's locations, then its marker; return counts.

    A unit whose marker exists is not redone (its counts are returned).
    """
    from affine import Affine

    from ..dataset import Dataset

    marker = _marker(unit.dest, unit.start)
    if marker.exists():
        return json.loads(marker.read_text())  # type: ignore[no-any-return]
    ds = Dataset(unit.out)
    dest = Path(unit.dest)
    wl = ",".join(f"{v:.3f}" for v in ds.wavelengths)
    presets = {t: ds.labels.meta[name].get("preset") for t, name in unit.tasks.items()}
    images = 0
    masks = dict.fromkeys(unit.tasks, 0)
    for i in range(unit.start, unit.stop):
        item = ds[i]
        transform = Affine(*item["transform"])
        tiles = [unit.tile_ids[p] for p in item["products"]]
        for t, tile in enumerate(tiles):
            _write_tif(
                dest / IMAGES_DIR / sample_name(item["patch_id"], tile),
                item["image"][t],
                item["crs"],
                transform,
                nodata=NODATA,
                tags={
                    "PRODUCT": item["products"][t],
                    "TIME": str(item["times"][t]),
                    "PATCH_ID": str(item["patch_id"]),
                    "WAVELENGTHS": wl,
                },
            )
            images += 1
        for task, name in unit.tasks.items():
            if name not in item["labels"]:
                continue
            mask = export_mask(presets[task], item["labels"][name])
            for tile in tiles:
                _write_tif(
                    dest / task / sample_name(item["patch_id"], tile),
                    mask,
                    item["crs"],
                    transform,
                )
                masks[task] += 1
    result = {"images": images, "masks": masks, "locations": unit.stop - unit.start}
    _write_bytes(marker, json.dumps(result, sort_keys=True).encode())
    return result


def export_spectralearth(
    out: str | Path,
    dest: str | Path,
    scheme: str = "spatial",
    tasks: list[str] | None = None,
    client: Any = None,
    progress: bool = False,
    locations_per_unit: int = 64,
) -> ExportReport:
    """Write dataset ``out`` in SpectralEarth's layout under ``dest`` (see the module docstring).

    Args:
        out: a complete dataset folder.
        dest: the folder to write: new or empty, or an unfinished (or finished) export of the
            same dataset with the same options, which is continued.
        scheme: which split scheme goes into ``splits/`` (``spatial`` or ``random``).
        tasks: tasks to export masks and splits of (default: every task of the dataset).
        client: a ``distributed.Client`` or None (run in this process).
        progress: show a tqdm bar.
        locations_per_unit: locations per parallel unit.

    Raises:
        InputError: an unknown task, ``dest`` holding something else or an export of another
            dataset or with other options.
    """
    import pandas as pd

    from ..cluster import client_map
    from ..dataset import Dataset

    t0 = time.perf_counter()
    ds = Dataset(out)
    dest = Path(dest)
    all_tasks = ds.labels.tasks
    chosen = list(all_tasks) if tasks is None else list(tasks)
    for t in chosen:
        if t not in all_tasks:
            raise InputError(f"--task {t}: not a task of {out} (tasks: {sorted(all_tasks)})")
    if len(ds) and int(ds.index["patch_id"].max()) >= MAX_LOCATION:
        raise InputError(f"{out}: patch ids above 7 digits do not fit SpectralEarth's names")
    products = sorted(set(ds.views["product"]))
    if len(products) >= MAX_TILE:
        raise InputError(f"{out}: {len(products)} products do not fit 5-digit tile numbers")
    tile_ids = {p: k for k, p in enumerate(products)}
    task_labels = {t: all_tasks[t]["label"] for t in chosen}
    _check_or_write_manifest(
        dest,
        {
            "kind": "spectralearth-export",
            "dataset": str(Path(out).resolve()),
            "scheme": scheme,
            "tasks": chosen,
            "locations_per_unit": locations_per_unit,
            "locations": len(ds),
        },
    )
    units = [
        ExportUnit(
            str(out), str(dest), s, min(s + locations_per_unit, len(ds)), tile_ids, task_labels
        )
        for s in range(0, len(ds), locations_per_unit)
    ]
    report = ExportReport(str(dest), masks=dict.fromkeys(chosen, 0))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(units), desc="exporting", unit="unit")
    try:
        for res in (client_map(client) or map)(export_unit, units):
            report.locations += res["locations"]
            report.images += res["images"]
            for t, n in res["masks"].items():
                report.masks[t] += n
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    views = ds.views
    ids = pd.DataFrame(
        {
            "location": [f"{p:07d}" for p in views["patch_id"]],
            "tile": [f"{tile_ids[p]:05d}" for p in views["product"]],
            "patch_id": views["patch_id"].to_numpy(),
            "t": views["t"].to_numpy(),
            "product": views["product"].to_numpy(),
            "time": views["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    _write_bytes(dest / IDS_FILE, ids.to_csv(index=False).encode())
    names_by_patch = ids.groupby("patch_id", sort=False)[["location", "tile"]].apply(
        lambda g: [f"{a}/{b}.tif" for a, b in zip(g["location"], g["tile"])]
    )
    patch_ids = ds.index["patch_id"].to_numpy()
    for task in chosen:
        codes = ds.labels.split_codes(task, scheme)
        has = ds.labels.has(task_labels[task])
        folder = dest / "splits" / f"enmap_{task}"
        report.samples[task] = {}
        for k, split in enumerate(SPLIT_NAMES):
            lines = [
                name
                for pos in np.flatnonzero((codes == k) & has)
                for name in names_by_patch[int(patch_ids[pos])]
            ]
            _write_bytes(folder / f"{split}.txt", "".join(f"{s}\n" for s in lines).encode())
            report.samples[task][split] = len(lines)
    _write_bytes(dest / fmt.COMPLETE, b"")
    report.seconds = time.perf_counter() - t0
    return report


def _check_or_write_manifest(dest: Path, manifest: dict[str, Any]) -> None:
    """Write ``DEST/export.json``, or check that the export found there is this one."""
    path = dest / MANIFEST
    if path.exists():
        if json.loads(path.read_text()) != manifest:
            raise InputError(
                f"--out {dest}: holds an export of another dataset or with other options; "
                "rerun it with the same ones, or choose a new folder"
            )
        return
    if dest.exists() and any(dest.iterdir()):
        raise InputError(f"--out {dest}: folder exists and is not empty")
    _write_bytes(path, json.dumps(manifest, indent=1, sort_keys=True).encode())


__all__ = ["FORMATS", "export_spectralearth", "table_path"]
