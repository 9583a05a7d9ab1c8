"""Reading labels, task targets and splits: the part of the label code that training runs.

Store layout (docs/FORMAT.md, "Labels"): ``data.zarr/labels/<NAME>`` holds one ``(P, P)`` mask
of raw codes per location (dataset position ``i``, the row of ``index.parquet``);
``OUT/labels/<NAME>.parquet`` says per location whether it has the label (``status == "ok"``);
``data.zarr/splits/<TASK>/<SCHEME>`` holds one int8 split code per location (-1 not in the
task, 0 train, 1 val, 2 test); the group attributes ``labels`` and ``tasks`` describe both.

:class:`LabelReader` backs ``ds[i]["labels"]`` of a plain dataset; :class:`TaskView` is what
``open_dataset(OUT, task=..., split=..., scheme=...)`` returns: the labelled locations of one
task (in one split), each item with ``label`` added.  Imports numpy, pandas and (lazily) zarr
only: no rasterio, GDAL or geopandas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..formats import LABELS_DIR, SPLITS_GROUP, STORE_NAME
from .presets import LUT_SIZE, task_table

SPLIT_NAMES = ("train", "val", "test")
SPLIT_CODES = {name: code for code, name in enumerate(SPLIT_NAMES)}
NO_SPLIT = -1
SCHEMES = ("spatial", "random")
STATUS_OK = "ok"


def table_path(out: str | Path, name: str) -> Path:
    """``OUT/labels/<NAME>.parquet``: one row per location (``patch_id``, ``status``, ...)."""
    return Path(out) / LABELS_DIR / f"{name}.parquet"


def mask_array_path(out: str | Path, name: str) -> Path:
    """``OUT/data.zarr/labels/<NAME>``: the label's masks, ``(location, y, x)`` raw codes."""
    return Path(out) / STORE_NAME / LABELS_DIR / name


def split_array_path(out: str | Path, task: str, scheme: str) -> Path:
    """``OUT/data.zarr/splits/<TASK>/<SCHEME>``: int8 split code per location."""
    return Path(out) / STORE_NAME / SPLITS_GROUP / task / scheme


def task_target(meta: dict[str, Any], mask: np.ndarray) -> np.ndarray:
    """The training target of a task for one raw-code mask ``(P, P)``.

    Multi-label (CORINE): float32 ``(n_classes,)`` multi-hot, a class present if any pixel has
    it.  Segmentation (CDL, NLCD): int64 ``(P, P)`` class indices, ``ignore_index`` for
    background and unlisted codes.  Generic labels: the raw codes, int64 (categorical) or
    float32 (continuous).
    """
    kind = meta["kind"]
    if kind == "regression":
        return np.asarray(mask, dtype=np.float32)
    if meta.get("preset") is None:
        return np.asarray(mask, dtype=np.int64)
    table = task_table(meta["preset"])
    m = np.asarray(mask).astype(np.int64, copy=False)
    inside = (m >= 0) & (m < LUT_SIZE)
    idx = np.where(inside, table.lookup()[np.where(inside, m, 0)], table.ignore_index)
    if kind == "multilabel":
        hot = np.zeros(table.n_classes, dtype=np.float32)
        present = np.unique(idx)
        hot[present[present >= 0]] = 1.0
        return hot
    return idx


