"""Running work units: one plain function per unit, and a thin Dask layer over many.

:func:`run_unit` carries out one unit with no Dask in sight.  Per source tile (in order of first
use by the unit's locations) it reads the bounding window of all the unit's views in that tile
once: first the quality layers, to drop cloudy and snowy views before touching the spectral
image, then the kept bands of the image for the surviving views only.  Each view is then a
slice of that region (or, for a tile on another grid, a resampled slice).  Views failing the
nodata check are dropped.  As soon as every tile feeding a shard has been read, the shard is
assembled (time series padded with nodata to ``T_max``) and written with one full-shard
assignment, and its views are added to the unit's band sums (exact int64).  The unit's done
marker (its tables and sums, as JSON) is written last, so a marker means the data is on disk.

:func:`run_units` runs units in this process or on a ``distributed.Client`` with deterministic
task keys (the unit's name, a hash of its inputs), skipping units whose marker exists.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import ExtractConfig
from ..grid import Window
from ..plan import PatchView
from . import pixels
from .reader import NODATA, QUALITY_FLAGS, TileReader
from .store import open_images, read_marker, write_block, write_marker
from .units import WorkUnit


@dataclass(frozen=True)
class UnitContext:
    """What every unit needs besides its patches: output, band selection, layout, checks."""

    out: str
    band_indices: tuple[int, ...]
    t_max: int
    patch_px: int
    config: ExtractConfig


@dataclass
class _Kept:
    image: np.ndarray
    record: dict[str, Any]


def run_unit(
    unit: WorkUnit, reader: TileReader, ctx: UnitContext, arr: Any = None
) -> dict[str, Any]:
    """Extract one unit, write its shards and its done marker; return the marker's content."""
    if arr is None:
        arr = open_images(ctx.out, mode="r+")
    k = arr.shards[0]
    bands = np.asarray(ctx.band_indices, dtype=np.int64)
    n_bands = bands.size

    # view lists per tile, tiles in order of first use, tiles pending per shard
    by_tile: dict[str, list[tuple[int, int, PatchView]]] = {}
    for pos, patch in enumerate(unit.patches):
        for j, view in enumerate(patch.views):
            by_tile.setdefault(view.tile_id, []).append((pos, j, view))
    n_shards = unit.n_slots // k
    pending: list[set[str]] = [set() for _ in range(n_shards)]
    for pos, patch in enumerate(unit.patches):
        pending[pos // k].update(v.tile_id for v in patch.views)

    kept: dict[int, dict[int, _Kept]] = {}
    dropped: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    locations: list[dict[str, Any]] = []
    count = 0
    sums = np.zeros(n_bands, dtype=np.int64)
    sumsq = np.zeros(n_bands, dtype=np.int64)

    def drop(pos: int, view: PatchView, reason: str, **extra: Any) -> None:
        dropped.append(
            {
                "patch_id": unit.patches[pos].patch_id,
                "tile_id": view.tile_id,
                "time": view.start_time.isoformat(),
                "reason": reason,
                **extra,
            }
        )

    def flush(shard: int) -> None:
        nonlocal count, sums, sumsq
        block = np.full((k, ctx.t_max, n_bands, ctx.patch_px, ctx.patch_px), NODATA, np.int16)
        for pos in range(shard * k, min((shard + 1) * k, len(unit.patches))):
            patch = unit.patches[pos]
            views = kept.pop(pos, {})
            if not views:
                continue
            for t, j in enumerate(sorted(views)):
                item = views[j]
                block[pos - shard * k, t] = item.image
                flat = item.image.reshape(n_bands, -1)
                sums += flat.sum(axis=1, dtype=np.int64)
                wide = flat.astype(np.int64)
                sumsq += np.einsum("ij,ij->i", wide, wide)
                count += flat.shape[1]
                records.append({**item.record, "slot": unit.slot(pos), "t": t})
            locations.append(
                {"patch_id": patch.patch_id, "slot": unit.slot(pos), "n_views": len(views)}
            )
        write_block(arr, unit.slot_start + shard * k, block)

    for shard in range(n_shards):
        if not pending[shard]:
            flush(shard)
    for tile_id, items in by_tile.items():
        _extract_tile(tile_id, items, unit, reader, ctx, bands, kept, drop, failed)
        for shard in range(n_shards):
            if tile_id in pending[shard]:
                pending[shard].discard(tile_id)
                if not pending[shard]:
                    flush(shard)

    locations.sort(key=lambda r: r["slot"])
    records.sort(key=lambda r: (r["slot"], r["t"]))
    kept_ids = {r["patch_id"] for r in locations}
    result = {
        "name": unit.name,
        "key": unit.key,
        "index": unit.index,
        "slot_start": unit.slot_start,
        "n_slots": unit.n_slots,
        "locations": locations,
        "views": records,
        "dropped_views": dropped,
        "dropped_patches": [p.patch_id for p in unit.patches if p.patch_id not in kept_ids],
        "failed_products": dict(sorted(failed.items())),
        "stats": {"count": count, "sum": sums.tolist(), "sumsq": sumsq.tolist()},
    }
    write_marker(ctx.out, unit.name, result)
    return result


def _extract_tile(
    tile_id: str,
    items: list[tuple[int, int, PatchView]],
    unit: WorkUnit,
    reader: TileReader,
    ctx: UnitContext,
    bands: np.ndarray,
    kept: dict[int, dict[int, _Kept]],
    drop: Callable[..., None],
    failed: dict[str, str],
) -> None:
    """Read one tile's region for the unit once and keep the views that pass the checks."""
    from ..enmap.product import ProductError

    cfg = ctx.config
    try:
        grid = reader.grid(tile_id)
        info = reader.info(tile_id)
    except ProductError as exc:
        failed[tile_id] = str(exc)
        for pos, _, view in items:
            drop(pos, view, pixels.READ_FAILED_REASON)
        return

    # windows actually read per view (clipped for resampled views)
    candidates: list[tuple[int, int, PatchView, Window]] = []
    for pos, j, view in items:
        if view.resampled:
            w = pixels.clip_window(view.window, grid)
        else:
            w = view.window if grid.contains_window(view.window) else None
        if w is None:
            drop(pos, view, pixels.OUTSIDE_REASON)
        else:
            candidates.append((pos, j, view, w))
    if not candidates:
        return

    # 1. quality layers over the bounding window, then per-view fractions
    region = pixels.bounding_window(w for *_, w in candidates)
    try:
        layers = {name: reader.read_layer(tile_id, name, region) for name in QUALITY_FLAGS}
    except ProductError as exc:
        failed[tile_id] = str(exc)
        for pos, _, view, _ in candidates:
            drop(pos, view, pixels.READ_FAILED_REASON)
        return
    survivors = []
    for pos, j, view, w in candidates:
        patch_grid = unit.patches[pos].grid
        view_layers: dict[str, np.ndarray | None] = {}
        for name, layer in layers.items():
            if layer is None:
                view_layers[name] = None
                continue
            piece = layer[pixels.relative(w, region)]
            if view.resampled:
                piece = pixels.reproject_to(
                    piece[None], grid.crop(w), patch_grid, "nearest", nodata=None
                )[0]
            view_layers[name] = piece
        cloud, snow = pixels.flag_fractions(view_layers, patch_grid.shape_yx)
        reason = pixels.quality_reason(cloud, snow, cfg)
        if reason:
            drop(pos, view, reason, cloud_fraction=cloud, snow_fraction=snow)
        else:
            survivors.append((pos, j, view, w, cloud, snow))
    del layers
    if not survivors:
        return

    # 2. the kept bands of the image, once, over the survivors' bounding window
    region = pixels.bounding_window(s[3] for s in survivors)
    try:
        image = reader.read_image(tile_id, region, bands)
    except ProductError as exc:
        failed[tile_id] = str(exc)
        for pos, _, view, *_ in survivors:
            drop(pos, view, pixels.READ_FAILED_REASON)
        return
    for pos, j, view, w, cloud, snow in survivors:
        patch_grid = unit.patches[pos].grid
        piece = image[(slice(None), *pixels.relative(w, region))]
        if view.resampled:
            piece = pixels.reproject_to(piece, grid.crop(w), patch_grid, cfg.resampling)
        if piece.shape[1:] != patch_grid.shape_yx:
            drop(pos, view, pixels.OUTSIDE_REASON)
            continue
        if pixels.has_nodata(piece):
            drop(pos, view, pixels.NODATA_REASON, cloud_fraction=cloud, snow_fraction=snow)
            continue
        record = {
            "patch_id": unit.patches[pos].patch_id,
            "time": view.start_time.isoformat(),
            "product": tile_id,
            "datatake": info.datatake,
            "tile": info.tile,
            "processor_version": info.processor_version,
            "window": view.window.to_list(),
            "resampled": bool(view.resampled),
            "cloud_fraction": cloud,
            "snow_fraction": snow,
        }
        kept.setdefault(pos, {})[j] = _Kept(np.array(piece, dtype=np.int16, copy=True), record)


def _run_unit_task(unit: WorkUnit, reader: TileReader, ctx: UnitContext) -> dict[str, Any]:
    """Dask task body: run the unit unless a marker for this exact unit already exists."""
    done = read_marker(ctx.out, unit.name)
    if done is not None and done.get("key") == unit.key:
        return done
    return run_unit(unit, reader, ctx)


def run_units(
    units: list[WorkUnit],
    reader: TileReader,
    ctx: UnitContext,
    client: Any = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the units not yet done (in this process if ``client`` is None); results in unit order.

    ``on_done`` is called once per unit as it finishes (for progress), including units found
    done from an earlier run.
    """
    results: dict[int, dict[str, Any]] = {}
    todo = []
    for unit in units:
        done = read_marker(ctx.out, unit.name)
        if done is not None and done.get("key") == unit.key:
            results[unit.index] = done
            if on_done:
                on_done(done)
        else:
            todo.append(unit)
    if client is None:
        arr = open_images(ctx.out, mode="r+") if todo else None
        for unit in todo:
            res = run_unit(unit, reader.subset(set(unit.tile_ids)), ctx, arr)
            results[unit.index] = res
            if on_done:
                on_done(res)
    elif todo:
        from distributed import as_completed

        futures = [
            client.submit(
                _run_unit_task,
                unit,
                reader.subset(set(unit.tile_ids)),
                ctx,
                key=f"extract-{unit.name}",
                pure=False,
                priority=-unit.index,
            )
            for unit in todo
        ]
        try:
            for fut in as_completed(futures, loop=client.loop):
                res = fut.result()
                results[res["index"]] = res
                if on_done:
                    on_done(res)
        finally:
            client.cancel([f for f in futures if not f.done()])
    return [results[u.index] for u in units]


def drop_counts(results: list[dict[str, Any]]) -> dict[str, int]:
    """Dropped views by reason, over all units."""
    c: Counter[str] = Counter(d["reason"] for r in results for d in r["dropped_views"])
    return dict(sorted(c.items()))
