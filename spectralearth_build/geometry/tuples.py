"""The n-tuple search: sets of tiles whose valid footprints share at least one patch area.

This is SpectralEarth's algorithm, run level by level over all tiles at once:

1. Level 2 is every edge of the overlap graph (a pair of different acquisitions sharing one
   patch area), with its intersection polygon.
2. Growth: each tuple ``T`` of the current level is extended by tiles adjacent to all members
   of ``T`` (common neighbours in the graph, so all members stay pairwise different
   acquisitions).  Crowded tiles (degree 30 and more) would make this explode, so each ``T``
   is extended by at most ``beam_width`` candidates, those whose bounding boxes overlap ``T``'s
   polygon the most (an upper bound of the new area; ties by index).  New tuples are
   deduplicated in canonical form (the sorted member indices of the frozenset) before any
   geometry is computed, so a tuple reached from several parents costs one intersection.  A
   bounding-box test prunes hopeless candidates; the rest are intersected in one vectorised
   shapely call (``T``'s polygon with the new footprint) and kept if the intersection still
   holds one patch area.
3. Beam: of the new tuples, those among the ``beam_width`` largest (by intersection area; ties:
   smaller sorted member indices first) of at least one of their members are kept, so every
   tile keeps its best candidates however crowded its neighbourhood is.  A level therefore
   holds at most ``tiles * beam_width`` tuples and costs at most ``beam_width`` intersections
   per tuple of the previous level.
4. Stop when a level has no valid tuple or ``max_tuple_size`` is reached.

Every tuple kept is returned, at every level (all pairs at level 2).  With ``beam_width`` at
least the number of tuples a tile belongs to and at least its degree, the search is exhaustive
(the tests compare it with brute-force enumeration).

Each tuple is computed in its *frame* (pixel lattice, see :mod:`.tiles`): the frame shared by
most members, ties going to the frame of the earliest member.  Members on another frame
contribute their reprojected footprint shrunk by the resampling margin, so the polygon is
directly the region where patches may be placed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from ..config import PlanConfig
from ..records import TileRecord
from .graph import adjacency, overlap_edges
from .tiles import TileSet


@dataclass(frozen=True)
class TupleCandidate:
    """An n-tuple: sorted tile indices, its frame and the area of its intersection (m2)."""

    members: tuple[int, ...]
    frame: int
    area: float
    geometry: BaseGeometry = field(compare=False, repr=False, default=None)  # type: ignore[assignment]
    """The intersection polygon in the frame's CRS."""

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class NTuple:
    """An n-tuple by tile ids (ascending start time), for callers outside the planner."""

    tile_ids: tuple[str, ...]
    crs: str
    area: float


def tuple_frame(tileset: TileSet, members: tuple[int, ...]) -> int:
    """The frame of a tuple: most members' frame; ties go to the earliest member's frame."""
    frames = [int(tileset.frame_of[m]) for m in members]
    counts = Counter(frames)
    best = max(counts.values())
    for f in frames:  # members are sorted by time, so this is the earliest of the tied frames
        if counts[f] == best:
            return f
    raise AssertionError("unreachable")


def drop_slivers(geoms: np.ndarray, side: float) -> np.ndarray:
    """The geometries without the parts that cannot hold a ``side x side`` patch.

    A patch lies inside one polygon part, so parts smaller than a patch in area, width or
    height are of no use; dropping them changes no placement but keeps the polygons of long
    tuples (intersections of footprints with cloud holes fall apart into slivers) small.
    Non-polygonal parts (lines, points of touching footprints) go too.
    """
    out = geoms.copy()
    multi = np.flatnonzero(shapely.get_type_id(geoms) != 3)  # 3: Polygon
    for k in multi.tolist():
        parts = shapely.get_parts(geoms[k])
        if len(parts) == 0:
            continue
        b = shapely.bounds(parts)
        ok = (
            (shapely.get_type_id(parts) == 3)
            & (shapely.area(parts) >= side * side * (1 - 1e-9))
            & (b[:, 2] - b[:, 0] >= side * (1 - 1e-9))
            & (b[:, 3] - b[:, 1] >= side * (1 - 1e-9))
        )
        if ok.all() and shapely.get_type_id(geoms[k]) == 6:  # MultiPolygon already clean
            continue
        kept = parts[ok]
        out[k] = kept[0] if len(kept) == 1 else shapely.multipolygons(kept)
    return out


def tuple_geometry(tileset: TileSet, members: tuple[int, ...], frame: int) -> BaseGeometry:
    """The intersection of the members' footprints in ``frame``."""
    return shapely.intersection_all([tileset.footprint(m, frame) for m in members])


@dataclass
class _Level:
    keys: list[tuple[int, ...]]
    frames: list[int]
    geoms: np.ndarray
    areas: np.ndarray


