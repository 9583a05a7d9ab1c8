"""Task views of the paired labels: class tables, class frequencies and splits in the store.

Every paired label is a task of the same name: ``corine`` (multi-label, 19 BigEarthNet
classes), ``cdl`` and ``nlcd`` (segmentation, 14 and 15 classes + ignore index), and any
generic label (categorical: its raw codes; continuous: regression).  :func:`update_tasks`
computes, per task, both split schemes over the labelled locations (:mod:`.splits`), writes
them to ``data.zarr/splits/<TASK>/<SCHEME>`` and records in the group attribute ``tasks``
the class table, class frequencies per scheme and split, split sizes and the class balance
(largest absolute difference between a split's class frequency and the whole task's).

Class frequency: multi-label, the fraction of locations having the class; segmentation,
the fraction of non-ignored pixels in the class.  Histograms come from the per-location code
counts in ``OUT/labels/<NAME>.parquet``, so no mask is read again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import formats as fmt
from ..errors import naming
from .loader import (
    SCHEMES,
    SPLIT_NAMES,
    STATUS_OK,
    table_path,
)
from .presets import LUT_SIZE, task_table
from .splits import SplitConfig, block_ids, random_split, spatial_split, split_warning

EQUAL_AREA_CRS = "EPSG:6933"


def task_meta(name: str, label: dict[str, Any], codes_seen: list[int]) -> dict[str, Any]:
    """Class table of the task of label ``name`` (``label`` is its ``labels`` attribute)."""
    preset = label.get("preset")
    if preset is not None:
        t = task_table(preset)
        d = t.to_dict()
        d.pop("name")
        return {"label": name, "preset": preset} | d
    if label["kind"] == "continuous":
        return {"label": name, "preset": None, "kind": "regression", "classes": None}
    return {
        "label": name,
        "preset": None,
        "kind": "segmentation",
        "classes": [str(c) for c in codes_seen],
        "codes": codes_seen,
        "ignore_index": None,
    }


def histograms(meta: dict[str, Any], codes: Any, counts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-location class histograms ``(n, n_classes)`` and ignored-pixel counts ``(n,)``.

    Multi-label: 1 where the class is present; segmentation: pixels per class.
    """
    classes = meta.get("classes") or []
    n = len(codes)
    hist = np.zeros((n, len(classes)), dtype=np.float64)
    ignored = np.zeros(n, dtype=np.float64)
    if not classes:
        return hist, ignored
    if meta.get("preset") is not None:
        lut = task_table(meta["preset"]).lookup()
    else:
        lut = np.full(LUT_SIZE, -1, dtype=np.int64)
        index = {c: k for k, c in enumerate(meta["codes"])}
    for i, (cs, ms) in enumerate(zip(codes, counts)):
        cs = np.asarray(cs, dtype=np.int64)
        ms = np.asarray(ms, dtype=np.float64)
        if meta.get("preset") is not None:
            inside = (cs >= 0) & (cs < LUT_SIZE)
            k = np.where(inside, lut[np.where(inside, cs, 0)], -1)
        else:
            k = np.array([index.get(int(c), -1) for c in cs], dtype=np.int64)
        valid = (k >= 0) & (k < len(classes))
        ignored[i] = ms[~valid].sum()
        if meta["kind"] == "multilabel":
            hist[i, k[valid]] = 1.0
        else:
            np.add.at(hist[i], k[valid], ms[valid])
    return hist, ignored


def frequencies(meta: dict[str, Any], hist: np.ndarray) -> list[float]:
    """Class frequencies of a set of locations (see the module docstring)."""
    if hist.shape[1] == 0 or len(hist) == 0:
        return [0.0] * hist.shape[1]
    if meta["kind"] == "multilabel":
        return [float(v) for v in hist.mean(axis=0)]
    total = hist.sum()
    return [float(v) for v in (hist.sum(axis=0) / total if total else hist.sum(axis=0))]


