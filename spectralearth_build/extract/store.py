"""The dataset directory and its Zarr v3 store (the layout is documented in docs/FORMAT.md).

``OUT/data.zarr`` holds one array, ``images``, shaped ``(slots, T_max, C, P, P)`` int16: one
chunk per location holding its whole time series (unused timestamps are nodata, which the
compressor reduces to almost nothing), grouped into shards of ``locations_per_shard`` locations
along the first axis, so a 500k-location dataset is tens of thousands of files, not millions.
Each work unit owns whole shards and writes each of them exactly once with one full-shard
assignment; chunks that are entirely nodata are not stored.

The rest of ``OUT`` is small files written by the driver: the build manifest, the catalog and
plan, one done-marker per unit (JSON, written after the unit's shards), the tables, the report
and, last of all, ``_COMPLETE``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ExtractConfig
from .reader import NODATA

FORMAT_VERSION = 1
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
COMPRESSORS = ("zstd", "blosc-zstd", "gzip", "none")


def locations_per_shard(config: ExtractConfig, t_max: int, n_bands: int, patch_px: int) -> int:
    """Shard size along the location axis.

    The configured one, or (``locations_per_shard = 0``) the largest power of two whose
    uncompressed shard stays within ``shard_max_mib`` (at least 1).
    """
    if config.locations_per_shard > 0:
        return config.locations_per_shard
    chunk = t_max * n_bands * patch_px * patch_px * 2
    k = max(1, (config.shard_max_mib * 2**20) // chunk)
    return 1 << (int(k).bit_length() - 1)


def compressors(name: str, level: int) -> list[Any]:
    """Zarr v3 bytes-to-bytes codecs for a compressor name (see ``COMPRESSORS``)."""
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if name == "zstd":
        return [ZstdCodec(level=level)]
    if name == "blosc-zstd":
        return [BloscCodec(cname="zstd", clevel=level, shuffle="bitshuffle", typesize=2)]
    if name in ("gzip", "deflate"):
        return [GzipCodec(level=level)]
    if name == "none":
        return []
    raise ValueError(f"unknown compressor {name!r}; known: {list(COMPRESSORS)}")


def create_images(
    out: Path,
    n_slots: int,
    t_max: int,
    n_bands: int,
    patch_px: int,
    shard_locations: int,
    config: ExtractConfig,
) -> Any:
    """Create ``OUT/data.zarr/images`` (or open it if it exists with the same layout)."""
    import zarr

    path = Path(out) / STORE_NAME
    shape = (n_slots, t_max, n_bands, patch_px, patch_px)
    chunks = (1, t_max, n_bands, patch_px, patch_px)
    shards = (shard_locations, *chunks[1:])
    if (path / ARRAY_NAME / "zarr.json").exists():
        arr = zarr.open_array(store=str(path / ARRAY_NAME), mode="r+")
        if arr.shape != shape or arr.chunks != chunks or arr.shards != shards:
            raise ValueError(
                f"{path}: existing images array {arr.shape} chunks {arr.chunks} shards "
                f"{arr.shards} does not match the plan ({shape}, {chunks}, {shards})"
            )
        return arr
    group = zarr.open_group(store=str(path), mode="a", zarr_format=3)
    return group.create_array(
        ARRAY_NAME,
        shape=shape,
        chunks=chunks,
        shards=shards,
        dtype="int16",
        fill_value=NODATA,
        compressors=compressors(config.compressor, config.compression_level),
        dimension_names=DIMENSIONS,
        config={"write_empty_chunks": False},
    )


def open_images(out: str | Path, mode: str = "r") -> Any:
    import zarr

    return zarr.open_array(store=str(Path(out) / STORE_NAME / ARRAY_NAME), mode=mode)


def write_block(arr: Any, slot: int, block: np.ndarray) -> None:
    """Write ``block`` (whole shards) at location ``slot``: a single full-shard assignment."""
    k = arr.shards[0]
    if slot % k or block.shape[0] % k:
        raise ValueError(f"block at slot {slot} of {block.shape[0]} locations is not shard-aligned")
    try:
        arr[slot : slot + block.shape[0]] = block
    except OSError as exc:
        if exc.filename is not None:
            raise
        key = arr.metadata.encode_chunk_key((slot // k,) + (0,) * (arr.ndim - 1))
        root = getattr(arr.store, "root", "")
        where = f"{root}/{arr.path}/{key}".replace("//", "/") if root else key
        raise OSError(exc.errno, exc.strerror, where) from exc


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:  # no half-written file is left behind; the error names the target
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    tmp.replace(path)


def marker_path(out: str | Path, unit_name: str) -> Path:
    return Path(out) / UNITS_DIR / f"{unit_name}.json"


def write_marker(out: str | Path, unit_name: str, result: dict[str, Any]) -> None:
    atomic_write_text(marker_path(out, unit_name), json.dumps(result, sort_keys=True))


def read_marker(out: str | Path, unit_name: str) -> dict[str, Any] | None:
    path = marker_path(out, unit_name)
    if not path.exists():
        return None
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def store_bytes(out: Path) -> int:
    """Bytes on disk under ``OUT/data.zarr``."""
    total = 0
    for root, _, files in os.walk(Path(out) / STORE_NAME):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def is_complete(out: Path) -> bool:
    return (Path(out) / COMPLETE).exists()
