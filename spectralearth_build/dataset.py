"""Reading a dataset written by ``build-dataset``.

:func:`open_dataset` returns a :class:`Dataset`: a sequence of locations in ``patch_id`` order.
``ds.index`` (GeoDataFrame, one row per location) and ``ds.views`` (one row per view) are the
tables; ``ds[i]`` reads location ``i``'s whole time series with one chunk read from the Zarr
store.  The store is opened lazily and dropped when pickled, so a Dataset can be handed to
DataLoader worker processes.  Importing this module imports neither zarr nor dask.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IncompleteDatasetError, InputError
from .labels.loader import LabelReader, TaskView

STORE_NAME = "data.zarr"
ARRAY_NAME = "images"


class Dataset:
    """A built dataset; ``len(ds)`` locations, ``ds[i]`` a dict (see :meth:`__getitem__`)."""

    def __init__(self, path: str | Path):
        import geopandas as gpd
        import pandas as pd

        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError(f"{self.path}: no such dataset folder")
        if not (self.path / "_COMPLETE").exists():
            raise IncompleteDatasetError(
                f"{self.path}: the dataset build has not finished (no _COMPLETE marker); "
                "rerun build-dataset with --resume to complete it"
            )
        meta = json.loads((self.path / STORE_NAME / "zarr.json").read_text())
        self.attrs: dict[str, Any] = meta.get("attributes", {})
        self.index = gpd.read_parquet(self.path / "index.parquet")
        self.views = pd.read_parquet(self.path / "views.parquet")
        self._slots = self.index["slot"].to_numpy()
        self._n = self.index["n_views"].to_numpy()
        self._start = self.index["view_start"].to_numpy()
        self._times = self.views["time"].dt.tz_localize(None).to_numpy().astype("datetime64[s]")
        self._products = self.views["product"].to_numpy()
        self._array: Any = None
        self.labels = LabelReader(self.path, self.attrs)
        """Label masks, tasks and splits (:mod:`spectralearth_build.labels.loader`)."""

    # -- metadata ---------------------------------------------------------------------------
    @property
    def wavelengths(self) -> np.ndarray:
        """Centre wavelengths (nm) of the stored bands."""
        return np.asarray(self.attrs.get("wavelengths") or [], dtype=np.float64)

    @property
    def fwhm(self) -> np.ndarray:
        return np.asarray(self.attrs.get("fwhm") or [], dtype=np.float64)

    @property
    def band_indices(self) -> np.ndarray:
        """0-based indices of the stored bands in the source products."""
        return np.asarray(self.attrs["band_indices"], dtype=np.int64)

    @property
    def band_mean(self) -> np.ndarray:
        """Per-band mean of the stored int16 values (reflectance x 10000)."""
        return np.asarray(self.attrs["band_mean"], dtype=np.float64)

    @property
    def band_std(self) -> np.ndarray:
        return np.asarray(self.attrs["band_std"], dtype=np.float64)

    @property
    def images(self) -> Any:
        """The Zarr array ``(slot, time, band, y, x)`` (opened on first use)."""
        if self._array is None:
            import zarr

            self._array = zarr.open_array(store=str(self.path / STORE_NAME / ARRAY_NAME), mode="r")
        return self._array

    # -- sequence -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Location ``i`` as a dict.

        ``image`` int16 ``(T, C, P, P)`` (time ascending), ``times`` (datetime64[s]),
        ``products``, ``crs``, ``transform`` (6 coefficients), ``patch_id``, ``labels``
        (``NAME -> (P, P)`` raw codes of the labels paired with this location).
        """
        n_loc = len(self)
        if not -n_loc <= i < n_loc:
            raise IndexError(f"location {i} out of range for {n_loc} locations")
        i = int(i) % n_loc
        row = self.index.iloc[i]
        n = int(self._n[i])
        s = int(self._start[i])
        image = np.asarray(self.images[int(self._slots[i])])[:n]
        return {
            "image": image,
            "times": self._times[s : s + n].copy(),
            "products": [str(p) for p in self._products[s : s + n]],
            "crs": str(row["crs"]),
            "transform": tuple(float(v) for v in row["transform"]),
            "patch_id": int(row["patch_id"]),
            "labels": self.labels.masks_at(i),
        }

    def n_views_at(self, i: int) -> int:
        """Number of timestamps stored for location ``i``."""
        return int(self._n[int(i) % len(self)])

    def read_views(self, i: int, ts: Any) -> np.ndarray:
        """int16 ``(len(ts), C, P, P)``: timestamps ``ts`` (0-based, time order) of location ``i``.

        Reads only the requested views; ``ts`` may repeat an index (a view used twice).
        """
        n_loc = len(self)
        if not -n_loc <= i < n_loc:
            raise IndexError(f"location {i} out of range for {n_loc} locations")
        i = int(i) % n_loc
        ts = [int(t) for t in ts]
        n = int(self._n[i])
        if any(not 0 <= t < n for t in ts):
            raise IndexError(f"location {i} has {n} timestamps, asked for {ts}")
        slot = int(self._slots[i])
        return np.stack([np.asarray(self.images[slot, t]) for t in ts])

    def __iter__(self) -> Any:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, locations={len(self)}, views={len(self.views)})"


def open_dataset(
    path: str | Path, task: str | None = None, split: str | None = None, scheme: str = "spatial"
) -> Dataset | TaskView:
    """Open a dataset folder written by ``build-dataset``.

    Args:
        path: the dataset folder.
        task: a task of the paired labels (``corine``, ``cdl``, ``nlcd`` or a generic label's
            name): only its labelled locations, each item with ``label`` added (see
            :class:`~spectralearth_build.labels.loader.TaskView`).
        split: ``train``, ``val`` or ``test`` of ``scheme`` (needs ``task``).
        scheme: ``spatial`` (no source product or block in two splits) or ``random``.
    """
    ds = Dataset(path)
    if task is None:
        if split is not None:
            raise InputError("a split needs a task: open_dataset(path, task=..., split=...)")
        return ds
    return TaskView(ds, task, split, scheme)
