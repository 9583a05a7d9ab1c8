"""The tile-overlap graph: which tiles can form a temporal pair.

Nodes are tiles.  An edge joins two tiles that are different acquisitions (different
datatakes, start times at least ``min_gap_days`` apart: consecutive tiles of one datatake, which
overlap by a few rows, are never pairs) and whose valid-data footprints intersect by at least one
patch area (``(patch_px * pixel_size_m)**2``).

Candidates come from an R-tree (``rtree``, bulk-loaded) over the footprints' lon/lat bounding
boxes, so tiles of different UTM zones meet; the exact intersection is then computed in metres,
vectorised with shapely: in the shared CRS when both tiles have one, otherwise after
reprojecting the second footprint (densified) into the CRS of the first, in chunks of pairs
(:class:`AreaJob`, one longitude band each) that a ``map_fn`` may spread over workers.  The
graph is a ``networkx.Graph`` whose nodes are tile ids (inserted in ``(start_time, tile_id)``
order) with an ``index`` attribute, and whose edges carry the intersection ``area`` in m2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import shapely
from rtree import index as rtree_index
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry.base import BaseGeometry

from ..config import PlanConfig
from ..crs import reproject
from ..records import TileRecord
from .tiles import DENSIFY_M, TileSet

MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]
AREA_CHUNK_PAIRS = 8192
"""Pairs per chunk of exact intersection areas (:class:`AreaJob`)."""


def lonlat_rtree(bounds: np.ndarray) -> rtree_index.Index:
    """A bulk-loaded R-tree over ``(n, 4)`` lon/lat boxes; ids are row numbers."""
    if len(bounds) == 0:
        return rtree_index.Index()
    return rtree_index.Index(((i, tuple(float(v) for v in b), None) for i, b in enumerate(bounds)))


def candidate_pairs(tileset: TileSet) -> np.ndarray:
    """``(m, 2)`` index pairs ``i < j`` whose lon/lat boxes intersect, sorted."""
    n = len(tileset)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    tree = lonlat_rtree(tileset.lonlat_bounds)
    b = tileset.lonlat_bounds
    mins, maxs = np.ascontiguousarray(b[:, :2]), np.ascontiguousarray(b[:, 2:])
    ids, counts = tree.intersection_v(mins, maxs)
    left = np.repeat(np.arange(n, dtype=np.int64), np.asarray(counts, dtype=np.int64))
    right = np.asarray(ids, dtype=np.int64)
    keep = left < right
    pairs = np.column_stack([left[keep], right[keep]])
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order]


def overlap_edges(
    tileset: TileSet, candidates: np.ndarray | None = None, map_fn: MapFn | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the overlap graph: ``(m, 2)`` index pairs ``i < j`` and their overlap areas (m2).

    Args:
        tileset: the tiles.
        candidates: :func:`candidate_pairs` of ``tileset`` if already computed.
        map_fn: an order-preserving ``map`` that computes the exact intersection areas of
            chunks of pairs (:class:`AreaJob`) in parallel; None computes them here.  The
            edges are the same either way (every area is computed on its own).
    """
    pairs = candidate_pairs(tileset) if candidates is None else candidates
    if len(pairs) == 0:
        return pairs, np.zeros(0)
    i, j = pairs[:, 0], pairs[:, 1]
    ok = (tileset.datatakes[i] != tileset.datatakes[j]) & (
        np.abs(tileset.times_s[i] - tileset.times_s[j]) >= tileset.min_gap_s
    )
    pairs = pairs[ok]
    areas = np.zeros(len(pairs))
    if len(pairs) == 0:
        return pairs, areas
    crs = np.array([t.crs for t in tileset.tiles], dtype=object)
    fps = np.array([t.footprint for t in tileset.tiles], dtype=object)
    i, j = pairs[:, 0], pairs[:, 1]
    # same CRS: bounding-box prefilter; different CRS: all (the second footprint is reprojected)
    need = crs[i] != crs[j]
    nb = shapely.bounds(fps)
    bi, bj = nb[i], nb[j]
    w = np.minimum(bi[:, 2], bj[:, 2]) - np.maximum(bi[:, 0], bj[:, 0])
    h = np.minimum(bi[:, 3], bj[:, 3]) - np.maximum(bi[:, 1], bj[:, 1])
    need |= (w > 0) & (h > 0) & (w * h >= tileset.patch_area)
    sel = np.flatnonzero(need)
    # chunks of pairs in west-to-east order of their first tile, so that a chunk carries the
    # footprints of one longitude band only; the chunking depends on the tiles alone
    sel = sel[np.argsort(tileset.lonlat_bounds[i[sel], 0], kind="stable")]
    chunks = [sel[k : k + AREA_CHUNK_PAIRS] for k in range(0, len(sel), AREA_CHUNK_PAIRS)]
    jobs = []
    for chunk in chunks:
        used, local = np.unique(pairs[chunk], return_inverse=True)
        jobs.append(
            AreaJob(tuple(fps[used]), tuple(crs[used]), local.reshape(-1, 2).astype(np.int64))
        )
    for chunk, chunk_areas in zip(chunks, (map_fn or map)(pair_areas, jobs)):
        areas[chunk] = chunk_areas
    keep = areas >= tileset.patch_area * (1 - 1e-9)
    return pairs[keep], areas[keep]


