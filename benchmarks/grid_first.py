"""The clear-sky grid-first baseline: what a fixed patch lattice gets from the same footprints.

A grid-first builder lays one ``patch_px`` lattice per UTM zone on the 30 m pixel lattice (origin
15 m modulo 30 m), tries every offset of it in ``step_px`` steps (16 x 16 offsets for 128 px and
8 px) and keeps, per zone, the offset with the most multi-timestamp cells.  A cell belongs to the
zone its centre longitude falls in; it takes every tile whose planning footprint (clear-sky when
known; reprojected and shrunk by ``resample_margin_px`` for tiles of another zone) covers it
fully, and counts as multi-timestamp when two of them are different acquisitions (different
datatakes at least ``min_gap_days`` apart; tiles of one datatake are minutes apart, so this is
"the covering tiles span at least ``min_gap_days`` and two datatakes").  Its timestamps are then
counted greedily in time order, as the planner's views are.

Coverage is exact on ``step_px`` sub-cells: a sub-cell is covered when the footprint's
complement does not touch it (rasterised with ``all_touched``), and a cell when all its
sub-cells are.  Uses rasterio (benchmarks may; the planner may not).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

import numpy as np
import rasterio.features
import shapely
from affine import Affine

from spectralearth_build.config import PlanConfig
from spectralearth_build.crs import LONLAT, reproject, transformer
from spectralearth_build.geometry.patches import window_sum
from spectralearth_build.geometry.tiles import TileSet
from spectralearth_build.records import TileRecord

ORIGIN = 15.0


def _covered_windows(fp: Any, sub: float, k: int) -> tuple[int, int, np.ndarray] | None:
    """``(u0, v1, W)``: W[r, c] when the cell whose top-left sub-cell is (u0 + c, v1 - r) fits."""
    if fp.is_empty:
        return None
    minx, miny, maxx, maxy = fp.bounds
    u0, u1 = math.floor((minx - ORIGIN) / sub), math.floor((maxx - ORIGIN) / sub)
    v0, v1 = math.floor((miny - ORIGIN) / sub), math.floor((maxy - ORIGIN) / sub)
    nu, nv = u1 - u0 + 1, v1 - v0 + 1
    if nu < k or nv < k:
        return None
    x0, y1 = ORIGIN + u0 * sub, ORIGIN + (v1 + 1) * sub
    frame = shapely.box(x0 - sub, y1 - (nv + 1) * sub, x0 + (nu + 1) * sub, y1 + sub)
    outside = frame.difference(fp)
    touched = rasterio.features.rasterize(
        [(outside, 1)],
        out_shape=(nv, nu),
        transform=Affine(sub, 0.0, x0, 0.0, -sub, y1),
        all_touched=True,
        fill=0,
        dtype="uint8",
    )
    full = window_sum((touched == 0).astype(np.int32), k) == k * k
    return u0, v1, full


def grid_first_baseline(
    tiles: list[TileRecord], config: PlanConfig, step_px: int = 8
) -> dict[str, Any]:
    """Patches and multi-timestamp patches of the best-offset lattice per zone (see module)."""
    t0 = time.perf_counter()
    ts = TileSet.build(tiles, config)  # planning footprints, tiles without clear patch left out
    res = config.pixel_size_m
    sub = step_px * res
    k = config.patch_px // step_px
    gap = ts.min_gap_s
    crs_of = [t.crs for t in ts.tiles]
    ll = ts.lonlat_bounds
    by_t: Counter[int] = Counter()
    offsets: dict[str, list[int]] = {}
    for zone in sorted(set(crs_of)):
        z = int(zone[-2:])
        lo, hi = -180 + 6 * (z - 1), -180 + 6 * z
        north = zone.startswith("EPSG:326")
        sel = [
            i
            for i in range(len(ts))
            if ll[i, 2] >= lo and ll[i, 0] <= hi and crs_of[i].startswith("EPSG:326") == north
        ]
        windows: list[tuple[int, int, int, np.ndarray]] = []
        for i in sel:
            t = ts.tiles[i]
            fp = t.footprint
            if t.crs != zone:
                fp = reproject(fp, t.crs, zone, 300.0)
                fp = fp.buffer(-config.resample_margin_px * res, join_style="mitre")
            hit = _covered_windows(fp, sub, k)
            if hit is not None:
                windows.append((i, *hit))
        if not windows:
            continue
        to_ll = transformer(zone, LONLAT)
        best: tuple[int, int, int] | None = None
        best_cells: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        for ov in range(k):
            for ou in range(k):
                us, vs, idx = [], [], []
                for i, u0, v1, full in windows:
                    # top-left sub-cell (u, v_top); the cell's lower-left is (u, v_top - k + 1)
                    c0 = (ou - u0) % k
                    r0 = (v1 - (k - 1) - ov) % k
                    sel_w = full[r0::k, c0::k]
                    rr, cc = np.nonzero(sel_w)
                    if len(rr):
                        us.append(u0 + c0 + cc * k)
                        vs.append(v1 - (r0 + rr * k) - (k - 1))
                        idx.append(np.full(len(rr), i, dtype=np.int64))
                if not us:
                    continue
                u, v, ii = np.concatenate(us), np.concatenate(vs), np.concatenate(idx)
                lon, _ = to_ll.transform(
                    ORIGIN + (u + k / 2) * sub, ORIGIN + (v + k / 2) * sub, errcheck=False
                )
                own = (np.asarray(lon) >= lo) & (np.asarray(lon) < hi)
                u, v, ii = u[own], v[own], ii[own]
                if len(u) == 0:
                    continue
                key = (u.astype(np.int64) << 32) + (v.astype(np.int64) & 0xFFFFFFFF)
                order = np.argsort(key, kind="stable")
                key, ii = key[order], ii[order]
                starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
                tt, dd = ts.times_s[ii], ts.datatakes[ii]
                span = np.maximum.reduceat(tt, starts) - np.minimum.reduceat(tt, starts)
                two = np.maximum.reduceat(dd, starts) != np.minimum.reduceat(dd, starts)
                multi = int(np.count_nonzero((span >= gap) & two))
                if best is None or multi > best[0]:
                    best = (multi, ou, ov)
                    best_cells = (key, ii, starts)
        if best is None or best_cells is None:
            continue
        offsets[zone] = [best[1], best[2]]
        key, ii, starts = best_cells
        ends = np.r_[starts[1:], len(key)]
        for s, e in zip(starts.tolist(), ends.tolist()):
            kept: list[int] = []
            for i in sorted(ii[s:e].tolist()):
                if all(ts.compatible(i, j) for j in kept):
                    kept.append(i)
            by_t[len(kept)] += 1
    del gap
    return {
        "seconds": round(time.perf_counter() - t0, 3),
        "step_px": step_px,
        "patches": sum(by_t.values()),
        "multi_timestamp_patches": sum(n for t, n in by_t.items() if t >= 2),
        "patches_by_timestamps": {str(t): by_t[t] for t in sorted(by_t)},
        "views": sum(t * n for t, n in by_t.items()),
        "best_offsets_px": {z: [o * step_px for o in off] for z, off in offsets.items()},
    }
