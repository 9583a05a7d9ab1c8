"""Full-scale planning benchmark: an archive the size of SpectralEarth's, footprints only.

Generates 11,636 tile records (no pixels) with realistic geometry:

* datatake strips: consecutive ~30 km tiles along a ground track heading south-south-west, the
  swath rotated 10-13 degrees from north, consecutive tiles overlapping by 14 rows, each tile a
  rotated square footprint (~71% valid) inside a north-up raster of ~1190 px whose origin is at
  15 m modulo 30 m in the UTM zone of the tile centre (so strips crossing a zone line change zone);
* revisits of hotspot sites (a few "super sites" visited 35-50 times, many visited 4-15 times,
  some straddling UTM zone lines), each visit a new datatake on another date with a random
  across-track (off-nadir) offset and along-track phase;
* background strips elsewhere, visited once.

Then times :func:`spectralearth_build.geometry.plan_patches` (graph, tuples, placement, views,
windows) and a grid-first baseline on the same footprints: a fixed 128 px lattice per UTM zone,
each cell (owned by the zone its centre longitude falls in) taking every tile whose footprint,
reprojected and shrunk by the resampling margin where needed, covers it fully, keeping distinct
acquisitions.  Writes benchmarks/results/plan_full_scale.json.

Run: ``python benchmarks/plan_full_scale.py [--tiles 11636] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer

from spectralearth_build.config import PlanConfig
from spectralearth_build.geometry import plan_patches
from spectralearth_build.geometry.tiles import TileSet, reproject
from spectralearth_build.grid import PixelGrid
from spectralearth_build.records import TileRecord

RES = 30.0
TILE_M = 30_000.0
STEP_M = TILE_M - 14 * RES  # consecutive tiles overlap by 14 rows
T0 = datetime(2022, 4, 1, tzinfo=timezone.utc)


def utm_epsg(lon: float, lat: float) -> str:
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def _tf(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


class ArchiveGenerator:
    """Seeded footprint-only archive generator."""

    def __init__(self, n_tiles: int, seed: int = 0):
        self.n_tiles = n_tiles
        self.rng = np.random.default_rng(seed)
        self.datatakes: list[dict] = []

    def strip(
        self,
        site_lon: float,
        site_lat: float,
        n: int,
        j0: int,
        along: float,
        across: float,
        heading_deg: float,
        when: datetime,
    ) -> None:
        """One datatake of ``n`` tiles whose tile ``j0`` covers the site."""
        crs = utm_epsg(site_lon, site_lat)
        sx, sy = _tf("EPSG:4326", crs).transform(site_lon, site_lat)
        th = math.radians(heading_deg)
        u = np.array([-math.sin(th), -math.cos(th)])  # along track (south, drifting west)
        v = np.array([math.cos(th), -math.sin(th)])  # across track
        k = np.arange(n) - j0
        cx = sx + (k * STEP_M - along) * u[0] + across * v[0]
        cy = sy + (k * STEP_M - along) * u[1] + across * v[1]
        lon, lat = _tf(crs, "EPSG:4326").transform(cx, cy)
        self.datatakes.append(
            {"lon": np.asarray(lon), "lat": np.asarray(lat), "heading": heading_deg, "when": when}
        )

    def generate(self) -> list[TileRecord]:
        rng = self.rng
        days = 730
        sites = []
        for _ in range(10):  # super sites
            sites.append((rng.uniform(-120, 140), rng.uniform(-35, 55), int(rng.integers(35, 51))))
        for s in range(110):
            lon = rng.uniform(-120, 140)
            if s % 7 == 0:  # straddle a UTM zone line
                lon = 6.0 * round(lon / 6.0) + rng.uniform(-0.1, 0.1)
            sites.append((lon, rng.uniform(-40, 60), int(rng.integers(4, 16))))
        for lon, lat, visits in sites:
            for _ in range(visits):
                n = int(rng.integers(1, 9))
                self.strip(
                    lon,
                    lat,
                    n,
                    int(rng.integers(0, n)),
                    rng.uniform(-15e3, 15e3),
                    rng.uniform(-12e3, 12e3),
                    rng.uniform(10, 13),
                    T0 + timedelta(days=float(rng.uniform(0, days))),
                )
        total = sum(len(d["lon"]) for d in self.datatakes)
        while total < self.n_tiles:
            n = int(rng.integers(3, 31))
            self.strip(
                rng.uniform(-125, 150),
                rng.uniform(-45, 65),
                n,
                0,
                0.0,
                0.0,
                rng.uniform(10, 13),
                T0 + timedelta(days=float(rng.uniform(0, days))),
            )
            total += n
        return self._records()

    def _records(self) -> list[TileRecord]:
        order = sorted(range(len(self.datatakes)), key=lambda d: self.datatakes[d]["when"])
        out: list[TileRecord] = []
        for dt_id, d in enumerate(order, start=1000):
            dt = self.datatakes[d]
            base = dt["when"].replace(hour=10, minute=30, second=0, microsecond=0)
            for k, (lon, lat) in enumerate(zip(dt["lon"].tolist(), dt["lat"].tolist())):
                if len(out) == self.n_tiles:
                    return out
                start = base + timedelta(seconds=4.1 * k)
                out.append(_tile(dt_id, k + 1, start, lon, lat, dt["heading"]))
        return out


def _tile(
    datatake: int, tile: int, start: datetime, lon: float, lat: float, heading_deg: float
) -> TileRecord:
    crs = utm_epsg(lon, lat)
    cx, cy = _tf("EPSG:4326", crs).transform(lon, lat)
    th = math.radians(heading_deg)
    u = np.array([-math.sin(th), -math.cos(th)]) * (TILE_M / 2)
    v = np.array([math.cos(th), -math.sin(th)]) * (TILE_M / 2)
    c = np.array([cx, cy])
    corners = [c + u + v, c + u - v, c - u - v, c - u + v]
    fp = shapely.Polygon(corners)
    minx, miny, maxx, maxy = fp.bounds
    x0 = math.floor((minx - 15.0) / RES) * RES + 15.0
    y0 = math.ceil((maxy - 15.0) / RES) * RES + 15.0
    w = math.ceil((maxx - x0) / RES)
    h = math.ceil((y0 - miny) / RES)
    grid = PixelGrid(crs, (RES, 0.0, x0, 0.0, -RES, y0), (h, w))
    name = (
        f"ENMAP01-____L2A-DT{datatake:010d}_{start:%Y%m%dT%H%M%S}Z_{tile:03d}"
        f"_V010402_20240601T000000Z"
    )
    return TileRecord(name, datatake, tile, start, grid, fp)


def grid_first_baseline(tiles: list[TileRecord], config: PlanConfig) -> dict:
    """Fixed ``patch_px`` lattice per zone; each cell takes every tile covering it fully."""
    t0 = time.perf_counter()
    ts = TileSet.build(tiles, config)
    side = config.patch_px * config.pixel_size_m
    cells: dict[tuple[str, int, int], list[int]] = {}
    crs_of = [t.crs for t in ts.tiles]
    zones = sorted(set(crs_of))
    ll = ts.lonlat_bounds
    for zone in zones:
        z = int(zone[-2:])
        lo, hi = -180 + 6 * (z - 1), -180 + 6 * z
        north = zone.startswith("EPSG:326")
        # tiles reaching into this zone's band (same hemisphere)
        sel = [
            i
            for i in range(len(ts))
            if ll[i, 2] >= lo and ll[i, 0] <= hi and crs_of[i].startswith("EPSG:326") == north
        ]
        to_ll = _tf(zone, "EPSG:4326")
        for i in sel:
            t = ts.tiles[i]
            if t.crs == zone:
                fp = t.footprint
            else:
                fp = reproject(t.footprint, t.crs, zone, 300.0)
                fp = fp.buffer(-config.resample_margin_px * config.pixel_size_m, join_style="mitre")
            if fp.is_empty:
                continue
            minx, miny, maxx, maxy = fp.bounds
            c0, c1 = math.floor((minx - 15) / side), math.floor((maxx - 15) / side)
            r0, r1 = math.floor((miny - 15) / side), math.floor((maxy - 15) / side)
            cc, rr = np.meshgrid(np.arange(c0, c1 + 1), np.arange(r0, r1 + 1))
            cc, rr = cc.ravel(), rr.ravel()
            x, y = 15 + cc * side, 15 + rr * side
            ok = shapely.covers(fp, shapely.box(x, y, x + side, y + side))
            if not ok.any():
                continue
            cc, rr = cc[ok], rr[ok]
            lon, _ = to_ll.transform(15 + (cc + 0.5) * side, 15 + (rr + 0.5) * side)
            own = (np.asarray(lon) >= lo) & (np.asarray(lon) < hi)
            for c, r in zip(cc[own].tolist(), rr[own].tolist()):
                cells.setdefault((zone, c, r), []).append(i)
    by_t: Counter[int] = Counter()
    for members in cells.values():
        kept: list[int] = []
        for i in sorted(members):
            if all(ts.compatible(i, j) for j in kept):
                kept.append(i)
        by_t[len(kept)] += 1
    return {
        "seconds": round(time.perf_counter() - t0, 3),
        "patches": sum(by_t.values()),
        "multi_timestamp_patches": sum(n for k, n in by_t.items() if k >= 2),
        "patches_by_timestamps": {str(k): by_t[k] for k in sorted(by_t)},
        "views": sum(k * n for k, n in by_t.items()),
    }


def _maxrss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / 1024 / (1024 if sys.platform == "darwin" else 1), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=11_636)
    ap.add_argument("--seed", type=int, default=0)
    default_out = Path(__file__).parent / "results/plan_full_scale.json"
    ap.add_argument("--out", type=Path, default=default_out)
    args = ap.parse_args()

    t0 = time.perf_counter()
    tiles = ArchiveGenerator(args.tiles, args.seed).generate()
    gen_s = time.perf_counter() - t0
    rss_before = _maxrss_mib()
    config = PlanConfig()

    t0, c0 = time.perf_counter(), time.process_time()
    result = plan_patches(tiles, config)
    plan_s, plan_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_plan = _maxrss_mib()
    print(json.dumps(result.summary, indent=1))

    baseline = grid_first_baseline(tiles, config)
    s = result.summary
    out = {
        "benchmark": "plan_full_scale",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        },
        "archive": {
            "tiles": len(tiles),
            "datatakes": len({t.datatake for t in tiles}),
            "utm_zones": len({t.crs for t in tiles}),
            "generation_seconds": round(gen_s, 2),
            "seed": args.seed,
        },
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "planning": {
            "seconds_total": round(plan_s, 2),
            "cpu_seconds_total": round(plan_cpu, 2),
            "seconds_per_stage": s["seconds"],
            "peak_rss_mib_before_planning": rss_before,
            "peak_rss_mib_after_planning": rss_plan,
            "tiles": s["tiles"],
            "edges": s["edges"],
            "components": s["components"],
            "largest_components": s["largest_components"],
            "max_degree": s["max_degree"],
            "mean_degree": s["mean_degree"],
            "tiles_with_degree_30_or_more": s["tiles_with_degree_30_or_more"],
            "tuples_by_size": s["tuples_by_size"],
            "patches": s["patches"],
            "multi_timestamp_patches": s["multi_timestamp_patches"],
            "patches_by_timestamps": s["patches_by_timestamps"],
            "placed_by_tuple_size": s["placed_by_tuple_size"],
            "views": s["views"],
            "resampled_views": s["resampled_views"],
        },
        "grid_first_baseline": baseline,
        "multi_timestamp_ratio_vs_baseline": round(
            s["multi_timestamp_patches"] / max(1, baseline["multi_timestamp_patches"]), 3
        ),
        "peak_rss_mib_end": _maxrss_mib(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("planning", "grid_first_baseline")}, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
