"""Label presets and the lookup tables of the downstream tasks, built from the class CSVs.

A preset (``corine``, ``cdl``, ``nlcd``) fixes what a label product is: categorical, its
nodata, its class table and the task made from it.  Tasks remap raw codes through lookup tables
(numpy arrays indexed by code), never through if-chains:

- ``corine``: 19 BigEarthNet classes, multi-hot.  The table accepts both encodings of CORINE
  rasters, grid codes 1..44 (the EEA GeoTIFF) and CLC codes 111..523 (other deliveries and
  SpectralEarth's masks); the two ranges do not overlap.  CLC codes without a BigEarthNet class
  (122, 123, 124, 131, 132, 133, 141, 142, 332, 334, 335, 423), nodata 48 and unclassified
  49, 50, 255 map to -1 (ignored).
- ``cdl`` and ``nlcd``: ordinal masks in the order of SpectralEarth's class lists; background
  and every unlisted code map to the ignore index, which is the number of classes (14 for
  CDL, 15 for NLCD: SpectralEarth moves background to the last index).

This module imports only numpy and the standard library: the training loader uses it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

KINDS = ("categorical", "continuous")
RESAMPLINGS = ("auto", "nearest", "mode", "bilinear", "average")
TASK_KINDS = ("multilabel", "segmentation", "regression")

CORINE_NODATA = 48
CORINE_UNCLASSIFIED = (49, 50, 255)
LUT_SIZE = 1024
"""Lookup tables cover codes 0..1023 (CLC codes reach 523); larger codes are ignored."""


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("spectralearth_build.data").joinpath(name).read_text()
    return list(csv.DictReader(text.splitlines()))


def code_names(preset: str) -> dict[int, str]:
    """Raw code -> class name of a preset's raster (CORINE: grid codes and CLC codes both)."""
    if preset == "corine":
        rows = _rows("corine_classes.csv")
        return {int(r[c]): r["name"] for r in rows for c in ("grid_code", "clc_code")}
    if preset in ("cdl", "nlcd"):
        return {int(r["code"]): r["name"] for r in _rows(f"{preset}_classes.csv")}
    return {}


@dataclass(frozen=True)
class TaskTable:
    """A downstream task: its class names, kind and code -> class lookup table.

    ``lut[code]`` is the class index (0..n_classes-1), or ``ignore_index`` for codes outside
    the task (-1 for multi-label tasks, ``n_classes`` for segmentation).
    """

    name: str
    kind: str
    classes: tuple[str, ...]
    ignore_index: int
    lut: tuple[int, ...]
    codes: tuple[int, ...]
    """The listed raw codes, in class order (CORINE: CLC codes of each 19-class member)."""

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def lookup(self) -> np.ndarray:
        """The lookup table as int64 ``(LUT_SIZE,)``."""
        return _lut_array(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "classes": list(self.classes),
            "ignore_index": self.ignore_index,
            "codes": list(self.codes),
        }


@lru_cache(maxsize=16)
def _lut_array(table: TaskTable) -> np.ndarray:
    arr = np.asarray(table.lut, dtype=np.int64)
    arr.setflags(write=False)
    return arr


@lru_cache(maxsize=1)
def corine_clc_of_grid() -> np.ndarray:
    """int64 ``(LUT_SIZE,)``: CLC code of each raw CORINE code (grid or CLC), 0 if none."""
    lut = np.zeros(LUT_SIZE, dtype=np.int64)
    for r in _rows("corine_classes.csv"):
        clc = int(r["clc_code"])
        lut[int(r["grid_code"])] = clc
        lut[clc] = clc
    lut.setflags(write=False)
    return lut


@lru_cache(maxsize=1)
def _corine_task() -> TaskTable:
    rows = _rows("corine_classes.csv")
    names: dict[int, str] = {}
    lut = [-1] * LUT_SIZE
    codes: list[tuple[int, int]] = []
    for r in rows:
        if not r["bigearthnet19_index"]:
            continue
        k = int(r["bigearthnet19_index"])
        names[k] = r["bigearthnet19_name"]
        lut[int(r["grid_code"])] = k
        lut[int(r["clc_code"])] = k
        codes.append((k, int(r["clc_code"])))
    classes = tuple(names[k] for k in range(len(names)))
    return TaskTable(
        "corine", "multilabel", classes, -1, tuple(lut), tuple(c for _, c in sorted(codes))
    )


def _ordinal_task(name: str, csv_name: str, column: str) -> TaskTable:
    listed = sorted(
        ((int(r[column]), int(r["code"]), r["name"]) for r in _rows(csv_name) if r[column]),
    )
    n = len(listed)
    if [k for k, _, _ in listed] != list(range(n)):
        raise ValueError(f"{csv_name}: task indices are not 0..{n - 1}")
    lut = [n] * LUT_SIZE
    for k, code, _ in listed:
        lut[code] = k
    return TaskTable(
        name,
        "segmentation",
        tuple(nm for _, _, nm in listed),
        n,
        tuple(lut),
        tuple(c for _, c, _ in listed),
    )


@lru_cache(maxsize=1)
def _tasks() -> dict[str, TaskTable]:
    return {
        "corine": _corine_task(),
        "cdl": _ordinal_task("cdl", "cdl_classes.csv", "enmap_cdl_task_index"),
        "nlcd": _ordinal_task("nlcd", "nlcd_classes.csv", "enmap_nlcd_task_index"),
    }


def task_table(name: str) -> TaskTable:
    """The :class:`TaskTable` of preset task ``name`` (``corine``, ``cdl``, ``nlcd``)."""
    tasks = _tasks()
    if name not in tasks:
        raise KeyError(f"no preset task {name!r} (known: {sorted(tasks)})")
    return tasks[name]


@dataclass(frozen=True)
class Preset:
    """Defaults for a known label product."""

    name: str
    kind: str
    nodata: float | None
    """Nodata when the file has no tag (CDL: none, 0 is background; NLCD: 0; CORINE: 48)."""
    product: str
    year: int | None
    crs_hint: str
    res_m: float


PRESETS: dict[str, Preset] = {
    "corine": Preset(
        "corine", "categorical", CORINE_NODATA, "CORINE Land Cover", None, "EPSG:3035", 100.0
    ),
    "cdl": Preset("cdl", "categorical", None, "USDA Cropland Data Layer", None, "EPSG:5070", 30.0),
    "nlcd": Preset(
        "nlcd", "categorical", 0, "USGS National Land Cover Database", None, "EPSG:5070", 30.0
    ),
}
