"""What a work unit produced, as values: stored locations, views, dropped views, band sums.

A unit's :class:`UnitResult` is its done-marker (JSON, ``units/unit-*.json``) and everything the
driver needs to write the dataset's tables and attributes (:mod:`.tables`).  Records are frozen
dataclasses with ``to_dict``/``from_dict``; a view's and a dropped view's ``to_dict`` is its row
in ``views.parquet`` / ``dropped_views.parquet`` (columns in :mod:`spectralearth_build.formats`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..grid import Window


@dataclass(frozen=True)
class StoredLocation:
    """A location written to the store: its plan id, its slot and how many views it holds."""

    patch_id: int
    slot: int
    n_views: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoredLocation:
        return cls(int(d["patch_id"]), int(d["slot"]), int(d["n_views"]))


@dataclass(frozen=True)
class ViewRecord:
    """One stored view (a row of ``views.parquet``): location, timestamp index and provenance."""

    patch_id: int
    slot: int
    t: int
    """Timestamp index in the store (0-based, ascending time)."""
    time: str
    """Acquisition start of the source product, ISO 8601 with time zone."""
    product: str
    datatake: int
    tile: int
    processor_version: str
    window: Window
    """Pixel window read in the source product."""
    resampled: bool
    cloud_fraction: float
    snow_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """The view's row: the columns of ``views.parquet`` (``time`` still a string)."""
        return {
            "patch_id": self.patch_id,
            "slot": self.slot,
            "t": self.t,
            "time": self.time,
            "product": self.product,
            "datatake": self.datatake,
            "tile": self.tile,
            "processor_version": self.processor_version,
            **self.window.to_dict(),
            "resampled": self.resampled,
            "cloud_fraction": self.cloud_fraction,
            "snow_fraction": self.snow_fraction,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViewRecord:
        return cls(
            int(d["patch_id"]),
            int(d["slot"]),
            int(d["t"]),
            str(d["time"]),
            str(d["product"]),
            int(d["datatake"]),
            int(d["tile"]),
            str(d["processor_version"]),
            Window.from_dict(d),
            bool(d["resampled"]),
            float(d["cloud_fraction"]),
            float(d["snow_fraction"]),
        )


@dataclass(frozen=True)
class DroppedView:
    """A planned view that was not stored (a row of ``dropped_views.parquet``)."""

    patch_id: int
    product: str
    time: str
    """Acquisition start, ISO 8601."""
    reason: str
    """One of the drop reasons in :mod:`.pixels`."""
    cloud_fraction: float | None = None
    """Set where the quality layers were read."""
    snow_fraction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The row; fractions that were not computed are left out (NaN in the table)."""
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DroppedView:
        cloud, snow = d.get("cloud_fraction"), d.get("snow_fraction")
        return cls(
            int(d["patch_id"]),
            str(d["product"]),
            str(d["time"]),
            str(d["reason"]),
            None if cloud is None else float(cloud),
            None if snow is None else float(snow),
        )


@dataclass(frozen=True)
class BandSums:
    """Exact per-band pixel count, sum and sum of squares of stored int16 values.

    Python integers, so sums add exactly and the result does not depend on the order in which
    units are combined (``a + b``).
    """

    count: int
    """Pixels per band."""
    sum: tuple[int, ...]
    sumsq: tuple[int, ...]

    @classmethod
    def zeros(cls, n_bands: int) -> BandSums:
        return cls(0, (0,) * n_bands, (0,) * n_bands)

    @classmethod
    def of(cls, images: list[np.ndarray], n_bands: int) -> BandSums:
        """Sums over views, each int16 ``(C, y, x)``; exact int64 per band, then Python ints."""
        s = np.zeros(n_bands, dtype=np.int64)
        ss = np.zeros(n_bands, dtype=np.int64)
        count = 0
        for image in images:
            flat = image.reshape(n_bands, -1)
            s += flat.sum(axis=1, dtype=np.int64)
            wide = flat.astype(np.int64)
            ss += np.einsum("ij,ij->i", wide, wide)
            count += flat.shape[1]
        return cls(count, tuple(int(v) for v in s), tuple(int(v) for v in ss))

    def __add__(self, other: BandSums) -> BandSums:
        return BandSums(
            self.count + other.count,
            tuple(a + b for a, b in zip(self.sum, other.sum)),
            tuple(a + b for a, b in zip(self.sumsq, other.sumsq)),
        )

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-band mean and population std (NaN without pixels)."""
        n = self.count
        if n == 0:
            nan = [float("nan")] * len(self.sum)
            return nan, list(nan)
        mean = [a / n for a in self.sum]
        std = [math.sqrt(max(b * n - a * a, 0) / n**2) for a, b in zip(self.sum, self.sumsq)]
        return mean, std

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sum": list(self.sum), "sumsq": list(self.sumsq)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BandSums:
        return cls(
            int(d["count"]), tuple(int(v) for v in d["sum"]), tuple(int(v) for v in d["sumsq"])
        )


@dataclass(frozen=True)
class UnitResult:
    """Everything one work unit wrote: its done-marker (see docs/FORMAT.md, build files)."""

    name: str
    key: str
    """SHA-256 of the unit's inputs; a marker counts as done only for the same key."""
    index: int
    slot_start: int
    n_slots: int
    locations: tuple[StoredLocation, ...]
    """Stored locations, by slot."""
    views: tuple[ViewRecord, ...]
    """Stored views, by slot and timestamp."""
    dropped_views: tuple[DroppedView, ...]
    dropped_patches: tuple[int, ...]
    """Planned locations left with no valid view (not stored)."""
    failed_products: dict[str, str]
    """Products whose reads failed: product id -> message."""
    stats: BandSums

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "index": self.index,
            "slot_start": self.slot_start,
            "n_slots": self.n_slots,
            "locations": [r.to_dict() for r in self.locations],
            "views": [r.to_dict() for r in self.views],
            "dropped_views": [r.to_dict() for r in self.dropped_views],
            "dropped_patches": list(self.dropped_patches),
            "failed_products": dict(sorted(self.failed_products.items())),
            "stats": self.stats.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnitResult:
        return cls(
            str(d["name"]),
            str(d["key"]),
            int(d["index"]),
            int(d["slot_start"]),
            int(d["n_slots"]),
            tuple(StoredLocation.from_dict(r) for r in d["locations"]),
            tuple(ViewRecord.from_dict(r) for r in d["views"]),
            tuple(DroppedView.from_dict(r) for r in d["dropped_views"]),
            tuple(int(p) for p in d["dropped_patches"]),
            {str(k): str(v) for k, v in d["failed_products"].items()},
            BandSums.from_dict(d["stats"]),
        )
