"""Names and layout of everything a dataset folder holds, defined once (see docs/FORMAT.md).

The builder (:mod:`.build`, :mod:`.extract`), the loader (:mod:`.dataset`), the synthetic
store writer (:mod:`.synthstore`) and the tests all take file names, array and dimension names,
table columns, the nodata value and format versions from here.  :class:`StoreLayout` is the
shape, chunking, sharding and codec of the ``images`` array: the one value that store creation
takes.  The module imports nothing beyond the standard library, so any of them can use it.

Format versions of ``data.zarr/images`` (attribute ``format_version``):

* 1: one chunk per location, ``(1, T_max, C, P, P)``: the whole time series in one read;
* 2: one chunk per view, ``(1, 1, C, P, P)``, inside the same shards ``(k, T_max, C, P, P)``:
  a single-view sample decodes one view, a pair two, a whole series ``n_views`` chunks (padding
  timestamps are never stored).  Written by this version; version 1 stores still open.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

FORMAT_NAME = "spectralearth-build"
FORMAT_VERSION = 2
"""Written by this version of the package."""
READABLE_FORMAT_VERSIONS = (1, 2)
"""Store layouts the loader reads."""

NODATA = -32768
"""int16 fill of EnMAP L2A products and of the store: background, missing, padding."""
SCALE_FACTOR = 1e-4
ADD_OFFSET = 0.0
UNITS = "reflectance x 10000"

# -- files of a dataset folder ----------------------------------------------------------------
STORE_NAME = "data.zarr"
ARRAY_NAME = "images"
MANIFEST = "build.json"
CATALOG = "catalog.parquet"
PLAN = "plan.parquet"
UNITS_DIR = "units"
INDEX = "index.parquet"
VIEWS = "views.parquet"
DROPPED = "dropped_views.parquet"
REPORT = "report.json"
COMPLETE = "_COMPLETE"

DIMENSIONS = ("location", "time", "band", "y", "x")
"""Dimension names of ``images``, in axis order."""

# -- tables -------------------------------------------------------------------------------------
INDEX_COLUMNS = (
    "patch_id",
    "slot",
    "n_views",
    "view_start",
    "crs",
    "transform",
    "height",
    "width",
    "component",
    "unit",
    "footprint_native",
    "geometry",
)
"""Columns of ``index.parquet``, in order."""
VIEW_COLUMNS = (
    "patch_id",
    "slot",
    "t",
    "time",
    "product",
    "datatake",
    "tile",
    "processor_version",
    "row_off",
    "col_off",
    "height",
    "width",
    "resampled",
    "cloud_fraction",
    "snow_fraction",
)
"""Columns of ``views.parquet``, in order."""
WINDOW_COLUMNS = ("row_off", "col_off", "height", "width")
"""The view's source window, as four columns of ``views.parquet``."""
DROPPED_COLUMNS = ("patch_id", "product", "time", "reason", "cloud_fraction", "snow_fraction")
"""Columns of ``dropped_views.parquet``, in order."""

# -- codecs -------------------------------------------------------------------------------------
COMPRESSORS = ("blosc-lz4", "blosc-zstd", "zstd", "gzip", "none")
"""Names accepted by ``extract.compressor`` (``deflate`` is an alias of ``gzip``)."""


@dataclass(frozen=True)
class StoreLayout:
    """Shape, chunks, shards and codec of ``images`` (axes ``(location, time, band, y, x)``).

    ``chunks`` are the inner chunks (what one read decodes), ``shards`` the files.
    """

    shape: tuple[int, int, int, int, int]
    chunks: tuple[int, int, int, int, int]
    shards: tuple[int, int, int, int, int]
    compressor: str
    """One of :data:`COMPRESSORS`."""
    compression_level: int
    format_version: int = FORMAT_VERSION

    @classmethod
    def for_store(
        cls,
        n_slots: int,
        t_max: int,
        n_bands: int,
        patch_px: int,
        locations_per_shard: int,
        compressor: str,
        compression_level: int,
        format_version: int = FORMAT_VERSION,
    ) -> StoreLayout:
        """The layout of a store of ``n_slots`` locations of ``t_max`` x ``n_bands`` x P x P.

        Args:
            n_slots: locations (slots) along axis 0, a multiple of ``locations_per_shard``.
            t_max: timestamps per location (axis 1).
            n_bands: bands (axis 2).
            patch_px: patch side P in pixels (axes 3, 4).
            locations_per_shard: locations per shard file.
            compressor: one of :data:`COMPRESSORS`.
            compression_level: codec level (ignored by ``none``).
            format_version: 2 (one chunk per view) or 1 (one chunk per location).
        """
        if format_version not in READABLE_FORMAT_VERSIONS:
            raise ValueError(f"unknown format_version {format_version}")
        t_chunk = 1 if format_version >= 2 else t_max
        return cls(
            shape=(n_slots, t_max, n_bands, patch_px, patch_px),
            chunks=(1, t_chunk, n_bands, patch_px, patch_px),
            shards=(locations_per_shard, t_max, n_bands, patch_px, patch_px),
            compressor=compressor,
            compression_level=compression_level,
            format_version=format_version,
        )

    @property
    def locations_per_shard(self) -> int:
        return self.shards[0]

    @property
    def t_max(self) -> int:
        return self.shape[1]

    @property
    def n_bands(self) -> int:
        return self.shape[2]

    @property
    def patch_px(self) -> int:
        return self.shape[3]

    @property
    def n_slots(self) -> int:
        return self.shape[0]

    def with_slots(self, n_slots: int) -> StoreLayout:
        """The same layout for another number of slots."""
        return dataclasses.replace(self, shape=(n_slots, *self.shape[1:]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "shards": list(self.shards),
            "compressor": self.compressor,
            "compression_level": self.compression_level,
            "format_version": self.format_version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoreLayout:
        return cls(
            tuple(int(v) for v in d["shape"]),  # type: ignore[arg-type]
            tuple(int(v) for v in d["chunks"]),  # type: ignore[arg-type]
            tuple(int(v) for v in d["shards"]),  # type: ignore[arg-type]
            str(d["compressor"]),
            int(d["compression_level"]),
            int(d["format_version"]),
        )


def view_chunk_bytes(n_bands: int, patch_px: int) -> int:
    """Uncompressed bytes of one view (int16 ``(C, P, P)``)."""
    return 2 * n_bands * patch_px * patch_px
