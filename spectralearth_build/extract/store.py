"""The dataset directory and its Zarr v3 store (the layout is documented in docs/FORMAT.md).

``OUT/data.zarr`` holds one array, ``images``, shaped ``(slots, T_max, C, P, P)`` int16, laid
out as a :class:`~spectralearth_build.formats.StoreLayout`: one inner chunk per view
``(1, 1, C, P, P)`` (format version 2), grouped into shards of ``locations_per_shard``
locations with their whole time series, so a 500k-location dataset is tens of thousands of
files, not millions, and a single-view read decodes one view.  Each work unit owns whole shards
and writes each of them exactly once with one full-shard assignment; chunks that are entirely
nodata (padding timestamps, unused slots) are not stored.

The rest of ``OUT`` is small files written by the driver: the build manifest, the catalog and
plan, one done-marker per unit (JSON, written after the unit's shards), the tables, the report
and, last of all, ``_COMPLETE``.  File names are in :mod:`spectralearth_build.formats`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config import BuildConfig, ExtractConfig
from ..errors import InputError
from ..formats import (
    ARRAY_NAME,
    COMPLETE,
    COMPRESSORS,
    DIMENSIONS,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    NODATA,
    STORE_NAME,
    UNITS_DIR,
    StoreLayout,
)
from ..plan import PlannedPatch
from .results import UnitResult


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


def plan_layout(patches: list[PlannedPatch], config: BuildConfig, n_slots: int = 0) -> StoreLayout:
    """The store layout for a plan: ``T_max``, bands, patch size, shard size, codec.

    Args:
        patches: the plan; all patches must be square and of one size.
        config: band selection and ``extract`` settings (shard size, codec).
        n_slots: locations along axis 0 (set once the work units are known).
    """
    sizes = {p.grid.shape_yx for p in patches}
    if len(sizes) > 1 or any(h != w for h, w in sizes):
        raise InputError(f"plan patches must all be square and of one size, got {sorted(sizes)}")
    patch_px = sizes.pop()[0] if sizes else config.plan.patch_px
    t_max = max((p.n_views for p in patches), default=1)
    n_bands, ex = config.bands.count, config.extract
    k = locations_per_shard(ex, t_max, n_bands, patch_px)
    return StoreLayout.for_store(
        n_slots, t_max, n_bands, patch_px, k, ex.compressor, ex.compression_level
    )


def compressors(name: str, level: int) -> list[Any]:
    """Zarr v3 bytes-to-bytes codecs for a compressor name (see ``COMPRESSORS``)."""
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if name == "zstd":
        return [ZstdCodec(level=level)]
    if name == "blosc-zstd":
        return [BloscCodec(cname="zstd", clevel=level, shuffle="bitshuffle", typesize=2)]
    if name == "blosc-lz4":
        return [BloscCodec(cname="lz4", clevel=level, shuffle="bitshuffle", typesize=2)]
    if name in ("gzip", "deflate"):
        return [GzipCodec(level=level)]
    if name == "none":
        return []
    raise ValueError(f"unknown compressor {name!r}; known: {list(COMPRESSORS)}")


def create_images(out: str | Path, layout: StoreLayout) -> Any:
    """Create ``OUT/data.zarr/images`` with ``layout`` (or open it if it exists with it)."""
    import zarr

    path = Path(out) / STORE_NAME
    if (path / ARRAY_NAME / "zarr.json").exists():
        arr = zarr.open_array(store=str(path / ARRAY_NAME), mode="r+")
        if (arr.shape, arr.chunks, arr.shards) != (layout.shape, layout.chunks, layout.shards):
            raise ValueError(
                f"{path}: existing images array {arr.shape} chunks {arr.chunks} shards "
                f"{arr.shards} does not match the plan "
                f"({layout.shape}, {layout.chunks}, {layout.shards})"
            )
        return arr
    group = zarr.open_group(store=str(path), mode="a", zarr_format=3)
    return group.create_array(
        ARRAY_NAME,
        shape=layout.shape,
        chunks=layout.chunks,
        shards=layout.shards,
        dtype="int16",
        fill_value=NODATA,
        compressors=compressors(layout.compressor, layout.compression_level),
        dimension_names=DIMENSIONS,
        config={"write_empty_chunks": False},
    )


def open_images(out: str | Path, mode: str = "r") -> Any:
    """The ``images`` array of the dataset in ``out``."""
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


# -- unit markers ---------------------------------------------------------------------------------
def marker_path(out: str | Path, unit_name: str) -> Path:
    """``OUT/units/<unit_name>.json``."""
    return Path(out) / UNITS_DIR / f"{unit_name}.json"


def write_marker(out: str | Path, result: UnitResult) -> None:
    """Write a unit's done-marker (after its shards)."""
    atomic_write_text(marker_path(out, result.name), json.dumps(result.to_dict(), sort_keys=True))


def read_marker(out: str | Path, unit_name: str) -> UnitResult | None:
    """The unit's result if its marker exists, else None."""
    path = marker_path(out, unit_name)
    if not path.exists():
        return None
    return UnitResult.from_dict(json.loads(path.read_text()))


# -- the build manifest ---------------------------------------------------------------------------
def build_manifest(config: BuildConfig, tiles: Path) -> dict[str, Any]:
    """The content of ``OUT/build.json`` for a build of ``tiles`` with ``config``."""
    return {
        "kind": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "config": config.to_dict(),
        "inputs": inputs_fingerprint(tiles),
    }


def inputs_fingerprint(tiles: Path) -> str:
    """Hash of the input folder's file names (relative) and sizes: cheap, detects changes."""
    h = hashlib.sha256()
    tiles = Path(tiles)
    if tiles.is_file():
        h.update(f"{tiles.name}\0{tiles.stat().st_size}\n".encode())
        return h.hexdigest()
    for root, dirs, files in os.walk(tiles):
        dirs.sort()
        for f in sorted(files):
            p = Path(root, f)
            h.update(f"{p.relative_to(tiles).as_posix()}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()


def check_or_write_manifest(out: Path, manifest: dict[str, Any], resume: bool) -> bool:
    """Write ``OUT/build.json`` or check it matches; True if an earlier build is continued."""
    path = out / MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        for key, what in (
            ("format_version", "store format version"),
            ("config", "config"),
            ("inputs", "input products"),
            ("plan_sha256", "plan"),
        ):
            if key in manifest and old.get(key) != manifest[key]:
                raise InputError(
                    f"{out}: the build there used a different {what}; resume it with the same "
                    "--tiles and --config, or choose a new --out"
                )
        return True
    if resume:
        raise InputError(f"--resume: {out} holds no build to resume ({MANIFEST} missing)")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: folder exists and is not a dataset build; choose a new one")
    atomic_write_text(path, json.dumps(manifest, sort_keys=True, indent=1))
    return False


def store_bytes(out: Path) -> int:
    """Bytes on disk under ``OUT/data.zarr``."""
    total = 0
    for root, _, files in os.walk(Path(out) / STORE_NAME):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def is_complete(out: Path) -> bool:
    """True once ``OUT/_COMPLETE`` exists."""
    return (Path(out) / COMPLETE).exists()