def _grow(
    tileset: TileSet,
    nbrs: list[frozenset[int]],
    parents: _Level,
    selected: list[int],
    cap: int | None,
) -> _Level:
    """Extend the selected parents by common neighbours; keep children of one patch area.

    With ``cap``, each parent is extended by at most ``cap`` neighbours: those whose bounding
    boxes overlap the parent's polygon the most (an upper bound on the child's area), ties by
    index.
    """
    threshold = tileset.patch_area * (1 - 1e-9)
    children: dict[tuple[int, ...], tuple[int, int]] = {}
    for p in selected:
        key = parents.keys[p]
        common = sorted(nbrs[key[0]].intersection(*(nbrs[m] for m in key[1:])))
        if cap is not None and len(common) > cap:
            common = _best_candidates(tileset, parents, p, common, cap)
        for c in common:
            child = tuple(sorted((*key, c)))
            if child not in children:
                children[child] = (p, c)
    keys = list(children)
    if not keys:
        return _Level([], [], np.zeros(0, dtype=object), np.zeros(0))
    parent_idx = np.array([children[k][0] for k in keys], dtype=np.int64)
    new_member = [children[k][1] for k in keys]
    # a member on the parent's frame keeps the parent's frame the majority (or the tie winner)
    fo = tileset.frame_of
    frames = [
        pf if fo[c] == pf else tuple_frame(tileset, k)
        for k, c, pf in zip(keys, new_member, (parents.frames[p] for p in parent_idx.tolist()))
    ]
    geoms = np.empty(len(keys), dtype=object)
    geoms[:] = None
    same = np.array([f == parents.frames[p] for f, p in zip(frames, parent_idx)], dtype=bool)
    # children on their parent's frame: parent polygon & new footprint, vectorised
    sel = np.flatnonzero(same)
    if len(sel):
        fps = np.empty(len(sel), dtype=object)
        fps[:] = [tileset.footprint(new_member[k], frames[k]) for k in sel]
        pg = parents.geoms[parent_idx[sel]]
        pb, fb = shapely.bounds(pg), shapely.bounds(fps)
        w = np.minimum(pb[:, 2], fb[:, 2]) - np.maximum(pb[:, 0], fb[:, 0])
        h = np.minimum(pb[:, 3], fb[:, 3]) - np.maximum(pb[:, 1], fb[:, 1])
        box_ok = (w > 0) & (h > 0) & (w * h >= threshold)
        ks = sel[box_ok]
        geoms[ks] = shapely.intersection(pg[box_ok], fps[box_ok])
    # children whose frame changed (zone majority moved): recompute from all members
    for k in np.flatnonzero(~same):
        geoms[k] = tuple_geometry(tileset, keys[k], frames[k])
    valid = np.array([g is not None for g in geoms], dtype=bool)
    geoms[valid] = drop_slivers(geoms[valid], tileset.patch_side_m)
    areas = np.zeros(len(keys))
    areas[valid] = shapely.area(geoms[valid])
    keep = np.flatnonzero(areas >= threshold)
    return _Level([keys[k] for k in keep], [frames[k] for k in keep], geoms[keep], areas[keep])


def _best_candidates(
    tileset: TileSet, parents: _Level, p: int, common: list[int], cap: int
) -> list[int]:
    """The ``cap`` candidates whose bounding boxes overlap the parent's polygon the most."""
    frame = parents.frames[p]
    bx0, by0, bx1, by1 = parents.geoms[p].bounds
    c = np.asarray(common, dtype=np.int64)
    cb = tileset.bounds_in(frame, c)
    w = np.clip(np.minimum(bx1, cb[:, 2]) - np.maximum(bx0, cb[:, 0]), 0, None)
    h = np.clip(np.minimum(by1, cb[:, 3]) - np.maximum(by0, cb[:, 1]), 0, None)
    order = np.lexsort((c, -(w * h)))[:cap]
    return sorted(c[order].tolist())


def _beam(level: _Level, n_tiles: int, beam_width: int) -> list[int]:
    """Tuples that are among the ``beam_width`` largest of at least one of their members."""
    order = sorted(range(len(level.keys)), key=lambda t: (-level.areas[t], level.keys[t]))
    count = [0] * n_tiles
    selected = []
    for t in order:
        members = level.keys[t]
        if any(count[m] < beam_width for m in members):
            selected.append(t)
        for m in members:
            count[m] += 1
    return sorted(selected)


def _subset(level: _Level, idx: list[int]) -> _Level:
    return _Level(
        [level.keys[i] for i in idx],
        [level.frames[i] for i in idx],
        level.geoms[np.asarray(idx, dtype=np.int64)],
        level.areas[np.asarray(idx, dtype=np.int64)],
    )


def search(
    tileset: TileSet,
    pairs: np.ndarray,
    stats: dict | None = None,
) -> list[TupleCandidate]:
    """All n-tuples (n >= 2) kept by the beam search, level by level."""
    n = len(tileset)
    config = tileset.config
    beam = config.beam_width
    nbrs = adjacency(n, pairs)
    singles = _Level(
        [(i,) for i in range(n)],
        [int(f) for f in tileset.frame_of],
        np.array([t.footprint for t in tileset.tiles] + [None], dtype=object)[:n],
        np.zeros(n),
    )
    # level 2: every edge, grown from its earlier tile (whose frame the pair inherits)
    firsts = sorted({int(a) for a in pairs[:, 0].tolist()}) if len(pairs) else []
    later = [frozenset(b for b in nbrs[a] if b > a) for a in range(n)]
    level = _grow(tileset, later, singles, firsts, None)
    out: list[TupleCandidate] = []
    per_level: dict[int, int] = {}
    size = 2
    while level.keys:
        per_level[size] = len(level.keys)
        out.extend(
            TupleCandidate(k, f, float(a), g)
            for k, f, a, g in zip(level.keys, level.frames, level.areas.tolist(), level.geoms)
        )
        if size >= config.max_tuple_size:
            break
        parents = _beam(level, n, beam)
        children = _grow(tileset, nbrs, level, parents, beam)
        level = _subset(children, _beam(children, n, beam))
        size += 1
    if stats is not None:
        stats["tuples_by_size"] = {str(k): v for k, v in per_level.items()}
    return out


def find_tuples(tiles: list[TileRecord], config: PlanConfig) -> list[NTuple]:
    """Run the overlap graph and the n-tuple search on ``tiles``: every valid tuple found."""
    tileset = TileSet.build(tiles, config)
    pairs, _ = overlap_edges(tileset)
    return [
        NTuple(
            tuple(tileset.tiles[m].tile_id for m in t.members),
            tileset.frames[t.frame].crs,
            t.area,
        )
        for t in search(tileset, pairs)
    ]
