"""Tiles as planning sees them: integer indices, pixel frames and cached reprojected footprints.

Planning works on integer tile indices, never on strings in hash order: tiles are sorted once
by ``(start_time, tile_id)`` and index ``i`` means the i-th tile of that order, so every set,
dict and tie-break below is deterministic whatever ``PYTHONHASHSEED`` is.

A *frame* is a pixel lattice: a CRS plus the origin offset of the lattice modulo the pixel size
(EnMAP products of one UTM zone all sit on one frame, their origins being 15 m modulo 30 m).
Patches are cut on the lattice of one frame; a tile on another frame (a neighbouring UTM zone)
is resampled, so its footprint, when used in that frame, is reprojected from a densified
polygon and shrunk by a safety margin (``PlanConfig.resample_margin_px``) that absorbs
resampling and reprojection error.  Footprints are also kept as lon/lat bounding boxes, which
is what the R-trees use to find candidates across zones (the antimeridian is not handled: a
footprint crossing it gets a bounding box spanning the globe, which is slow but not wrong).

Planning uses each tile's *planning footprint*: the clear-sky footprint where the record has one
(:attr:`~spectralearth_build.records.TileRecord.clear`), else the valid footprint.  A
:class:`TileSet` holds the tiles with that footprint as ``footprint``; tiles whose planning
footprint is smaller than one patch take no part (``excluded``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from ..config import PlanConfig
from ..crs import LONLAT, reproject, transformer
from ..errors import ConfigError
from ..records import TileRecord

DENSIFY_M = 300.0
"""Segment length (metres) used when reprojecting footprints between CRSs."""
LONLAT_PAD_DEG = 1e-3
"""Padding of lon/lat bounding boxes (about 100 m), so that candidate searches never miss."""


class PlanningError(ValueError):
    """The tile records or the plan config cannot be planned (the message says which tile/key)."""


@dataclass(frozen=True)
class Frame:
    """A pixel lattice: ``crs``, pixel size and lattice origin offset ``(ox, oy)`` in metres."""

    crs: str
    res: float
    ox: float
    oy: float


def check_config(config: PlanConfig) -> None:
    """Raise :class:`PlanningError` for plan settings that cannot work (see ``validate``)."""
    try:
        config.validate()
    except ConfigError as exc:
        raise PlanningError(f"invalid plan config: {exc}") from exc


@dataclass
class TileSet:
    """Sorted tiles with their frames, lon/lat boxes and a cache of reprojected footprints."""

    tiles: tuple[TileRecord, ...]
    config: PlanConfig
    frames: tuple[Frame, ...] = ()
    frame_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lonlat_bounds: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    datatakes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    times_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    excluded: tuple[str, ...] = ()
    """Tile ids left out: their planning footprint cannot hold one patch."""
    _cache: dict[tuple[int, int], BaseGeometry] = field(default_factory=dict)
    _bounds: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def build(cls, tiles: list[TileRecord], config: PlanConfig) -> TileSet:
        check_config(config)
        ordered = tuple(sorted(tiles, key=lambda t: (_utc_seconds(t), t.tile_id)))
        seen: set[str] = set()
        min_area = (config.patch_px * config.pixel_size_m) ** 2 * (1 - 1e-9)
        usable, excluded = [], []
        for t in ordered:
            _check_tile(t, config)
            if t.tile_id in seen:
                raise PlanningError(f"tile {t.tile_id} appears twice in the tile list")
            seen.add(t.tile_id)
            if t.clear is None:
                usable.append(t)
            elif t.clear.area < min_area:
                excluded.append(t.tile_id)
            else:
                usable.append(dataclasses.replace(t, footprint=t.clear, clear=None))
        ordered = tuple(usable)
        frames_by_key: dict[tuple[str, float, float], int] = {}
        keys = []
        for t in ordered:
            ox, oy = t.grid.lattice_offset()
            r = t.grid.res
            # offsets within 1e-6 m of a full pixel are the same lattice as offset 0
            ox = 0.0 if abs(ox - r) < 1e-6 else round(ox, 6)
            oy = 0.0 if abs(oy - r) < 1e-6 else round(oy, 6)
            keys.append((t.grid.crs, ox, oy))
        for k in sorted(set(keys)):
            frames_by_key[k] = len(frames_by_key)
        res = config.pixel_size_m
        frames = tuple(Frame(k[0], res, k[1], k[2]) for k in sorted(frames_by_key))
        out = cls(
            tiles=ordered,
            config=config,
            frames=frames,
            frame_of=np.array([frames_by_key[k] for k in keys], dtype=np.int64),
            datatakes=np.array([t.datatake for t in ordered], dtype=np.int64),
            times_s=np.array([_utc_seconds(t) for t in ordered], dtype=np.float64),
            excluded=tuple(excluded),
        )
        out.lonlat_bounds = out._compute_lonlat_bounds()
        return out

    # -- sizes -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def res(self) -> float:
        return self.config.pixel_size_m

    @property
    def stride_px(self) -> int:
        """Candidate stride actually used: ``gcd(candidate_stride_px, patch_px)``."""
        return math.gcd(self.config.candidate_stride_px, self.config.patch_px)

    @property
    def patch_side_m(self) -> float:
        return self.config.patch_px * self.res

    @property
    def patch_area(self) -> float:
        """Area of one patch in square metres: the minimum useful overlap."""
        return self.patch_side_m**2

    @property
    def min_gap_s(self) -> float:
        return timedelta(days=self.config.min_gap_days).total_seconds()

    def compatible(self, i: int, j: int) -> bool:
        """Different acquisitions: different datatakes and at least ``min_gap_days`` apart."""
        return bool(
            self.datatakes[i] != self.datatakes[j]
            and abs(self.times_s[i] - self.times_s[j]) >= self.min_gap_s
        )

    # -- footprints --------------------------------------------------------------------------
    def footprint(self, i: int, frame: int) -> BaseGeometry:
        """Footprint of tile ``i`` in ``frame``: native, or reprojected and shrunk (resampled)."""
        if self.frame_of[i] == frame:
            return self.tiles[i].footprint
        key = (i, frame)
        geom = self._cache.get(key)
        if geom is None:
            src, dst = self.tiles[i].crs, self.frames[frame].crs
            geom = reproject(self.tiles[i].footprint, src, dst, DENSIFY_M)
            margin = self.config.resample_margin_px * self.res
            if margin > 0:
                geom = geom.buffer(-margin, join_style="mitre")
            shapely.prepare(geom)
            self._cache[key] = geom
        return geom

    def bounds_in(self, frame: int, idx: np.ndarray) -> np.ndarray:
        """``(len(idx), 4)`` bounds of the footprints of tiles ``idx`` in ``frame``."""
        b = self._bounds.get(frame)
        if b is None:
            b = np.full((len(self.tiles), 4), np.nan)
            own = np.flatnonzero(self.frame_of == frame)
            b[own] = shapely.bounds(np.array([self.tiles[i].footprint for i in own], dtype=object))
            self._bounds[frame] = b
        out = b[idx]
        for k in np.flatnonzero(np.isnan(out[:, 0])):
            b[idx[k]] = out[k] = self.footprint(int(idx[k]), frame).bounds
        return out

    def raw_footprint_in(self, i: int, crs: str) -> BaseGeometry:
        """Footprint of tile ``i`` reprojected to ``crs`` without margin (for overlap areas)."""
        return reproject(self.tiles[i].footprint, self.tiles[i].crs, crs, DENSIFY_M)

    def _compute_lonlat_bounds(self) -> np.ndarray:
        out = np.zeros((len(self.tiles), 4))
        fps = np.array([t.footprint for t in self.tiles], dtype=object)
        crss = np.array([t.crs for t in self.tiles], dtype=object)
        for crs in sorted(set(crss.tolist())):
            sel = np.flatnonzero(crss == crs)
            ll = reproject(fps[sel], crs, LONLAT, 1000.0)
            out[sel] = shapely.bounds(ll)
        out[:, :2] -= LONLAT_PAD_DEG
        out[:, 2:] += LONLAT_PAD_DEG
        return out

    def frame_lonlat_boxes(self, frame: int, boxes: np.ndarray) -> np.ndarray:
        """Padded lon/lat bounding boxes of ``(n, 4)`` boxes given in frame coordinates.

        Each box is sampled at its corners and edge midpoints (patch-sized boxes are far too
        small for the projection to bend their edges by more than the padding).
        """
        x0, y0, x1, y1 = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3], boxes[:, 3:4]
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        xs = np.hstack([x0, x1, x1, x0, xm, xm, x0, x1])
        ys = np.hstack([y0, y0, y1, y1, y0, y1, ym, ym])
        lon, lat = transformer(self.frames[frame].crs, LONLAT).transform(xs, ys)
        lon, lat = np.asarray(lon).reshape(xs.shape), np.asarray(lat).reshape(ys.shape)
        return np.column_stack(
            [
                lon.min(axis=1) - LONLAT_PAD_DEG,
                lat.min(axis=1) - LONLAT_PAD_DEG,
                lon.max(axis=1) + LONLAT_PAD_DEG,
                lat.max(axis=1) + LONLAT_PAD_DEG,
            ]
        )


def _utc_seconds(t: TileRecord) -> float:
    if t.start_time.tzinfo is None:
        raise PlanningError(f"tile {t.tile_id}: start_time {t.start_time} has no time zone")
    return t.start_time.timestamp()


def _check_tile(t: TileRecord, config: PlanConfig) -> None:
    g = t.grid
    if not g.is_north_up:
        raise PlanningError(f"tile {t.tile_id}: grid is not north-up ({g.transform})")
    if not math.isclose(g.res, config.pixel_size_m, rel_tol=0, abs_tol=1e-6) or not math.isclose(
        -g.transform[4], g.res, rel_tol=0, abs_tol=1e-6
    ):
        raise PlanningError(
            f"tile {t.tile_id}: pixel size {g.res} x {-g.transform[4]} m, expected "
            f"plan.pixel_size_m = {config.pixel_size_m}"
        )
    fp = t.footprint
    if fp is None or fp.is_empty or fp.geom_type not in ("Polygon", "MultiPolygon"):
        raise PlanningError(f"tile {t.tile_id}: footprint must be a non-empty polygon")
    if not fp.is_valid:
        raise PlanningError(
            f"tile {t.tile_id}: footprint is not a valid polygon ({shapely.is_valid_reason(fp)})"
        )
    clear = t.clear
    if clear is not None and not clear.is_empty:
        if clear.geom_type not in ("Polygon", "MultiPolygon"):
            raise PlanningError(f"tile {t.tile_id}: clear-sky footprint must be a polygon")
        if not clear.is_valid:
            raise PlanningError(
                f"tile {t.tile_id}: clear-sky footprint is not a valid polygon "
                f"({shapely.is_valid_reason(clear)})"
            )
