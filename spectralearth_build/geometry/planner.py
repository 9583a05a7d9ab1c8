"""The planner: tiles in, patch plan out, from footprints alone, in parallel per component.

Tiles enter with their planning footprints (clear-sky where the catalog has them, see
:mod:`.tiles`), so every patch lies in clear sky in every view; tiles whose clear area cannot hold
one patch take no part.  Stages (each timed in the summary):

1. ``graph``: the tile-overlap graph (:mod:`.graph`) and the planning groups: connected
   components of the graph, merged where tiles of two components touch (consecutive tiles of a
   datatake, tiles overlapping by less than a patch), so that patches of different groups can
   never overlap and every group is planned on its own, by a plain function
   (:func:`plan_group`), in this process or on Dask workers through ``map_fn``.  The exact
   overlap areas, the bulk of this stage, are computed in chunks through the same ``map_fn``.
   Each group's job carries only its own tiles (:meth:`.TileSet.subset`, checked and
   reprojected once) and edges; groups go out largest first, in batches of about
   :data:`BATCH_TILES` tiles.
2. ``tuples``: the n-tuple beam search (:mod:`.tuples`) of the group.
3. ``placement``: regions are processed longest series first.  Multi-timestamp tuples in order of
   (more tiles first, larger intersection area first, smaller sorted member indices first); each
   tuple's intersection polygon (in its frame) is filled greedily (:mod:`.patches`), in two
   sweeps: one patch lattice per region (the phase that fits most patches) for all tuples, then
   fine-grid positions for all tuples, which fill the gaps.  Where several tuples cover one
   place, the longer tuple comes first and takes it.  Then, if ``include_single``, each tile's
   own footprint (larger footprints first, then time order) receives single-timestamp patches
   wherever nothing was placed, in the same two sweeps.
4. ``views``: with ``complete_views``, every placed patch also gets every other tile that covers
   it fully, is a graph neighbour of all its original tiles and is a different acquisition from
   every view already there (taken in time order).  This repairs what the beam may have cut and
   turns "single" patches that lie under another tile into multi-timestamp ones.
5. ``windows``: patch grids and per-view source windows.  A view on the patch's lattice gets
   exactly ``patch_grid.window_in(tile.grid)``; a view from another frame gets the window of the
   patch box (densified, reprojected into the tile CRS) padded by ``resample_pad_px`` and
   clipped to the tile, and ``resampled=True``.  A group returns its patches as columns
   (:class:`GroupPlan`: a few arrays, cheap to send back from a worker); ``merge`` turns the
   columns of all groups into :class:`~spectralearth_build.plan.PlannedPatch` records.

Plan order: more views first, then group (by its earliest tile), then placement order inside the
group.  Patch ids are 0..N-1 in that order.  Groups are independent and all iteration runs over
sorted integer indices, so the same tiles and config give the same plan bytes in any process and
with any number of workers.  Stage seconds of groups are summed over groups (worker time).
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import shapely

from ..config import PlanConfig
from ..grid import PixelGrid, Window
from ..plan import PatchView, PlannedPatch
from ..records import TileRecord
from .graph import (
    adjacency,
    candidate_pairs,
    components,
    graph_from_edges,
    lonlat_rtree,
    overlap_edges,
    planning_groups,
    touching_pairs,
)
from .patches import Placer
from .tiles import TileSet, reproject
from .tuples import search

MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]
BATCH_TILES = 256
"""Small planning groups are sent to workers in batches of about this many tiles."""
GROUP_STAGES = ("tuples", "placement", "views", "windows")


@dataclass(frozen=True)
class PlanResult:
    """The plan (``patches``), a JSON-able ``summary`` and the overlap ``graph``."""

    patches: list[PlannedPatch]
    summary: dict[str, Any]
    graph: nx.Graph = field(repr=False, compare=False)

    def file_metadata(self, config: Any) -> dict[str, Any]:
        """Metadata for the plan file: config and summary without timings (reproducible bytes).

        Write a plan with ``write_plan(result.patches, path, result.file_metadata(config))``
        (:func:`spectralearth_build.plan.write_plan`).
        """
        summary = {k: v for k, v in self.summary.items() if k != "seconds"}
        return {"config": config.to_dict(), "summary": summary}


@dataclass(frozen=True)
class GroupJob:
    """One planning group: its tiles (planning footprints, time order) and overlap edges."""

    tileset: TileSet
    """The group's tiles (:meth:`TileSet.subset` of the archive's)."""
    pairs: np.ndarray
    """``(m, 2)`` overlap edges as indices into ``tileset``."""
    components: np.ndarray
    """``(n,)`` component id (of the whole archive's overlap graph) per tile."""


@dataclass(frozen=True)
class GroupPlan:
    """The patches of one group in group order, as columns, and the group's statistics.

    Columns rather than :class:`~spectralearth_build.plan.PlannedPatch` objects, so that a plan
    travels from a worker as a few arrays (cheap to pickle); :func:`_merge` makes the patches.
    Patch ``k`` has the ``patch_px`` x ``patch_px`` grid whose north-west corner is
    ``origin[k]`` in the CRS of frame ``frame[k]`` and the views
    ``view_start[k]:view_start[k + 1]`` (ascending time).
    """

    frame_crs: tuple[str, ...]
    """CRS per frame of the group."""
    frame: np.ndarray
    """``(p,)`` frame index per patch."""
    origin: np.ndarray
    """``(p, 2)`` ``x_west, y_north`` of each patch grid, metres."""
    component: np.ndarray
    """``(p,)`` component id per patch."""
    view_start: np.ndarray
    """``(p + 1,)`` offsets of the patches' views in the ``view_*`` columns."""
    view_tile: np.ndarray
    """``(v,)`` tile index (into the group's tiles) per view."""
    view_window: np.ndarray
    """``(v, 4)`` ``row_off, col_off, height, width`` of each view in its tile's grid, pixels."""
    view_resampled: np.ndarray
    """``(v,)`` True where the view's tile is on another frame than the patch."""
    tuples_by_size: dict[int, int]
    placed_by_tuple_size: dict[int, int]
    seconds: dict[str, float]

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def n_views(self) -> np.ndarray:
        """``(p,)`` views per patch."""
        return np.diff(self.view_start)


def plan_patches(
    tiles: list[TileRecord], config: PlanConfig, map_fn: MapFn | None = None
) -> PlanResult:
    """Plan multi-timestamp (and, if configured, single-timestamp) patches for ``tiles``.

    Args:
        tiles: tile records; their clear-sky footprints are used where present.
        config: planning settings.
        map_fn: an order-preserving ``map`` (e.g. :func:`spectralearth_build.cluster.client_map`
            of a Dask client) that plans batches of groups in parallel; None plans here.  The
            plan is the same either way.

    Returns:
        A :class:`PlanResult`: ``patches`` (patch ids 0..N-1, more timestamps first; each with
        its ``patch_px`` x ``patch_px`` pixel grid and per-view source windows in pixels),
        a JSON-able ``summary`` (counts, stage seconds) and the overlap ``graph`` (edge
        attribute ``area`` in m2).

    Raises:
        PlanningError: an invalid plan config or tile record (the message names the tile/key).
    """
    seconds: dict[str, float] = {}
    t_start = t0 = time.perf_counter()
    mapper: MapFn = map if map_fn is None else _pickled_items(map_fn)  # type: ignore[assignment]
    tileset = TileSet.build(tiles, config)
    n = len(tileset)
    candidates = candidate_pairs(tileset)
    pairs, areas = overlap_edges(tileset, candidates, mapper)
    graph = graph_from_edges(tileset, pairs, areas)
    comp = components(n, pairs)
    touching = touching_pairs(tileset, candidates, comp, tileset.res)
    groups = planning_groups(n, pairs, touching)
    seconds["graph"] = time.perf_counter() - t0

    jobs = _group_jobs(tileset, pairs, comp, groups)
    batches = _batches(jobs)
    plans: list[GroupPlan | None] = [None] * len(jobs)
    for batch, result in zip(
        batches, mapper(_PlanBatch(config), [[jobs[g] for g in b] for b in batches])
    ):
        for g, plan in zip(batch, result):
            plans[g] = plan
    done = [p for p in plans if p is not None]
    for stage in GROUP_STAGES:
        seconds[stage] = sum(p.seconds[stage] for p in done)

    t0 = time.perf_counter()
    patches = _merge(jobs, done, config)
    seconds["merge"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start

    tuples_by_size: Counter[int] = Counter()
    placed_by_size: Counter[int] = Counter()
    for plan in done:
        tuples_by_size.update(plan.tuples_by_size)
        placed_by_size.update(plan.placed_by_tuple_size)
    summary = _summary(tileset, pairs, comp, groups, tuples_by_size, placed_by_size, done)
    summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return PlanResult(patches, summary, graph)


def _group_jobs(
    tileset: TileSet, pairs: np.ndarray, comp: np.ndarray, groups: list[list[int]]
) -> list[GroupJob]:
    group_of = np.zeros(len(tileset), dtype=np.int64)
    local = np.zeros(len(tileset), dtype=np.int64)
    for g, members in enumerate(groups):
        group_of[members] = g
        local[members] = np.arange(len(members))
    by_group: list[list[tuple[int, int]]] = [[] for _ in groups]
    for a, b in pairs.tolist():
        by_group[int(group_of[a])].append((int(local[a]), int(local[b])))
    return [
        GroupJob(
            tileset.subset(members),
            np.array(by_group[g], dtype=np.int64).reshape(-1, 2),
            comp[members],
        )
        for g, members in enumerate(groups)
    ]


def _batches(jobs: list[GroupJob]) -> list[list[int]]:
    """Group indices in batches of about :data:`BATCH_TILES` tiles, largest groups first.

    Depends on the groups only (never on the number of workers).
    """
    order = sorted(range(len(jobs)), key=lambda g: (-len(jobs[g].tileset), g))
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for g in order:
        if current and size + len(jobs[g].tileset) > BATCH_TILES:
            batches.append(current)
            current, size = [], 0
        current.append(g)
        size += len(jobs[g].tileset)
    if current:
        batches.append(current)
    return batches


def _pickled_items(map_fn: MapFn) -> MapFn:
    """``map_fn`` with every item sent as pickled bytes and unpickled by the task.

    Dask passes bytes on as they are, whereas objects inside a task (tiles with their
    footprints) are unpickled and pickled again on their way through the scheduler, which runs
    in this process and would take several CPU seconds from it.
    """

    def mapper(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        blobs = [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]
        return map_fn(_Unpickle(fn), blobs)

    return mapper


class _Unpickle:
    """Picklable ``fn(pickle.loads(blob))``."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn

    def __call__(self, blob: bytes) -> Any:
        return self.fn(pickle.loads(blob))


class _PlanBatch:
    """Picklable :func:`plan_group` over a batch of groups, bound to a config."""

    def __init__(self, config: PlanConfig):
        self.config = config

    def __call__(self, jobs: list[GroupJob]) -> list[GroupPlan]:
        return [plan_group(job, self.config) for job in jobs]


def plan_group(job: GroupJob, config: PlanConfig) -> GroupPlan:
    """Plan one group: tuples, placement, views and windows (a plain function, no I/O)."""
    seconds: dict[str, float] = {}
    tileset = dataclasses.replace(job.tileset, config=config, _cache={}, _bounds={})
    pairs = job.pairs
    nbrs = adjacency(len(tileset), pairs)

    t0 = time.perf_counter()
    stats: dict[str, Any] = {}
    tuples = search(tileset, pairs, stats)
    seconds["tuples"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tile_tree = lonlat_rtree(tileset.lonlat_bounds) if len(tileset.frames) > 1 else None
    placer = Placer(tileset, tile_tree)
    placer.choose_phases()
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
    origin = np.zeros((len(order), 2))
    view_tile: list[int] = []
    view_window: list[tuple[int, int, int, int]] = []
    view_resampled: list[bool] = []
    view_start = [0]
    for k, p in enumerate(order):
        placed = placer.placed[p]
        x0, _, _, y1 = placer.patch_box(placed.frame, placed.ci, placed.cj)
        origin[k] = x0, y1
        for v in views[p]:
            window, resampled = _view_window(tileset, placed.frame, x0, y1, v)
            view_tile.append(v)
            view_window.append(window)
            view_resampled.append(resampled)
        view_start.append(len(view_tile))
    seconds["windows"] = time.perf_counter() - t0
    return GroupPlan(
        frame_crs=tuple(f.crs for f in tileset.frames),
        frame=np.array([placer.placed[p].frame for p in order], dtype=np.int64),
        origin=origin,
        component=np.array([job.components[views[p][0]] for p in order], dtype=np.int64),
        view_start=np.array(view_start, dtype=np.int64),
        view_tile=np.array(view_tile, dtype=np.int64),
        view_window=np.array(view_window, dtype=np.int64).reshape(-1, 4),
        view_resampled=np.array(view_resampled, dtype=bool),
        tuples_by_size={int(k): int(v) for k, v in stats.get("tuples_by_size", {}).items()},
        placed_by_tuple_size=dict(Counter(len(p.members) for p in placer.placed)),
        seconds=seconds,
    )


def _merge(jobs: list[GroupJob], plans: list[GroupPlan], config: PlanConfig) -> list[PlannedPatch]:
    """The patches of all groups in plan order (more views, group, group order), ids 0..N-1."""
    n_views = np.concatenate([p.n_views for p in plans] + [np.zeros(0, np.int64)])
    group = np.concatenate([np.full(len(p), g) for g, p in enumerate(plans)] + [np.zeros(0)])
    rank = np.concatenate([np.arange(len(p)) for p in plans] + [np.zeros(0)])
    order = np.lexsort((rank, group, -n_views))
    res, size = config.pixel_size_m, config.patch_px
    columns = []
    for job, plan in zip(jobs, plans):
        tiles = job.tileset.tiles
        views = [
            PatchView(tiles[t].tile_id, tiles[t].start_time, Window(*w), r)
            for t, w, r in zip(
                plan.view_tile.tolist(), plan.view_window.tolist(), plan.view_resampled.tolist()
            )
        ]
        crs = [plan.frame_crs[f] for f in plan.frame.tolist()]
        columns.append(
            (crs, plan.origin.tolist(), plan.view_start.tolist(), views, plan.component.tolist())
        )
    patches = []
    for pid, (g, k) in enumerate(zip(group[order].tolist(), rank[order].tolist())):
        crs, origin, start, views, comp = columns[int(g)]
        k = int(k)
        x0, y1 = origin[k]
        grid = PixelGrid(crs[k], (res, 0.0, x0, 0.0, -res, y1), (size, size))
        patches.append(PlannedPatch(pid, grid, tuple(views[start[k] : start[k + 1]]), comp[k]))
    return patches


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
def _view_window(
    tileset: TileSet, frame: int, x0: float, y1: float, v: int
) -> tuple[tuple[int, int, int, int], bool]:
    """Source window of tile ``v`` for a patch, and whether the view is resampled.

    The patch has its north-west corner at ``(x0, y1)`` in ``frame``; the window is
    ``(row_off, col_off, height, width)`` in the tile's grid, pixels.
    """
    res = tileset.res
    size = tileset.config.patch_px
    tile = tileset.tiles[v]
    if tileset.frame_of[v] == frame:
        window = Window(
            round((tile.grid.transform[5] - y1) / res),
            round((x0 - tile.grid.transform[2]) / res),
            size,
            size,
        )
        resampled = False
    else:
        crs = tileset.frames[frame].crs
        grid = PixelGrid(crs, (res, 0.0, x0, 0.0, -res, y1), (size, size))
        window = _resampled_window(tileset, grid, tile)
        resampled = True
    if not tile.grid.contains_window(window):
        raise AssertionError(
            f"patch window {window} falls outside tile {tile.tile_id} ({tile.grid.shape_yx})"
        )
    return (window.row_off, window.col_off, window.height, window.width), resampled


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
    groups: list[list[int]],
    tuples_by_size: Counter[int],
    placed_by_size: Counter[int],
    plans: list[GroupPlan],
) -> dict[str, Any]:
    degrees = np.bincount(pairs.reshape(-1), minlength=len(tileset))
    comp_sizes = np.bincount(comp) if len(comp) else np.zeros(0, dtype=np.int64)
    size_hist = Counter(comp_sizes.tolist())
    n_views = np.concatenate([p.n_views for p in plans] + [np.zeros(0, np.int64)])
    by_t = Counter(n_views.tolist())
    return {
        "tiles": len(tileset),
        "tiles_without_clear_patch": len(tileset.excluded),
        "frames": [f"{f.crs} +({f.ox:g}, {f.oy:g})" for f in tileset.frames],
        "edges": int(len(pairs)),
        "components": int(len(comp_sizes)),
        "largest_components": sorted(comp_sizes.tolist(), reverse=True)[:10],
        "component_size_histogram": {str(k): size_hist[k] for k in sorted(size_hist)},
        "planning_groups": len(groups),
        "largest_planning_groups": sorted((len(g) for g in groups), reverse=True)[:10],
        "max_degree": int(degrees.max()) if len(degrees) else 0,
        "mean_degree": round(float(degrees.mean()), 3) if len(degrees) else 0.0,
        "tiles_with_degree_30_or_more": int((degrees >= 30).sum()),
        "tuples_by_size": {str(k): tuples_by_size[k] for k in sorted(tuples_by_size)},
        "patches": len(n_views),
        "multi_timestamp_patches": sum(n for t, n in by_t.items() if t >= 2),
        "patches_by_timestamps": {str(k): by_t[k] for k in sorted(by_t)},
        "placed_by_tuple_size": {str(k): placed_by_size[k] for k in sorted(placed_by_size)},
        "views": int(n_views.sum()),
        "resampled_views": sum(int(p.view_resampled.sum()) for p in plans),
    }
