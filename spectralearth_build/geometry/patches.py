"""Patch placement: cut intersections into lattice-aligned patches without overlap.

Candidate positions.  Within a frame (pixel lattice, see :mod:`.tiles`), patch corners lie on a
*global* candidate grid: every ``candidate_stride_px`` pixels from the lattice origin, not from
the intersection's bounds.  A patch therefore covers exactly ``k x k`` stride cells
(``k = patch_px / candidate_stride_px``), patches of different tuples line up, and overlap
between patches of one frame is a whole number of cells.  A fine stride (8 px by default; 16 px as
HyBiomass does) fits patches into the border strips of rotated intersections, where a fixed
128 px grid anchored anywhere loses them.

Index of accepted patches.  Accepted patches are indexed on cell grids (sparse chunks), which
for lattice-aligned boxes answer exactly what an R-tree query plus intersection areas would, in
a few numpy operations per region.  Per frame, one grid counts the accepted patches of that
frame covering each stride cell; a second holds, per cell, the area (m2) of other frames'
patches (neighbouring UTM zones) overlapping it, computed exactly once when such a patch is
accepted (reprojected, densified).  A window sum over either grid is a candidate's overlap.
Only patches near a tile of another frame (found with the ``rtree`` index of tile lon/lat boxes)
are written to other frames' grids, since no other frame's patch can be anywhere else.

Two sweeps.  The planner first offers every region only the positions of one coarse patch
lattice per frame (``aligned=True``): multiples of ``patch_px`` from a phase that
:meth:`Placer.choose_phases` picks for the planning group (of the ``k x k`` phases, the one with
the most positions lying inside two tiles, as a grid-first builder would pick its offset; ties go
to the lattice origin).  The lattice tiles the plane without gaps, so patches of neighbouring
regions never leave unusable slivers between them; a lattice cell inside a pair's intersection
is only lost to a patch of a longer series.  A second sweep over the same regions then offers
all positions of the fine candidate grid, which fills the gaps: border strips of rotated
intersections and the space between cloud holes that the lattice misses.

Scan order inside a region: candidate rows from north to south, in each row west to east;
greedy acceptance.  A candidate is taken when (1) all points of the candidate grid on and inside
its border lie in the region (a fast vectorised pre-test), (2) its overlap with accepted
patches (same frame: counted cells; other frames: exact area, cell by cell) is at most
``max_overlap_fraction`` of its area (plus ``1e-6`` of it for reprojection round-off), and
(3) shapely confirms that the region covers the patch box exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from rtree import index as rtree_index
from shapely.geometry.base import BaseGeometry

from .tiles import TileSet, reproject

CHUNK = 256
"""Side of an occupancy chunk, in stride cells."""
CROSS_TOLERANCE = 1e-6
"""Overlap with other-frame patches tolerated on top of the limit (fraction of a patch)."""


@dataclass(frozen=True)
class Placed:
    """A placed patch: frame, upper-left stride cell ``(ci, cj)`` and the tiles it was cut for."""

    frame: int
    ci: int
    cj: int
    members: tuple[int, ...]
    seq: int


class Occupancy:
    """Per frame, a sparse grid of stride cells (chunks of ``CHUNK x CHUNK`` values).

    Holds, per cell, how many accepted patches of that frame cover it (``int32``) or how many
    square metres of other frames' patches overlap it (``float64``).
    """

    def __init__(self, dtype: type = np.int32) -> None:
        self.dtype = dtype
        self.chunks: dict[tuple[int, int, int], np.ndarray] = {}

    def region(self, frame: int, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        out: np.ndarray = np.zeros((h, w), dtype=self.dtype)
        for (kr, kc), (sr, sc, dr, dc, hh, ww) in _chunk_slices(r0, c0, h, w):
            chunk = self.chunks.get((frame, kr, kc))
            if chunk is not None:
                out[dr : dr + hh, dc : dc + ww] = chunk[sr : sr + hh, sc : sc + ww]
        return out

    def add(self, frame: int, r0: int, c0: int, h: int, w: int, values: Any = 1) -> None:
        values = np.broadcast_to(values, (h, w))
        for (kr, kc), (sr, sc, dr, dc, hh, ww) in _chunk_slices(r0, c0, h, w):
            chunk = self.chunks.get((frame, kr, kc))
            if chunk is None:
                chunk = np.zeros((CHUNK, CHUNK), dtype=self.dtype)
                self.chunks[(frame, kr, kc)] = chunk
            chunk[sr : sr + hh, sc : sc + ww] += values[dr : dr + hh, dc : dc + ww]


def _chunk_slices(r0: int, c0: int, h: int, w: int):
    for kr in range(r0 // CHUNK, (r0 + h - 1) // CHUNK + 1):
        rr0, rr1 = max(r0, kr * CHUNK), min(r0 + h, (kr + 1) * CHUNK)
        for kc in range(c0 // CHUNK, (c0 + w - 1) // CHUNK + 1):
            cc0, cc1 = max(c0, kc * CHUNK), min(c0 + w, (kc + 1) * CHUNK)
            yield (
                (kr, kc),
                (
                    rr0 - kr * CHUNK,
                    cc0 - kc * CHUNK,
                    rr0 - r0,
                    cc0 - c0,
                    rr1 - rr0,
                    cc1 - cc0,
                ),
            )


def window_sum(a: np.ndarray, k: int) -> np.ndarray:
    """Sums over every ``k x k`` window of ``a`` (shape ``(h - k + 1, w - k + 1)``)."""
    dtype = np.float64 if a.dtype.kind == "f" else np.int64
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1), dtype=dtype)
    np.cumsum(np.cumsum(a, axis=0, dtype=dtype), axis=1, out=s[1:, 1:])
    return s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]


class Placer:
    """Greedy placement of patches into regions, frame by frame, remembering what was taken."""

    def __init__(self, tileset: TileSet, tile_tree: rtree_index.Index | None) -> None:
        c = tileset.config
        self.ts = tileset
        self.k = c.patch_px // tileset.stride_px
        self.cell_m = tileset.stride_px * tileset.res
        self.limit_cells = int(math.floor(c.max_overlap_fraction * self.k * self.k + 1e-9))
        self.limit_area = (c.max_overlap_fraction + CROSS_TOLERANCE) * tileset.patch_area
        self.occupancy = Occupancy()
        self.placed: list[Placed] = []
        self.multi_frame = len(tileset.frames) > 1
        self.tile_tree = tile_tree
        self.foreign = Occupancy(np.float64)
        self._foreign_frames: set[int] = set()
        self._masks: dict[tuple[int, int], tuple[int, int, np.ndarray]] = {}
        self.phase: dict[int, tuple[int, int]] = {}
        """Per frame, the lattice phase ``(row, col)`` (stride cells modulo ``k``) of the
        aligned sweep."""

    def choose_phases(self) -> dict[int, tuple[int, int]]:
        """Per frame, the patch lattice phase with the most positions under two tiles.

        Counts, for each of the ``k x k`` phases, the lattice positions where a patch lies (by
        the candidate-grid pre-test) inside at least two tiles of that frame: the places a
        multi-timestamp patch can go.  Ties go to phase ``(0, 0)``, the lattice of the
        frame's origin.  Sets and returns :attr:`phase`.
        """
        k = self.k
        for frame in sorted({int(f) for f in self.ts.frame_of}):
            grid = Occupancy()
            for i in np.flatnonzero(self.ts.frame_of == frame).tolist():
                r0, c0, mask = self._point_mask(i, frame)
                if mask.shape[0] <= k or mask.shape[1] <= k:
                    continue
                pos = window_sum((~mask).astype(np.int32), k + 1) == 0
                if pos.any():
                    grid.add(frame, r0, c0, pos.shape[0], pos.shape[1], pos.astype(np.int32))
            counts = np.zeros((k, k), dtype=np.int64)
            for (_, kr, kc), chunk in sorted(grid.chunks.items()):
                rr, cc = np.nonzero(chunk >= 2)
                np.add.at(counts, ((kr * CHUNK + rr) % k, (kc * CHUNK + cc) % k), 1)
            self.phase[frame] = divmod(int(np.argmax(counts)), k)  # type: ignore[assignment]
        return self.phase

    # -- geometry of cells -------------------------------------------------------------------
    def patch_box(self, frame: int, ci: int, cj: int) -> tuple[float, float, float, float]:
        fr = self.ts.frames[frame]
        x0 = fr.ox + cj * self.cell_m
        y1 = fr.oy - ci * self.cell_m
        side = self.ts.patch_side_m
        return x0, y1 - side, x0 + side, y1

    def _point_mask(self, tile: int, frame: int) -> tuple[int, int, np.ndarray]:
        """Candidate-grid points (first row, first column, mask) inside a tile's footprint."""
        key = (tile, frame)
        hit = self._masks.get(key)
        if hit is None:
            fr = self.ts.frames[frame]
            cell = self.cell_m
            geom = self.ts.footprint(tile, frame)
            shapely.prepare(geom)
            minx, miny, maxx, maxy = geom.bounds
            c0 = math.ceil((minx - fr.ox) / cell - 1e-9)
            c1 = math.floor((maxx - fr.ox) / cell + 1e-9)
            r0 = math.ceil((fr.oy - maxy) / cell - 1e-9)
            r1 = math.floor((fr.oy - miny) / cell + 1e-9)
            gx, gy = np.meshgrid(
                fr.ox + np.arange(c0, c1 + 1) * cell, fr.oy - np.arange(r0, r1 + 1) * cell
            )
            hit = self._masks[key] = (r0, c0, shapely.intersects_xy(geom, gx, gy))
        return hit

    def _inside(
        self, members: tuple[int, ...], frame: int, r0: int, c0: int, h: int, w: int
    ) -> np.ndarray:
        """Candidate-grid points of a block inside every member's footprint (closed sets).

        Equal to testing the points against the members' intersection, but each tile's points
        are tested once and cached, and a tuple only combines cached masks.
        """
        out = np.ones((h, w), dtype=bool)
        for m in members:
            mr, mc, mask = self._point_mask(m, frame)
            sub = np.zeros((h, w), dtype=bool)
            a0, a1 = max(r0, mr), min(r0 + h, mr + mask.shape[0])
            b0, b1 = max(c0, mc), min(c0 + w, mc + mask.shape[1])
            if a1 > a0 and b1 > b0:
                src = mask[a0 - mr : a1 - mr, b0 - mc : b1 - mc]
                sub[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = src
            out &= sub
        return out

    def _lonlat_box(self, members: tuple[int, ...]) -> tuple[float, float, float, float]:
        """A lon/lat box around the members' common area (the overlap of their boxes)."""
        b = self.ts.lonlat_bounds[list(members)]
        return (
            float(b[:, 0].max()),
            float(b[:, 1].max()),
            float(b[:, 2].min()),
            float(b[:, 3].min()),
        )

    def _other_frames_near(self, frame: int, members: tuple[int, ...]) -> list[int]:
        """Other frames with a tile whose lon/lat box meets the members' common box."""
        if not self.multi_frame or self.tile_tree is None:
            return []
        fo = self.ts.frame_of
        near = {int(fo[i]) for i in self.tile_tree.intersection(self._lonlat_box(members))}
        near.discard(frame)
        return sorted(near)

    def _add_foreign(
        self, frame: int, boxes: list[tuple[float, float, float, float]], others: list[int]
    ) -> None:
        """Record new patches of ``frame`` in the cell grids of the ``others`` frames.

        Each patch box is reprojected (densified to a quarter of its side) and its exact
        overlap with every stride cell of the other frame is added to that frame's grid: a
        whole cell where the patch covers it, an exact intersection area on the patch border.
        """
        src = self.ts.frames[frame].crs
        polys = shapely.box(*np.array(boxes).T)
        cell = self.cell_m
        for g in others:
            fr = self.ts.frames[g]
            there = reproject(polys, src, fr.crs, self.ts.patch_side_m / 4)
            for poly, (px0, py0, px1, py1) in zip(there, shapely.bounds(there).tolist()):
                c0, c1 = math.floor((px0 - fr.ox) / cell), math.floor((px1 - fr.ox) / cell)
                r0, r1 = math.floor((fr.oy - py1) / cell), math.floor((fr.oy - py0) / cell)
                cc, rr = np.meshgrid(np.arange(c0, c1 + 1), np.arange(r0, r1 + 1))
                x0, y1 = fr.ox + cc * cell, fr.oy - rr * cell
                cells = shapely.box(x0, y1 - cell, x0 + cell, y1)
                # cells the patch covers overlap it by a whole cell; only those on its border
                # need an exact intersection
                shapely.prepare(poly)
                area = np.where(shapely.covers(poly, cells), cell * cell, 0.0)
                edge = (area == 0.0) & shapely.intersects(poly, cells)
                area[edge] = shapely.area(shapely.intersection(cells[edge], poly))
                self.foreign.add(g, r0, c0, r1 - r0 + 1, c1 - c0 + 1, area)
            self._foreign_frames.add(g)

    # -- placement -----------------------------------------------------------------------------
    def place(
        self, region: BaseGeometry, frame: int, members: tuple[int, ...], aligned: bool = False
    ) -> int:
        """Place patches inside ``region`` (frame coordinates); returns how many were taken.

        With ``aligned``, only positions on the coarse grid (multiples of ``patch_px`` from the
        lattice origin) are candidates, which tile the plane without gaps.
        """
        if region.is_empty:
            return 0
        k, cell = self.k, self.cell_m
        fr = self.ts.frames[frame]
        minx, miny, maxx, maxy = region.bounds
        cj0 = math.ceil((minx - fr.ox) / cell - 1e-9)
        cj1 = math.floor((maxx - fr.ox) / cell + 1e-9) - k
        ci0 = math.ceil((fr.oy - maxy) / cell - 1e-9)
        ci1 = math.floor((fr.oy - miny) / cell + 1e-9) - k
        if cj1 < cj0 or ci1 < ci0:
            return 0
        nr, nc = ci1 - ci0 + 1, cj1 - cj0 + 1
        occ = self.occupancy.region(frame, ci0, cj0, nr + k - 1, nc + k - 1)
        if aligned:
            pa, pb = self.phase.get(frame, (0, 0))
            ra, ca = (pa - ci0) % k, (pb - cj0) % k
            nb, mb = len(range(ra, nr, k)), len(range(ca, nc, k))
            free = np.zeros((nr, nc), dtype=bool)
            if nb and mb:
                block = occ[ra : ra + nb * k, ca : ca + mb * k].reshape(nb, k, mb, k)
                free[ra::k, ca::k] = block.sum(axis=(1, 3)) <= self.limit_cells
        else:
            free = window_sum(occ, k) <= self.limit_cells
        if not free.any():
            return 0
        # pre-test: every candidate-grid point on or inside the patch border lies in the region
        # (evaluated only over the rows and columns that still have free positions)
        rows, cols = np.flatnonzero(free.any(axis=1)), np.flatnonzero(free.any(axis=0))
        r_lo, r_hi, c_lo, c_hi = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        inside = self._inside(
            members, frame, ci0 + r_lo, cj0 + c_lo, r_hi - r_lo + k, c_hi - c_lo + k
        )
        cand = np.zeros_like(free)
        cand[r_lo:r_hi, c_lo:c_hi] = free[r_lo:r_hi, c_lo:c_hi] & (
            window_sum((~inside).astype(np.int32), k + 1) == 0
        )
        if not cand.any():
            return 0
        shapely.prepare(region)
        side = self.ts.patch_side_m
        others = self._other_frames_near(frame, members)
        cross_ws = None
        if frame in self._foreign_frames:
            # other frames' patches as overlap area per cell: summed over a window, exactly a
            # candidate's overlap with them
            cells = self.foreign.region(frame, ci0, cj0, nr + k - 1, nc + k - 1)
            if cells.any():
                cross_ws = window_sum(cells, k)
                cand &= cross_ws <= self.limit_area
        valid = cand.copy()
        flat = valid.reshape(-1)
        taken: list[tuple[int, int]] = []
        for p in np.flatnonzero(cand).tolist():
            if not flat[p]:
                continue
            r, c = divmod(p, nc)
            x0 = fr.ox + (cj0 + c) * cell
            y1 = fr.oy - (ci0 + r) * cell
            if not shapely.covers(region, shapely.box(x0, y1 - side, x0 + side, y1)):
                flat[p] = False
                continue
            if self.limit_cells > 0:
                overlap = float(occ[r : r + k, c : c + k].sum()) * cell * cell
                if cross_ws is not None:
                    overlap += cross_ws[r, c]
                if overlap > self.limit_area:
                    flat[p] = False
                    continue
            taken.append((r, c))
            if self.limit_cells == 0:
                valid[max(0, r - k + 1) : r + k, max(0, c - k + 1) : c + k] = False
            else:
                occ[r : r + k, c : c + k] += 1
                flat[p] = False
                r0, c0 = max(0, r - k + 1), max(0, c - k + 1)
                r1, c1 = min(nr, r + k), min(nc, c + k)
                ws = window_sum(occ[r0 : r1 + k - 1, c0 : c1 + k - 1], k)
                valid[r0:r1, c0:c1] &= ws <= self.limit_cells
        first = len(self.placed)
        for r, c in taken:
            ci, cj = ci0 + r, cj0 + c
            self.occupancy.add(frame, ci, cj, k, k)
            self.placed.append(Placed(frame, ci, cj, members, len(self.placed)))
        if others and taken:
            self._add_foreign(
                frame, [self.patch_box(frame, p.ci, p.cj) for p in self.placed[first:]], others
            )
        return len(taken)