def location_centres(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """Location centres in EPSG:6933 metres, ``(N,)`` each, from ``index.parquet``."""
    import geopandas as gpd
    import shapely

    from ..crs import LONLAT, transformer

    geom = gpd.read_parquet(out / fmt.INDEX, columns=["geometry"]).geometry
    xy = shapely.get_coordinates(shapely.centroid(np.asarray(geom.values)))
    x, y = transformer(LONLAT, EQUAL_AREA_CRS).transform(xy[:, 0], xy[:, 1])
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def location_products(out: Path) -> list[list[str]]:
    """Source products of each location (index order), from ``views.parquet``."""
    import pandas as pd

    index = pd.read_parquet(out / fmt.INDEX, columns=["patch_id"])
    views = pd.read_parquet(out / fmt.VIEWS, columns=["patch_id", "product"])
    by = views.groupby("patch_id", sort=False)["product"].apply(list).to_dict()
    return [list(by.get(int(p), [])) for p in index["patch_id"]]


def _write_split(out: Path, task: str, scheme: str, codes: np.ndarray) -> None:
    import zarr

    group = zarr.open_group(store=str(out / fmt.STORE_NAME), mode="r+")
    g = group.require_group(fmt.SPLITS_GROUP).require_group(task)
    arr = g.create_array(
        scheme,
        shape=codes.shape,
        chunks=(max(1, min(len(codes), 1 << 20)),),
        dtype="int8",
        fill_value=-1,
        dimension_names=("location",),
        overwrite=True,
    )
    if len(codes):
        arr[:] = codes


def update_tasks(out: str | Path, config: SplitConfig | None = None) -> dict[str, Any]:
    """Compute splits and class statistics of every paired label; write them; return them."""
    import pandas as pd
    import zarr

    out = Path(out)
    config = config or SplitConfig()
    group = zarr.open_group(store=str(out / fmt.STORE_NAME), mode="r+")
    labels: dict[str, Any] = dict(group.attrs.get("labels") or {})  # type: ignore[arg-type]
    tasks: dict[str, Any] = {}
    if not labels:
        return tasks
    x, y = location_centres(out)
    products = location_products(out)
    for name in sorted(labels):
        label = labels[name]
        if not label.get("complete"):
            continue
        table = pd.read_parquet(table_path(out, name))
        ok = (table["status"] == STATUS_OK).to_numpy()
        pos = np.flatnonzero(ok)
        codes_seen = sorted({int(c) for cs in table.loc[ok, "codes"] for c in cs})
        meta = task_meta(name, label, codes_seen)
        hist, ignored = histograms(
            meta, table.loc[ok, "codes"].tolist(), table.loc[ok, "counts"].tolist()
        )
        schemes = {
            "random": random_split(len(pos), config),
            "spatial": spatial_split(x[pos], y[pos], [products[i] for i in pos], hist, config),
        }
        whole = frequencies(meta, hist)
        meta["locations"] = int(len(pos))
        meta["ignored_pixels"] = float(ignored.sum())
        meta["split_config"] = config.to_dict()
        meta["class_frequencies"] = {"all": whole}
        meta["splits"] = {}
        for scheme in SCHEMES:
            local = schemes[scheme]
            full = np.full(len(table), -1, dtype=np.int8)
            full[pos] = local
            _write_split(out, name, scheme, full)
            freq = {s: frequencies(meta, hist[local == k]) for k, s in enumerate(SPLIT_NAMES)}
            meta["class_frequencies"][scheme] = freq
            dev = [
                max((abs(a - b) for a, b in zip(freq[s], whole)), default=0.0)
                for s in SPLIT_NAMES
                if (local == SPLIT_NAMES.index(s)).any()
            ]
            meta["splits"][scheme] = {s: int((local == k).sum()) for k, s in enumerate(SPLIT_NAMES)}
            meta["splits"][scheme]["dropped"] = int((local < 0).sum())
            meta["splits"][scheme]["max_class_deviation"] = float(max(dev, default=0.0))
            if scheme == "spatial":
                meta["splits"][scheme]["blocks"] = int(
                    len(np.unique(block_ids(x[pos], y[pos], config.block_m))) if len(pos) else 0
                )
                warning = split_warning(local, x[pos], y[pos], [products[i] for i in pos], config)
                if warning:
                    meta["splits"][scheme]["warning"] = warning
        tasks[name] = meta
    with naming(Path(out) / fmt.STORE_NAME / "zarr.json"):
        group.attrs["tasks"] = tasks
    return tasks


__all__ = ["update_tasks"]
