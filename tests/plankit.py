"""Tiny tile records for planning tests, and plan checks independent of the planner's code.

Tiles are rotated squares (the EnMAP swath inside a north-up raster) placed by lon/lat and
built in the UTM zone of their centre, on the 15 m mod 30 m lattice of real products.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import shapely
from pyproj import Transformer

from spectralearth_build.config import PlanConfig
from spectralearth_build.grid import PixelGrid
from spectralearth_build.plan import PlannedPatch
from spectralearth_build.records import TileRecord

T0 = datetime(2023, 5, 1, 10, 30, tzinfo=timezone.utc)
RES = 30.0


def utm_crs(lon: float, lat: float) -> str:
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def xy(crs: str, lon: float, lat: float) -> tuple[float, float]:
    return Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)


def make_tile(
    datatake: int,
    day: float,
    center: tuple[float, float],
    side_px: float = 200,
    angle_deg: float = 12.0,
    tile: int = 1,
    crs: str | None = None,
    lonlat: bool = False,
) -> TileRecord:
    """A tile whose valid footprint is a square of ``side_px`` pixels rotated by ``angle_deg``.

    ``center`` is in metres in ``crs`` (default EPSG:32633), or lon/lat if ``lonlat`` (the CRS
    then defaults to the UTM zone of the centre).
    """
    if lonlat:
        crs = crs or utm_crs(*center)
        cx, cy = xy(crs, *center)
    else:
        crs = crs or "EPSG:32633"
        cx, cy = center
    half = side_px * RES / 2
    th = math.radians(angle_deg)
    u = np.array([math.sin(th), math.cos(th)]) * half
    v = np.array([math.cos(th), -math.sin(th)]) * half
    c = np.array([cx, cy])
    fp = shapely.Polygon([c + u + v, c + u - v, c - u - v, c - u + v])
    minx, miny, maxx, maxy = fp.bounds
    x0 = math.floor((minx - 15) / RES) * RES + 15 - RES
    y0 = math.ceil((maxy - 15) / RES) * RES + 15 + RES
    w = math.ceil((maxx - x0) / RES) + 1
    h = math.ceil((y0 - miny) / RES) + 1
    grid = PixelGrid(crs, (RES, 0.0, x0, 0.0, -RES, y0), (h, w))
    start = T0 + timedelta(days=day)
    tid = (
        f"ENMAP01-____L2A-DT{datatake:010d}_{start:%Y%m%dT%H%M%S}Z_{tile:03d}"
        "_V010402_20240101T000000Z"
    )
    return TileRecord(tid, datatake, tile, start, grid, fp)


def reproject(geom, src: str, dst: str, segment: float = 100.0):
    if src == dst:
        return geom
    t = Transformer.from_crs(src, dst, always_xy=True)
    dense = shapely.segmentize(geom, segment)
    return shapely.transform(dense, lambda a: np.column_stack(t.transform(a[:, 0], a[:, 1])))


def check_plan(tiles: list[TileRecord], patches: list[PlannedPatch], config: PlanConfig) -> None:
    """Assert the plan's geometric guarantees, computed directly from the records.

    Every view lies inside its tile's valid footprint and, where the record has one, inside its
    clear-sky footprint; no two patches overlap by more than ``max_overlap_fraction``.
    """
    by_id = {t.tile_id: t for t in tiles}
    gap = timedelta(days=config.min_gap_days)
    side = config.patch_px * config.pixel_size_m
    assert [p.patch_id for p in patches] == list(range(len(patches)))
    n_views = [p.n_views for p in patches]
    assert n_views == sorted(n_views, reverse=True), "multi-timestamp patches come first"
    for p in patches:
        g = p.grid
        assert g.shape_yx == (config.patch_px, config.patch_px)
        assert g.is_north_up and g.res == config.pixel_size_m
        assert p.n_views >= 1
        if not config.include_single:
            assert p.n_views >= 2
        box = shapely.box(*g.bounds)
        assert abs(box.area - side * side) < 1e-6
        times = [v.start_time for v in p.views]
        assert times == sorted(times)
        for a in range(p.n_views):
            ta = by_id[p.views[a].tile_id]
            assert p.views[a].start_time == ta.start_time
            for b in range(a + 1, p.n_views):
                tb = by_id[p.views[b].tile_id]
                assert ta.datatake != tb.datatake, (p.patch_id, ta.tile_id, tb.tile_id)
                assert abs(ta.start_time - tb.start_time) >= gap
        for v in p.views:
            t = by_id[v.tile_id]
            assert t.grid.contains_window(v.window), (v.window, t.grid.shape_yx)
            if t.grid.same_lattice(g):
                assert not v.resampled
                assert v.window == g.window_in(t.grid)
                assert t.footprint.covers(box), f"patch {p.patch_id} not inside {t.tile_id}"
                if t.clear is not None:
                    assert t.clear.covers(box), f"patch {p.patch_id} not in {t.tile_id}'s clear sky"
            else:
                assert v.resampled
                there = reproject(box, g.crs, t.crs)
                assert t.footprint.covers(there), f"patch {p.patch_id} not inside {t.tile_id}"
                if t.clear is not None:
                    assert t.clear.covers(there), (
                        f"patch {p.patch_id} not in {t.tile_id}'s clear sky"
                    )
                # the source window covers the reprojected patch
                win = t.grid.crop(v.window)
                assert shapely.box(*win.bounds).covers(there)
    _check_overlaps(patches, config)


def _check_overlaps(patches: list[PlannedPatch], config: PlanConfig) -> None:
    area = (config.patch_px * config.pixel_size_m) ** 2
    if not patches:
        return
    # everything compared in the CRS of the first patch (tests stay within two UTM zones)
    ref = patches[0].grid.crs
    geoms = np.array(
        [reproject(shapely.box(*p.grid.bounds), p.grid.crs, ref, 50.0) for p in patches]
    )
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    keep = a < b
    a, b = a[keep], b[keep]
    if len(a) == 0:
        return
    same = np.array([patches[i].grid.crs == patches[j].grid.crs for i, j in zip(a, b)])
    native = np.array([shapely.box(*p.grid.bounds) for p in patches])
    # same CRS: exact, in that CRS; other zones: after reprojection, with a round-off tolerance
    inter = np.where(
        same,
        shapely.area(shapely.intersection(native[a], native[b])),
        shapely.area(shapely.intersection(geoms[a], geoms[b])),
    )
    frac = config.max_overlap_fraction
    limit = np.where(same, frac * area + 1e-6, frac * area + 1e-4 * area)
    bad = inter > limit
    worst = [(int(i), int(j), float(x)) for i, j, x in zip(a[bad], b[bad], inter[bad])]
    assert not bad.any(), worst[:5]


def scenario_tiles() -> list[TileRecord]:
    """A small archive: a revisited site, a datatake strip, a site on a UTM zone line, a loner.

    Sizes are in pixels of 30 m; use with ``patch_px`` of 16 or 32.
    """
    tiles = []
    # a site revisited by five datatakes (rotated swaths, off-nadir offsets)
    for k in range(5):
        tiles.append(
            make_tile(
                10 + k,
                7 * k,
                (500_000 + 600 * (k - 2), 5_000_000 + 450 * (k % 3)),
                side_px=150,
                angle_deg=10 + k,
            )
        )
    # a strip of three consecutive tiles of one datatake crossing the site (overlap 14 rows)
    for j in range(3):
        tiles.append(
            make_tile(
                30,
                3 + j * 4.1 / 86400,
                (499_000, 5_000_000 + (150 - 14) * 30 * (1 - j)),
                side_px=150,
                angle_deg=0,
                tile=j + 1,
            )
        )
    # a site on the line between UTM zones 32 and 33 (lon 12 E), four datatakes
    for k, (lon, lat) in enumerate(
        [(11.985, 47.0), (12.01, 47.003), (11.995, 46.998), (12.02, 47.0)]
    ):
        tiles.append(
            make_tile(40 + k, 5 * k + 1, (lon, lat), side_px=150, angle_deg=12, lonlat=True)
        )
    # an isolated tile
    tiles.append(make_tile(60, 20, (650_000, 5_300_000), side_px=120, angle_deg=13))
    return tiles


def grid_first_multi(tiles: list[TileRecord], config: PlanConfig) -> int:
    """Multi-timestamp cells of a fixed ``patch_px`` lattice (per CRS, own-zone tiles only)."""
    gap = timedelta(days=config.min_gap_days)
    side = config.patch_px * config.pixel_size_m
    cells: dict[tuple[str, int, int], list[TileRecord]] = {}
    for t in tiles:
        minx, miny, maxx, maxy = t.footprint.bounds
        for c in range(math.floor((minx - 15) / side), math.floor((maxx - 15) / side) + 1):
            for r in range(math.floor((miny - 15) / side), math.floor((maxy - 15) / side) + 1):
                x, y = 15 + c * side, 15 + r * side
                if t.footprint.covers(shapely.box(x, y, x + side, y + side)):
                    cells.setdefault((t.crs, c, r), []).append(t)
    multi = 0
    for members in cells.values():
        kept: list[TileRecord] = []
        for t in sorted(members, key=lambda t: t.start_time):
            if all(
                t.datatake != k.datatake and abs(t.start_time - k.start_time) >= gap for k in kept
            ):
                kept.append(t)
        multi += len(kept) >= 2
    return multi
