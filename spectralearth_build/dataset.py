"""Reading a dataset written by ``build-dataset`` (or ``spectralearth-build synth-store``).

:func:`open_dataset` returns a :class:`Dataset`: a sequence of locations in ``patch_id`` order.
``ds.views`` (one row per view) is a pandas table; ``ds.index`` (one row per location) is a
GeoDataFrame, made on first use (geopandas is imported only then: the loader itself needs only
numpy, pandas, pyarrow and zarr, so it runs on a GPU node without GDAL); ``ds.table`` is the same
index as a plain pandas table (footprints as WKB bytes).  ``ds[i]`` reads location ``i``'s whole
time series, :meth:`Dataset.read_views` only some of its timestamps: in a format-version-2 store
each view is its own inner chunk, so reading one view decodes one view (a version-1 store
decodes the location's whole chunk once).  The store is opened lazily and dropped when pickled,
so a Dataset can be handed to DataLoader worker processes.  Importing this module imports
neither zarr nor dask.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import formats as fmt
from .errors import IncompleteDatasetError, InputError
from .labels.loader import LabelReader, TaskView


class Dataset:
    """A built dataset; ``len(ds)`` locations, ``ds[i]`` a dict (see :meth:`__getitem__`).

    Args:
        path: the dataset folder (``OUT`` of ``build-dataset``).

    Raises:
        InputError: no such folder, or a store format this version cannot read.
        IncompleteDatasetError: the build has not finished (no ``_COMPLETE``).
    """

    def __init__(self, path: str | Path):
        import pandas as pd

        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError(f"{self.path}: no such dataset folder")
        if not (self.path / fmt.COMPLETE).exists():
            raise IncompleteDatasetError(
                f"{self.path}: the dataset build has not finished (no {fmt.COMPLETE} marker); "
                "rerun build-dataset with --resume to complete it"
            )
        meta = json.loads((self.path / fmt.STORE_NAME / "zarr.json").read_text())
        self.attrs: dict[str, Any] = meta.get("attributes", {})
        version = self.attrs.get("format_version")
        if version not in fmt.READABLE_FORMAT_VERSIONS:
            raise InputError(
                f"{self.path}: store format version {version!r}; this version of "
                f"spectralearth-build reads {list(fmt.READABLE_FORMAT_VERSIONS)}"
            )
        self.format_version = int(version)
        self.table = pd.read_parquet(self.path / fmt.INDEX)
        self.views = pd.read_parquet(self.path / fmt.VIEWS)
        self._slots = self.table["slot"].to_numpy()
        self._n = self.table["n_views"].to_numpy()
        self._start = self.table["view_start"].to_numpy()
        self._patch_ids = self.table["patch_id"].to_numpy()
        self._times = self.views["time"].dt.tz_localize(None).to_numpy().astype("datetime64[s]")
        self._products = self.views["product"].to_numpy()
        self._array: Any = None
        self._index: Any = None
        self.labels = LabelReader(self.path, self.attrs)
        """Label masks, tasks and splits (:mod:`spectralearth_build.labels.loader`)."""

    # -- metadata ---------------------------------------------------------------------------
    @property
    def index(self) -> Any:
        """GeoDataFrame, one row per location (``index.parquet``; loads geopandas on first use)."""
        if self._index is None:
            import geopandas as gpd

            self._index = gpd.read_parquet(self.path / fmt.INDEX)
        return self._index

    @property
    def wavelengths(self) -> np.ndarray:
        """Centre wavelengths (nm) of the stored bands, float64 ``(C,)``."""
        return np.asarray(self.attrs.get("wavelengths") or [], dtype=np.float64)

    @property
    def fwhm(self) -> np.ndarray:
        """Full width at half maximum (nm) of the stored bands, float64 ``(C,)``."""
        return np.asarray(self.attrs.get("fwhm") or [], dtype=np.float64)

    @property
    def band_indices(self) -> np.ndarray:
        """0-based indices of the stored bands in the source products, int64 ``(C,)``."""
        return np.asarray(self.attrs["band_indices"], dtype=np.int64)

    @property
    def band_mean(self) -> np.ndarray:
        """Per-band mean of the stored int16 values (reflectance x 10000), float64 ``(C,)``."""
        return np.asarray(self.attrs["band_mean"], dtype=np.float64)

    @property
    def band_std(self) -> np.ndarray:
        """Per-band population std of the stored int16 values, float64 ``(C,)``."""
        return np.asarray(self.attrs["band_std"], dtype=np.float64)

    @property
    def images(self) -> Any:
        """The Zarr array ``(slot, time, band, y, x)`` (opened on first use)."""
        if self._array is None:
            import zarr

            path = self.path / fmt.STORE_NAME / fmt.ARRAY_NAME
            self._array = zarr.open_array(store=str(path), mode="r")
        return self._array

    # -- sequence -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slots)

    def _position(self, i: int) -> int:
        n_loc = len(self)
        if not -n_loc <= i < n_loc:
            raise IndexError(f"location {i} out of range for {n_loc} locations")
        return int(i) % n_loc

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Location ``i`` as a dict.

        ``image`` int16 ``(T, C, P, P)`` (time ascending), ``times`` (datetime64[s]),
        ``products``, ``crs``, ``transform`` (6 coefficients), ``patch_id``, ``labels``
        (``NAME -> (P, P)`` raw codes of the labels paired with this location).
        """
        i = self._position(i)
        n = int(self._n[i])
        s = int(self._start[i])
        image = np.asarray(self.images[int(self._slots[i]), :n])
        return {
            "image": image,
            "times": self._times[s : s + n].copy(),
            "products": [str(p) for p in self._products[s : s + n]],
            "crs": str(self.table["crs"].iat[i]),
            "transform": tuple(float(v) for v in self.table["transform"].iat[i]),
            "patch_id": int(self._patch_ids[i]),
            "labels": self.labels.masks_at(i),
        }

    def n_views_at(self, i: int) -> int:
        """Number of timestamps stored for location ``i``."""
        return int(self._n[int(i) % len(self)])

    def read_views(self, i: int, ts: Any) -> np.ndarray:
        """int16 ``(len(ts), C, P, P)``: timestamps ``ts`` (0-based, time order) of location ``i``.

        Decodes only the requested views (format version 2: one inner chunk per distinct
        timestamp); ``ts`` may repeat an index (a view used twice).
        """
        i = self._position(i)
        ts = [int(t) for t in ts]
        n = int(self._n[i])
        if any(not 0 <= t < n for t in ts):
            raise IndexError(f"location {i} has {n} timestamps, asked for {ts}")
        slot = int(self._slots[i])
        if self.format_version < 2:  # one chunk per location: decode it once
            return np.asarray(self.images[slot, :n])[ts]
        # one basic selection per distinct view, copied once into place: zarr's orthogonal
        # selection of a list of timestamps is about 40x slower than the reads it makes
        if len(ts) == 1:
            return np.asarray(self.images[slot, ts[0]])[None]
        out = np.empty((len(ts), *self.images.shape[2:]), dtype=self.images.dtype)
        for t in sorted(set(ts)):
            view = np.asarray(self.images[slot, t])
            for k in (k for k, tk in enumerate(ts) if tk == t):
                out[k] = view
        return out

    def __iter__(self) -> Any:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None
        state["_index"] = None
        return state

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, locations={len(self)}, views={len(self.views)})"


def open_dataset(
    path: str | Path, task: str | None = None, split: str | None = None, scheme: str = "spatial"
) -> Dataset | TaskView:
    """Open a dataset folder written by ``build-dataset`` or ``synth-store``.

    Args:
        path: the dataset folder; it must hold ``_COMPLETE``.
        task: a task of the paired labels (``corine``, ``cdl``, ``nlcd`` or a generic label's
            name): only its labelled locations, each item with ``label`` added (see
            :class:`~spectralearth_build.labels.loader.TaskView`).
        split: ``train``, ``val`` or ``test`` of ``scheme`` (needs ``task``).
        scheme: ``spatial`` (no source product or block in two splits) or ``random``.

    Returns:
        A :class:`Dataset` (``len``, ``ds[i]``, ``ds.read_views(i, ts)``, tables, attributes),
        or with ``task`` a :class:`~spectralearth_build.labels.loader.TaskView` of it.
    """
    ds = Dataset(path)
    if task is None:
        if split is not None:
            raise InputError("a split needs a task: open_dataset(path, task=..., split=...)")
        return ds
    return TaskView(ds, task, split, scheme)
