"""Running work units: one plain function per unit, and a thin Dask layer over many.

:func:`run_unit` carries out one unit with no Dask in sight.  Per source tile (in order of first
use by the unit's locations) it reads the bounding window of all the unit's views in that tile
once: first the quality layers, to drop cloudy and snowy views before touching the spectral
image, then the kept bands of the image for the surviving views only.  Each view is then a
slice of that region (or, for a tile on another grid, a resampled slice).  Views failing the
nodata check are dropped.  As soon as every tile feeding a shard has been read, the shard is
assembled (time series padded with nodata to ``T_max``) and written with one full-shard
assignment, and its views are added to the unit's band sums (exact integers).  The unit's state
(kept pixels, drops, records) lives in one small object with ``drop`` / ``keep`` / ``flush``.
The unit's result (:class:`~.results.UnitResult`: its tables and sums) is written last as its
done-marker, so a marker means the data is on disk.

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
from ..errors import ProductError
from ..formats import NODATA
from ..grid import Window
from ..plan import PatchView
from . import pixels
from .reader import QUALITY_FLAGS, TileInfo, TileReader
from .results import BandSums, DroppedView, StoredLocation, UnitResult, ViewRecord
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


class _UnitState:
    """One unit in progress: views kept so far, drops, failures; shards flushed as they fill.

    :meth:`drop` records a planned view that is not stored, :meth:`keep` holds a view's pixels
    until its shard is complete, :meth:`flush` assembles a shard (time series padded with nodata
    to ``T_max``), writes it and turns its views into records and band sums.
    """

    def __init__(self, unit: WorkUnit, ctx: UnitContext, arr: Any):
        self.unit = unit
        self.ctx = ctx
        self.arr = arr
        self.k = int(arr.shards[0])
        self.n_bands = len(ctx.band_indices)
        self.kept: dict[int, dict[int, tuple[np.ndarray, _ViewSource]]] = {}
        self.dropped: list[DroppedView] = []
        self.failed: dict[str, str] = {}
        self.locations: list[StoredLocation] = []
        self.views: list[ViewRecord] = []
        self.stats = BandSums.zeros(self.n_bands)

    def drop(
        self,
        pos: int,
        view: PatchView,
        reason: str,
        cloud: float | None = None,
        snow: float | None = None,
    ) -> None:
        """Record that view ``view`` of the unit's ``pos``-th patch is not stored."""
        self.dropped.append(
            DroppedView(
                self.unit.patches[pos].patch_id,
                view.tile_id,
                view.start_time.isoformat(),
                reason,
                cloud,
                snow,
            )
        )

    def fail(self, tile_id: str, exc: Exception, items: list[tuple[int, PatchView]]) -> None:
        """A read of ``tile_id`` failed: record it and drop the views that needed it."""
        self.failed[tile_id] = str(exc)
        for pos, view in items:
            self.drop(pos, view, pixels.READ_FAILED_REASON)

    def keep(self, pos: int, j: int, image: np.ndarray, source: _ViewSource) -> None:
        """Hold view ``j`` (plan order) of patch ``pos``: int16 ``(C, P, P)``."""
        self.kept.setdefault(pos, {})[j] = (np.array(image, dtype=np.int16, copy=True), source)

    def flush(self, shard: int) -> None:
        """Write the unit's ``shard``-th shard with the views kept for its patches."""
        k, ctx, unit = self.k, self.ctx, self.unit
        block = np.full((k, ctx.t_max, self.n_bands, ctx.patch_px, ctx.patch_px), NODATA, np.int16)
        for pos in range(shard * k, min((shard + 1) * k, len(unit.patches))):
            views = self.kept.pop(pos, {})
            if not views:
                continue
            slot = unit.slot(pos)
            images = []
            for t, j in enumerate(sorted(views)):
                image, source = views[j]
                block[pos - shard * k, t] = image
                images.append(image)
                self.views.append(source.record(slot, t))
            self.stats = self.stats + BandSums.of(images, self.n_bands)
            self.locations.append(StoredLocation(unit.patches[pos].patch_id, slot, len(views)))
        write_block(self.arr, unit.slot_start + shard * k, block)

    def result(self) -> UnitResult:
        unit = self.unit
        stored = {r.patch_id for r in self.locations}
        return UnitResult(
            name=unit.name,
            key=unit.key,
            index=unit.index,
            slot_start=unit.slot_start,
            n_slots=unit.n_slots,
            locations=tuple(sorted(self.locations, key=lambda r: r.slot)),
            views=tuple(sorted(self.views, key=lambda r: (r.slot, r.t))),
            dropped_views=tuple(self.dropped),
            dropped_patches=tuple(p.patch_id for p in unit.patches if p.patch_id not in stored),
            failed_products=dict(sorted(self.failed.items())),
            stats=self.stats,
        )


@dataclass(frozen=True)
class _ViewSource:
    """Where a kept view came from, until its slot and timestamp index are known."""

    patch_id: int
    time: str
    info: TileInfo
    window: Window
    resampled: bool
    cloud: float
    snow: float

    def record(self, slot: int, t: int) -> ViewRecord:
        return ViewRecord(
            self.patch_id,
            slot,
            t,
            self.time,
            self.info.tile_id,
            self.info.datatake,
            self.info.tile,
            self.info.processor_version,
            self.window,
            self.resampled,
            self.cloud,
            self.snow,
        )