class LabelReader:
    """The labels of a dataset: which locations have which label, and their masks."""

    def __init__(self, path: str | Path, attrs: dict[str, Any]):
        self.path = Path(path)
        self.meta: dict[str, dict[str, Any]] = dict(attrs.get("labels") or {})
        self.tasks: dict[str, dict[str, Any]] = dict(attrs.get("tasks") or {})
        self._has: dict[str, np.ndarray] = {}
        self._arrays: dict[str, Any] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self.meta)

    def has(self, name: str) -> np.ndarray:
        """Which dataset positions have label ``name``: bool ``(N,)``."""
        if name not in self._has:
            import pandas as pd

            status = pd.read_parquet(table_path(self.path, name), columns=["status"])["status"]
            self._has[name] = (status == STATUS_OK).to_numpy()
        return self._has[name]

    def array(self, name: str) -> Any:
        if name not in self._arrays:
            import zarr

            self._arrays[name] = zarr.open_array(
                store=str(mask_array_path(self.path, name)), mode="r"
            )
        return self._arrays[name]

    def mask(self, name: str, i: int) -> np.ndarray:
        """Raw codes ``(P, P)`` of label ``name`` at position ``i`` (fill value if it has none)."""
        return np.asarray(self.array(name)[int(i)])

    def masks_at(self, i: int) -> dict[str, np.ndarray]:
        """``NAME -> (P, P)`` raw codes for every label location ``i`` has."""
        return {n: self.mask(n, i) for n in self.names if self.has(n)[int(i)]}

    def split_codes(self, task: str, scheme: str) -> np.ndarray:
        """int8 ``(N,)``: split code of each position for ``task`` (-1: not in the task)."""
        import zarr

        return np.asarray(
            zarr.open_array(store=str(split_array_path(self.path, task, scheme)), mode="r")[:]
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state


class TaskView:
    """The locations of ``base`` labelled for ``task`` (optionally one split of one scheme).

    ``len(view)`` locations; ``view[i]`` is ``base[positions[i]]`` with ``label`` (see
    :func:`task_target`) added; ``view.index`` the matching rows of ``base.index``.  Other
    attributes (``wavelengths``, ``band_mean``, ``views``, ...) are those of ``base``.
    """

    def __init__(self, base: Any, task: str, split: str | None = None, scheme: str = "spatial"):
        reader: LabelReader = base.labels
        if task not in reader.tasks:
            known = ", ".join(sorted(reader.tasks)) or "none: pair labels first"
            raise InputError(f"{base.path}: no task {task!r} in this dataset (tasks: {known})")
        if split is not None and split not in SPLIT_CODES:
            raise InputError(f"split {split!r}: expected one of {', '.join(SPLIT_NAMES)}")
        if scheme not in SCHEMES:
            raise InputError(f"scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
        self.base = base
        self.task = task
        self.split = split
        self.scheme = scheme
        self.meta = reader.tasks[task]
        self.label_name: str = self.meta["label"]
        keep = reader.has(self.label_name)
        if split is not None:
            keep = keep & (reader.split_codes(task, scheme) == SPLIT_CODES[split])
        self.positions = np.flatnonzero(keep)

    @property
    def index(self) -> Any:
        """The matching rows of ``base.index`` (a GeoDataFrame: loads geopandas on first use)."""
        return self.base.index.iloc[self.positions].reset_index(drop=True)

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes") or [])

    @property
    def ignore_index(self) -> int | None:
        return self.meta.get("ignore_index")

    def __len__(self) -> int:
        return len(self.positions)

    def _position(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples of task {self.task}")
        return int(self.positions[int(i) % n])

    def label_at(self, i: int) -> np.ndarray:
        """The target of sample ``i`` without reading its image."""
        pos = self._position(i)
        return task_target(self.meta, self.base.labels.mask(self.label_name, pos))

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = self.base[self._position(i)]
        item["label"] = task_target(self.meta, item["labels"][self.label_name])
        return item

    def n_views_at(self, i: int) -> int:
        return int(self.base.n_views_at(self._position(i)))

    def read_views(self, i: int, ts: Any) -> np.ndarray:
        return self.base.read_views(self._position(i), ts)  # type: ignore[no-any-return]

    def __iter__(self) -> Any:
        for i in range(len(self)):
            yield self[i]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __repr__(self) -> str:
        part = f", split={self.split!r}, scheme={self.scheme!r}" if self.split else ""
        return f"TaskView({str(self.base.path)!r}, task={self.task!r}{part}, samples={len(self)})"
