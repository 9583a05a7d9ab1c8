"""``spectralearth-build info``: a one-screen summary of a built dataset.

:func:`store_info` gathers the facts from the files a build leaves in ``OUT`` (the store's
attributes and array metadata, the index and view tables, ``build.json`` and ``report.json``)
through :func:`~spectralearth_build.dataset.open_dataset`, without reading any pixel;
:func:`format_info` lays them out as text.  Label and task attributes (group attributes
``labels`` and ``tasks``) are shown generically, whatever they hold, when a store has them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import formats as fmt


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict, or ``{}`` when it does not exist."""
    return json.loads(path.read_text()) if path.exists() else {}


def array_metadata(ds: Any) -> dict[str, Any]:
    """The ``zarr.json`` of the dataset's images array (shape, chunks, codecs)."""
    return read_json(Path(ds.path) / fmt.STORE_NAME / fmt.ARRAY_NAME / "zarr.json")


def describe_codecs(meta: dict[str, Any]) -> str:
    """Human-readable codec chain of a Zarr v3 array, e.g. ``blosc zstd level 5, bitshuffle``."""

    def one(codec: dict[str, Any]) -> str:
        name, conf = codec.get("name", "?"), codec.get("configuration", {})
        if name == "blosc":
            return f"blosc {conf.get('cname')} level {conf.get('clevel')}, {conf.get('shuffle')}"
        if name in ("zstd", "gzip"):
            return f"{name} level {conf.get('level')}"
        return str(name)

    def chain(codecs: list[dict[str, Any]]) -> list[str]:
        out = []
        for c in codecs:
            if c.get("name") == "sharding_indexed":
                out.extend(chain(c.get("configuration", {}).get("codecs", [])))
            elif c.get("name") not in ("bytes", "transpose"):
                out.append(one(c))
        return out

    names = chain(meta.get("codecs", []))
    return " + ".join(names) if names else "none (uncompressed)"


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def store_info(out: str | Path, ds: Any = None) -> dict[str, Any]:
    """Summary of the dataset in ``out`` (JSON-serialisable).

    Args:
        out: a dataset folder written by ``build-dataset``.
        ds: the dataset, if already open (``open_dataset(out)``).

    Returns:
        ``locations``, ``views``, ``locations_by_timestamps`` (number of timestamps -> number of
        locations), ``time_range`` (ISO dates), ``crs`` (CRS -> locations), ``bands``,
        ``wavelength_nm`` (min, max), ``patch_px``, ``t_max``, ``codec``, ``chunks``, ``shards``,
        ``store_bytes``, ``labels`` and ``tasks`` (the store attributes, when present),
        ``build`` (package version, format version, input fingerprint), ``config`` and
        ``report`` (``report.json``).
    """
    from ..dataset import open_dataset

    ds = ds if ds is not None else open_dataset(out)
    path = Path(out)
    attrs = ds.attrs
    meta = array_metadata(ds)
    n_views = ds.index["n_views"].value_counts().sort_index()
    times = ds.views["time"]
    wl = ds.wavelengths
    manifest = read_json(path / fmt.MANIFEST)
    shard_shape = meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    inner = [c for c in meta.get("codecs", []) if c.get("name") == "sharding_indexed"]
    chunk_shape = inner[0]["configuration"]["chunk_shape"] if inner else shard_shape
    return {
        "path": str(path),
        "locations": int(len(ds)),
        "views": int(len(ds.views)),
        "locations_by_timestamps": {str(int(k)): int(v) for k, v in n_views.items()},
        "time_range": (
            [times.min().date().isoformat(), times.max().date().isoformat()] if len(times) else []
        ),
        "crs": {str(k): int(v) for k, v in ds.index["crs"].value_counts().sort_index().items()},
        "bands": int(len(ds.band_indices)),
        "wavelength_nm": [float(wl.min()), float(wl.max())] if wl.size else [],
        "patch_px": int(attrs.get("patch_px", 0)),
        "t_max": int(attrs.get("t_max", 0)),
        "shape": meta.get("shape"),
        "chunks": chunk_shape,
        "shards": shard_shape,
        "codec": describe_codecs(meta),
        "store_bytes": dir_bytes(path / fmt.STORE_NAME),
        "labels": attrs.get("labels"),
        "tasks": attrs.get("tasks"),
        "build": {
            "package_version": attrs.get("package_version"),
            "format_version": attrs.get("format_version"),
            "inputs": manifest.get("inputs"),
        },
        "config": attrs.get("config", {}),
        "report": read_json(path / fmt.REPORT),
    }


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def flatten(value: Any, prefix: str = "", max_list: int = 6) -> Iterator[tuple[str, str]]:
    """``(dotted key, text)`` pairs of a nested value; long lists shown by their length."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k), max_list)
    elif isinstance(value, list | tuple) and (
        len(value) > max_list or any(isinstance(v, dict | list) for v in value)
    ):
        yield prefix, f"[{len(value)} items]"
    else:
        yield prefix, json.dumps(value) if isinstance(value, list | tuple) else str(value)


def format_info(info: dict[str, Any]) -> str:
    """The text form of :func:`store_info`: about one screen."""
    rep = info["report"]
    by_t = ", ".join(
        f"{n} with {t}"
        for t, n in sorted(info["locations_by_timestamps"].items(), key=lambda kv: int(kv[0]))
    )
    wl = info["wavelength_nm"]
    lines = [
        f"dataset    {info['path']}",
        f"locations  {info['locations']} ({by_t} timestamps)",
        f"views      {info['views']}"
        + (f", {info['time_range'][0]} .. {info['time_range'][1]}" if info["time_range"] else ""),
        "crs        " + ", ".join(f"{c} {n}" for c, n in info["crs"].items()),
        f"bands      {info['bands']}"
        + (f", {wl[0]:.0f} .. {wl[1]:.0f} nm" if wl else ", no wavelengths recorded"),
        f"patches    {info['patch_px']} x {info['patch_px']} px, "
        f"room for {info['t_max']} timestamps",
        f"store      {human_bytes(info['store_bytes'])}, {info['codec']}, "
        f"chunks {info['chunks']}, shards {info['shards']}",
    ]
    if rep:
        prod = rep.get("products", {})
        skipped = {k: v for k, v in prod.get("by_status", {}).items() if k != "ok" and v}
        n_ok = prod.get("by_status", {}).get("ok", 0)
        lines.append(
            f"products   {prod.get('products', 0)} found, {n_ok} ok"
            + "".join(f", {n} {s}" for s, n in skipped.items())
        )
        drops = rep.get("dropped_views", {})
        lines.append(
            f"dropped    {sum(drops.values())} views"
            + (" (" + ", ".join(f"{n} {r}" for r, n in drops.items()) + ")" if drops else "")
            + f", {rep.get('dropped_patches', 0)} locations"
        )
    for key in ("labels", "tasks"):
        value = info.get(key)
        if value:
            lines.append(f"{key}:")
            lines.extend(f"  {k}: {v}" for k, v in flatten(value))
        else:
            lines.append(f"{key:<10} none")
    b = info["build"]
    lines.append(
        f"built by   spectralearth-build {b['package_version']} (format {b['format_version']}), "
        f"inputs {str(b['inputs'] or '?')[:12]}"
    )
    cfg = info["config"]
    if cfg:
        p, e = cfg.get("plan", {}), cfg.get("extract", {})
        lines.append(
            f"config     patch_px {p.get('patch_px')}, max_tuple_size {p.get('max_tuple_size')}, "
            f"max_cloud_fraction {e.get('max_cloud_fraction')}, "
            f"max_snow_fraction {e.get('max_snow_fraction')}, compressor {e.get('compressor')}"
        )
    return "\n".join(lines)