@dataclass(frozen=True)
class AreaJob:
    """A chunk of the overlap-edge stage: the pairs of footprints whose overlap areas to compute."""

    footprints: tuple[BaseGeometry, ...]
    """Planning footprints, each in its tile's CRS."""
    crs: tuple[str, ...]
    """CRS per footprint."""
    pairs: np.ndarray
    """``(m, 2)`` indices into ``footprints``."""


def pair_areas(job: AreaJob) -> np.ndarray:
    """``(m,)`` intersection areas (m2) of the pairs of ``job``, in the CRS of the first tile.

    Pairs of one CRS are intersected vectorised; for the others the second footprint is
    reprojected (densified, :data:`~.tiles.DENSIFY_M`) into the CRS of the first.
    """
    fps = np.array(job.footprints, dtype=object)
    crs = np.array(job.crs, dtype=object)
    i, j = job.pairs[:, 0], job.pairs[:, 1]
    areas = np.zeros(len(job.pairs))
    same = crs[i] == crs[j]
    sel = np.flatnonzero(same)
    if len(sel):
        areas[sel] = shapely.area(shapely.intersection(fps[i[sel]], fps[j[sel]]))
    for k in np.flatnonzero(~same).tolist():
        a, b = int(i[k]), int(j[k])
        other = reproject(fps[b], crs[b], crs[a], DENSIFY_M)
        areas[k] = shapely.area(shapely.intersection(fps[a], other))
    return areas


def graph_from_edges(tileset: TileSet, pairs: np.ndarray, areas: np.ndarray) -> nx.Graph:
    g = nx.Graph()
    for k, t in enumerate(tileset.tiles):
        g.add_node(t.tile_id, index=k)
    ids = [t.tile_id for t in tileset.tiles]
    g.add_edges_from(
        (ids[a], ids[b], {"area": float(s)}) for (a, b), s in zip(pairs.tolist(), areas.tolist())
    )
    return g


def build_overlap_graph(tiles: list[TileRecord], config: PlanConfig) -> nx.Graph:
    """The tile-overlap graph of ``tiles`` (nodes: tile ids; edge attribute ``area`` in m2)."""
    tileset = TileSet.build(tiles, config)
    pairs, areas = overlap_edges(tileset)
    return graph_from_edges(tileset, pairs, areas)


def adjacency(n: int, pairs: np.ndarray) -> list[frozenset[int]]:
    """Neighbour sets by tile index."""
    nbrs: list[set[int]] = [set() for _ in range(n)]
    for a, b in pairs.tolist():
        nbrs[a].add(b)
        nbrs[b].add(a)
    return [frozenset(s) for s in nbrs]


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component id per tile index, numbered by their smallest tile index."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    labels = _labels(n, pairs)
    first = np.full(int(labels.max()) + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[labels]


def _labels(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component labels (arbitrary numbering) of ``n`` nodes and ``(m, 2)`` edges."""
    pairs = pairs.reshape(-1, 2)
    adj = coo_matrix((np.ones(len(pairs), dtype=np.int32), (pairs[:, 0], pairs[:, 1])), (n, n))
    return np.asarray(connected_components(adj, directed=False)[1], dtype=np.int64)


def touching_pairs(
    tileset: TileSet, candidates: np.ndarray, comp: np.ndarray, tolerance_m: float
) -> np.ndarray:
    """Candidate pairs of different components whose footprints come within ``tolerance_m``.

    Patches are placed inside their tiles' footprints, so patches of two components can only
    overlap where such a pair of tiles touches; planning those components together keeps their
    patches apart.  Returns ``(m, 2)`` index pairs.
    """
    if len(candidates) == 0:
        return candidates
    pairs = candidates[comp[candidates[:, 0]] != comp[candidates[:, 1]]]
    if len(pairs) == 0:
        return pairs
    crs = np.array([t.crs for t in tileset.tiles], dtype=object)
    fps = np.array([t.footprint for t in tileset.tiles], dtype=object)
    i, j = pairs[:, 0], pairs[:, 1]
    near = np.zeros(len(pairs), dtype=bool)
    same = crs[i] == crs[j]
    sel = np.flatnonzero(same)
    if len(sel):
        near[sel] = shapely.dwithin(fps[i[sel]], fps[j[sel]], tolerance_m)
    for k in np.flatnonzero(~same):
        a, b = int(i[k]), int(j[k])
        near[k] = shapely.dwithin(
            fps[a], tileset.raw_footprint_in(b, tileset.tiles[a].crs), tolerance_m
        )
    return pairs[near]


def planning_groups(n: int, pairs: np.ndarray, touching: np.ndarray) -> list[list[int]]:
    """Tile indices of the independent planning groups, each sorted, ordered by first index.

    A group is a connected component of the overlap graph together with every component whose
    tiles touch it (``touching``): no patch of one group can overlap a patch of another.
    """
    if n == 0:
        return []
    comp = components(n, np.concatenate([pairs.reshape(-1, 2), touching.reshape(-1, 2)]))
    order = np.argsort(comp, kind="stable")  # members ascending within each group
    starts = np.flatnonzero(np.diff(comp[order]) != 0) + 1
    return [part.tolist() for part in np.split(order, starts)]
