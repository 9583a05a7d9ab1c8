"""The planner: tiles in, patch plan out, from footprints alone.

Stages (each timed in the summary):

1. ``graph``: the tile-overlap graph (:mod:`.graph`).
2. ``tuples``: the n-tuple beam search (:mod:`.tuples`).
3. ``placement``: regions are processed longest series first.  Multi-timestamp tuples in order of
   (more tiles first, larger intersection area first, smaller sorted member indices first); each
   tuple's intersection polygon (in its frame) is filled greedily (:mod:`.patches`), in two
   sweeps: coarse-grid positions for all tuples, then fine-grid positions for all tuples.
   Where several tuples cover one place, the longer tuple comes first and takes it.  Then, if
   ``include_single``, each tile's own footprint (larger footprints first, then time order)
   receives single-timestamp patches wherever nothing was placed, in the same two sweeps.
4. ``views``: with ``complete_views``, every placed patch also gets every other tile that covers
   it fully, is a graph neighbour of all its original tiles and is a different acquisition from
   every view already there (taken in time order).  This repairs what the beam may have cut and
   turns "single" patches that lie under another tile into multi-timestamp ones.
5. ``windows``: patch grids and per-view source windows.  A view on the patch's lattice gets
   exactly ``patch_grid.window_in(tile.grid)``; a view from another frame gets the window of the
   patch box (densified, reprojected into the tile CRS) padded by ``resample_pad_px`` and
   clipped to the tile, and ``resampled=True``.

Plan order: more views first, then placement order.  Patch ids are 0..N-1 in that order.  All
iteration runs over sorted integer indices, so the same tiles and config give the same plan in
any process.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import shapely

from ..config import PlanConfig
from ..grid import PixelGrid, Window
from ..plan import PatchView, PlannedPatch, write_plan
from ..records import TileRecord
from .graph import adjacency, components, graph_from_edges, lonlat_rtree, overlap_edges
from .patches import Placed, Placer
from .tiles import TileSet, reproject
from .tuples import search


@dataclass(frozen=True)
class PlanResult:
    """The plan (``patches``), a JSON-able ``summary`` and the overlap ``graph``."""

    patches: list[PlannedPatch]
    summary: dict[str, Any]
    graph: nx.Graph = field(repr=False, compare=False)

    def file_metadata(self, config: Any) -> dict[str, Any]:
        """Metadata for the plan file: config and summary without timings (reproducible bytes)."""
        summary = {k: v for k, v in self.summary.items() if k != "seconds"}
        return {"config": config.to_dict(), "summary": summary}

    def write(self, path: str | Path, config: Any) -> None:
        """Write the plan with :func:`spectralearth_build.plan.write_plan`."""
        write_plan(self.patches, path, self.file_metadata(config))


def plan_patches(tiles: list[TileRecord], config: PlanConfig) -> PlanResult:
    """Plan multi-timestamp (and, if configured, single-timestamp) patches for ``tiles``."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    tileset = TileSet.build(tiles, config)
    pairs, areas = overlap_edges(tileset)
    graph = graph_from_edges(tileset, pairs, areas)
    comp = components(len(tileset), pairs)
    nbrs = adjacency(len(tileset), pairs)
    seconds["graph"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    stats: dict[str, Any] = {}
    tuples = search(tileset, pairs, stats)
    seconds["tuples"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tile_tree = lonlat_rtree(tileset.lonlat_bounds) if len(tileset.frames) > 1 else None
    placer = Placer(tileset, tile_tree)
    multi = sorted(tuples, key=lambda t: (-t.size, -t.area, t.members))
    del tuples
    for aligned in (True, False):
        for t in multi:
            placer.place(t.geometry, t.frame, t.members, aligned)
    if config.include_single:
        fp_areas = [t.footprint.area for t in tileset.tiles]
        singles = sorted(range(len(tileset)), key=lambda i: (-fp_areas[i], i))
        for aligned in (True, False):
            for i in singles:
                placer.place(tileset.tiles[i].footprint, int(tileset.frame_of[i]), (i,), aligned)
    del multi
    seconds["placement"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    views = [p.members for p in placer.placed]
    if config.complete_views:
        views = _complete_views(tileset, placer, nbrs)
    seconds["views"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    order = sorted(range(len(placer.placed)), key=lambda p: (-len(views[p]), p))
    patches = [
        _planned_patch(tileset, placer, placer.placed[p], views[p], pid, int(comp[views[p][0]]))
        for pid, p in enumerate(order)
    ]
    seconds["windows"] = time.perf_counter() - t0
    seconds["total"] = sum(seconds.values())

    summary = _summary(tileset, pairs, comp, nbrs, stats, placer, patches)
    summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return PlanResult(patches, summary, graph)


# -- view completion ---------------------------------------------------------------------------
def _complete_views(
    tileset: TileSet, placer: Placer, nbrs: list[frozenset[int]]
) -> list[tuple[int, ...]]:
    placed = placer.placed
    pairs_p: list[int] = []
    pairs_c: list[int] = []
    for p in placed:
        m = p.members
        common = nbrs[m[0]].intersection(*(nbrs[x] for x in m[1:]))
        for c in sorted(common):
            pairs_p.append(p.seq)
            pairs_c.append(c)
    covers = np.zeros(len(pairs_p), dtype=bool)
    if pairs_p:
        pp, cc = np.array(pairs_p), np.array(pairs_c)
        frames = np.array([placed[p].frame for p in pairs_p])
        order = np.lexsort((pp, frames, cc))
        # group by (candidate tile, frame): one prepared footprint against many boxes
        keys = np.column_stack([cc[order], frames[order]])
        starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])
        ends = np.r_[starts[1:], len(order)]
        for s, e in zip(starts.tolist(), ends.tolist()):
            idx = order[s:e]
            c, f = int(cc[idx[0]]), int(frames[idx[0]])
            fp = tileset.footprint(c, f)
            shapely.prepare(fp)
            boxes = shapely.box(
                *np.array([placer.patch_box(f, placed[p].ci, placed[p].cj) for p in pp[idx]]).T
            )
            covers[idx] = shapely.covers(fp, boxes)
    extra: dict[int, list[int]] = {}
    for seq, c, ok in zip(pairs_p, pairs_c, covers.tolist()):
        if ok:
            extra.setdefault(seq, []).append(c)
    out = []
    for p in placed:
        views = list(p.members)
        for c in extra.get(p.seq, []):  # ascending tile index = time order
            if all(tileset.compatible(c, v) for v in views):
                views.append(c)
        out.append(tuple(sorted(views)))
    return out


# -- patch records ---------------------------------------------------------------------------
def _planned_patch(
    tileset: TileSet,
    placer: Placer,
    p: Placed,
    views: tuple[int, ...],
    patch_id: int,
    component: int,
) -> PlannedPatch:
    res = tileset.res
    size = tileset.config.patch_px
    x0, _, _, y1 = placer.patch_box(p.frame, p.ci, p.cj)
    crs = tileset.frames[p.frame].crs
    grid = PixelGrid(crs, (res, 0.0, x0, 0.0, -res, y1), (size, size))
    out = []
    for v in views:
        tile = tileset.tiles[v]
        if tileset.frame_of[v] == p.frame:
            window = Window(
                round((tile.grid.transform[5] - y1) / res),
                round((x0 - tile.grid.transform[2]) / res),
                size,
                size,
            )
            resampled = False
        else:
            window = _resampled_window(tileset, grid, tile)
            resampled = True
        if not tile.grid.contains_window(window):
            raise AssertionError(
                f"patch window {window} falls outside tile {tile.tile_id} ({tile.grid.shape_yx})"
            )
        out.append(PatchView(tile.tile_id, tile.start_time, window, resampled))
    return PlannedPatch(patch_id, grid, tuple(out), component)


def _resampled_window(tileset: TileSet, grid: PixelGrid, tile: TileRecord) -> Window:
    """Source window in ``tile`` covering ``grid`` reprojected, padded, clipped to the tile."""
    box = reproject(shapely.box(*grid.bounds), grid.crs, tile.crs, grid.res * 8)
    minx, miny, maxx, maxy = box.bounds
    a, _, c, _, e, f = tile.grid.transform
    pad = tileset.config.resample_pad_px
    col0 = max(0, math.floor((minx - c) / a) - pad)
    col1 = min(tile.grid.width, math.ceil((maxx - c) / a) + pad)
    row0 = max(0, math.floor((maxy - f) / e) - pad)
    row1 = min(tile.grid.height, math.ceil((miny - f) / e) + pad)
    return Window(row0, col0, max(0, row1 - row0), max(0, col1 - col0))


# -- summary -----------------------------------------------------------------------------------
def _summary(
    tileset: TileSet,
    pairs: np.ndarray,
    comp: np.ndarray,
    nbrs: list[frozenset[int]],
    stats: dict[str, Any],
    placer: Placer,
    patches: list[PlannedPatch],
) -> dict[str, Any]:
    degrees = np.array([len(s) for s in nbrs], dtype=np.int64)
    comp_sizes = np.bincount(comp) if len(comp) else np.zeros(0, dtype=np.int64)
    size_hist = Counter(comp_sizes.tolist())
    by_t = Counter(p.n_views for p in patches)
    placed_by_t = Counter(len(p.members) for p in placer.placed)
    return {
        "tiles": len(tileset),
        "frames": [f"{f.crs} +({f.ox:g}, {f.oy:g})" for f in tileset.frames],
        "edges": int(len(pairs)),
        "components": int(len(comp_sizes)),
        "largest_components": sorted(comp_sizes.tolist(), reverse=True)[:10],
        "component_size_histogram": {str(k): size_hist[k] for k in sorted(size_hist)},
        "max_degree": int(degrees.max()) if len(degrees) else 0,
        "mean_degree": round(float(degrees.mean()), 3) if len(degrees) else 0.0,
        "tiles_with_degree_30_or_more": int((degrees >= 30).sum()),
        "tuples_by_size": stats.get("tuples_by_size", {}),
        "patches": len(patches),
        "multi_timestamp_patches": sum(n for t, n in by_t.items() if t >= 2),
        "patches_by_timestamps": {str(k): by_t[k] for k in sorted(by_t)},
        "placed_by_tuple_size": {str(k): placed_by_t[k] for k in sorted(placed_by_t)},
        "views": sum(p.n_views for p in patches),
        "resampled_views": sum(v.resampled for p in patches for v in p.views),
    }