def run_unit(unit: WorkUnit, reader: TileReader, ctx: UnitContext, arr: Any = None) -> UnitResult:
    """Extract one unit, write its shards and its done marker; return the marker's content."""
    if arr is None:
        arr = open_images(ctx.out, mode="r+")
    state = _UnitState(unit, ctx, arr)
    k = state.k
    bands = np.asarray(ctx.band_indices, dtype=np.int64)

    # view lists per tile, tiles in order of first use, tiles pending per shard
    by_tile: dict[str, list[tuple[int, int, PatchView]]] = {}
    for pos, patch in enumerate(unit.patches):
        for j, view in enumerate(patch.views):
            by_tile.setdefault(view.tile_id, []).append((pos, j, view))
    n_shards = unit.n_slots // k
    pending: list[set[str]] = [set() for _ in range(n_shards)]
    for pos, patch in enumerate(unit.patches):
        pending[pos // k].update(v.tile_id for v in patch.views)

    for shard in range(n_shards):
        if not pending[shard]:
            state.flush(shard)
    for tile_id, items in by_tile.items():
        _extract_tile(tile_id, items, reader, bands, state)
        for shard in range(n_shards):
            if tile_id in pending[shard]:
                pending[shard].discard(tile_id)
                if not pending[shard]:
                    state.flush(shard)

    result = state.result()
    write_marker(ctx.out, result)
    return result


def _extract_tile(
    tile_id: str,
    items: list[tuple[int, int, PatchView]],
    reader: TileReader,
    bands: np.ndarray,
    state: _UnitState,
) -> None:
    """Read one tile's region for the unit once and keep the views that pass the checks."""
    unit, cfg = state.unit, state.ctx.config
    try:
        grid = reader.grid(tile_id)
        info = reader.info(tile_id)
    except ProductError as exc:
        state.fail(tile_id, exc, [(pos, view) for pos, _, view in items])
        return

    # windows actually read per view (clipped for resampled views)
    candidates: list[tuple[int, int, PatchView, Window]] = []
    for pos, j, view in items:
        if view.resampled:
            w = pixels.clip_window(view.window, grid)
        else:
            w = view.window if grid.contains_window(view.window) else None
        if w is None:
            state.drop(pos, view, pixels.OUTSIDE_REASON)
        else:
            candidates.append((pos, j, view, w))
    if not candidates:
        return

    # 1. quality layers over the bounding window, then per-view fractions
    region = pixels.bounding_window(w for *_, w in candidates)
    try:
        layers = {name: reader.read_layer(tile_id, name, region) for name in QUALITY_FLAGS}
    except ProductError as exc:
        state.fail(tile_id, exc, [(pos, view) for pos, _, view, _ in candidates])
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
            state.drop(pos, view, reason, cloud, snow)
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
        state.fail(tile_id, exc, [(pos, view) for pos, _, view, *_ in survivors])
        return
    for pos, j, view, w, cloud, snow in survivors:
        patch_grid = unit.patches[pos].grid
        piece = image[(slice(None), *pixels.relative(w, region))]
        if view.resampled:
            piece = pixels.reproject_to(piece, grid.crop(w), patch_grid, cfg.resampling)
        if piece.shape[1:] != patch_grid.shape_yx:
            state.drop(pos, view, pixels.OUTSIDE_REASON)
            continue
        if pixels.has_nodata(piece):
            state.drop(pos, view, pixels.NODATA_REASON, cloud, snow)
            continue
        source = _ViewSource(
            unit.patches[pos].patch_id,
            view.start_time.isoformat(),
            info,
            view.window,
            bool(view.resampled),
            cloud,
            snow,
        )
        state.keep(pos, j, piece, source)


def _run_unit_task(unit: WorkUnit, reader: TileReader, ctx: UnitContext) -> UnitResult:
    """Dask task body: run the unit unless a marker for this exact unit already exists."""
    done = read_marker(ctx.out, unit.name)
    if done is not None and done.key == unit.key:
        return done
    return run_unit(unit, reader, ctx)


def run_units(
    units: list[WorkUnit],
    reader: TileReader,
    ctx: UnitContext,
    client: Any = None,
    on_done: Callable[[UnitResult], None] | None = None,
) -> list[UnitResult]:
    """Run the units not yet done (in this process if ``client`` is None); results in unit order.

    Args:
        units: the work units (:func:`.units.make_units`), in order.
        reader: reads the source tiles; each unit gets ``reader.subset`` of its tiles.
        ctx: output folder, band selection and store layout.
        client: a ``distributed.Client``, or None to run in this process.
        on_done: called once per unit as it finishes (for progress), including units found
            done from an earlier run.
    """
    results: dict[int, UnitResult] = {}
    todo = []
    for unit in units:
        done = read_marker(ctx.out, unit.name)
        if done is not None and done.key == unit.key:
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
                results[res.index] = res
                if on_done:
                    on_done(res)
        finally:
            client.cancel([f for f in futures if not f.done()])
    return [results[u.index] for u in units]


def drop_counts(results: list[UnitResult]) -> dict[str, int]:
    """Dropped views by reason, over all units."""
    c: Counter[str] = Counter(d.reason for r in results for d in r.dropped_views)
    return dict(sorted(c.items()))
