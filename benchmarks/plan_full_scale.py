"""Full-scale planning benchmark: an archive the size of SpectralEarth's, footprints only.

Generates 11,636 tile records (no pixels) with realistic geometry:

* datatake strips: consecutive ~30 km tiles along a ground track heading south-south-west, the
  swath rotated 10-13 degrees from north, consecutive tiles overlapping by 14 rows, each tile a
  rotated square footprint (~71% valid) inside a north-up raster of ~1190 px whose origin is at
  15 m modulo 30 m in the UTM zone of the tile centre (so strips crossing a zone line change zone);
* revisits of hotspot sites (a few "super sites" visited 35-50 times, many visited 4-15 times,
  some straddling UTM zone lines), each visit a new datatake on another date with a random
  across-track (off-nadir) offset and along-track phase;
* background strips elsewhere, visited once;
* in the ``cloudy`` case, clear-sky footprints: every tile gets 1-5 elliptical cloud holes
  (seeded; 16 vertices each, about what the scan's 1.5 px simplification leaves of a km-sized
  cloud) covering a fraction of its valid area drawn uniformly from 0-40% (less where holes
  overlap); the ``clear`` case is the same archive without clouds.

For each case it times :func:`spectralearth_build.geometry.plan_patches` (stages: graph, tuples,
placement, views, windows) in this process and on a 2-worker local Dask cluster, side by side,
checks that both plans are the same bytes, and runs the clear-sky grid-first baseline
(:mod:`grid_first`: best 128 px lattice offset per zone in 8 px steps) on the same footprints.
The parallel run also reports CPU seconds that the machine's load distorts less than wall
clock (``cpu_accounting``: every task timed on its worker, the driver's CPU, the critical path
and the ratio it predicts, see :data:`CRITICAL_PATH_NOTE`).  Writes
benchmarks/results/plan_full_scale.json.

Run: ``python benchmarks/plan_full_scale.py [--tiles 11636] [--cases cloudy,clear] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import pickle
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.affinity
from pyproj import Transformer

from spectralearth_build.cluster import client_map, dask_client
from spectralearth_build.config import BuildConfig, PlanConfig
from spectralearth_build.geometry import plan_patches
from spectralearth_build.grid import PixelGrid
from spectralearth_build.plan import write_plan
from spectralearth_build.records import TileRecord

sys.path.insert(0, str(Path(__file__).parent))
from grid_first import grid_first_baseline  # noqa: E402

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


def add_clouds(tiles: list[TileRecord], seed: int) -> list[TileRecord]:
    """The tiles with clear-sky footprints: 1-5 elliptical holes over 0-40% of each footprint."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for t in tiles:
        fp = t.footprint
        target = rng.uniform(0.0, 0.4) * fp.area
        n = int(rng.integers(1, 6))
        shares = rng.dirichlet(np.ones(n)) * target
        minx, miny, maxx, maxy = fp.bounds
        holes = []
        for a in shares:
            while True:
                x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
                if fp.contains(shapely.Point(x, y)):
                    break
            ratio = rng.uniform(0.4, 1.0)
            rx = math.sqrt(a / (math.pi * ratio))
            ell = shapely.affinity.scale(shapely.Point(0, 0).buffer(1.0, 4), rx, rx * ratio)
            ell = shapely.affinity.rotate(ell, rng.uniform(0, 180))
            holes.append(shapely.affinity.translate(ell, x, y))
        clear = fp.difference(shapely.union_all(holes))
        out.append(dataclasses.replace(t, clear=clear))
    return out


def _plan_digest(result, config: PlanConfig) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.parquet"
        write_plan(result.patches, path, result.file_metadata(BuildConfig().replace(plan=config)))
        return hashlib.sha256(path.read_bytes()).hexdigest()


CRITICAL_PATH_NOTE = (
    "critical_path_cpu_s = driver CPU seconds (all of them, as if none overlapped the workers)"
    " + the largest worker process CPU seconds over the run: the wall time on an idle machine"
    " with a core per process, up to scheduling gaps (an upper bound when the driver works while"
    " workers compute); predicted_ratio = critical_path_cpu_s / single-process CPU seconds."
    " balanced_path_cpu_s = driver main-thread CPU seconds (the planner's own serial work; the"
    " rest of the driver's CPU is Dask's scheduler and comms, which grow with the wall time)"
    " + the largest worker load when the measured tasks are given, in submission order, to the"
    " worker free first (as Dask does on an idle machine); predicted_ratio_balanced is it over"
    " the single-process CPU seconds"
)


class _TimedTask:
    """A task that reports its CPU seconds (incl. pickling its result) and its process id."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn

    def __call__(self, item: Any) -> tuple[bytes, int, float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        blob = pickle.dumps(self.fn(item), protocol=pickle.HIGHEST_PROTOCOL)
        return blob, os.getpid(), time.process_time() - c0, time.perf_counter() - t0


def timed_map(map_fn: Callable[..., Iterator[Any]], log: list[dict]) -> Callable[..., Iterator]:
    """``map_fn`` with every task timed on its worker; appends one record per task to ``log``."""

    def mapper(fn: Callable[[Any], Any], items: Any) -> Iterator[Any]:
        inner = fn
        while hasattr(inner, "fn"):  # the planner's wrappers
            inner = inner.fn
        name = getattr(inner, "__name__", type(inner).__name__)
        for blob, pid, cpu, wall in map_fn(_TimedTask(fn), items):
            log.append({"fn": name, "pid": pid, "cpu_s": cpu, "wall_s": wall})
            yield pickle.loads(blob)

    return mapper


def cpu_accounting(
    single_cpu: float,
    driver_cpu: float,
    driver_main_cpu: float,
    process_cpu: dict[int, float],
    tasks: list[dict],
) -> dict:
    """CPU-time figures of a parallel run that do not depend on the machine's load.

    See :data:`CRITICAL_PATH_NOTE`; per worker: its tasks, their CPU seconds (as measured in the
    task, pickling the result included) and the rest of the worker process's CPU seconds
    (receiving tasks, Dask's own work).
    """
    per_worker = []
    for pid in sorted(process_cpu):
        mine = [t for t in tasks if t["pid"] == pid]
        task_cpu = sum(t["cpu_s"] for t in mine)
        per_worker.append(
            {
                "tasks": len(mine),
                "task_cpu_s": round(task_cpu, 2),
                "process_cpu_s": round(process_cpu[pid], 2),
                "overhead_cpu_s": round(process_cpu[pid] - task_cpu, 2),
            }
        )
    by_fn: dict[str, dict] = {}
    for t in tasks:
        d = by_fn.setdefault(t["fn"], {"tasks": 0, "cpu_s": 0.0, "longest_task_cpu_s": 0.0})
        d["tasks"] += 1
        d["cpu_s"] += t["cpu_s"]
        d["longest_task_cpu_s"] = max(d["longest_task_cpu_s"], t["cpu_s"])
    worst = max(process_cpu.values())
    critical = driver_cpu + worst
    # the same tasks, each given in submission order to the worker that is free first
    loads = [0.0] * len(process_cpu)
    for t in tasks:
        loads[loads.index(min(loads))] += t["cpu_s"]
    balanced = driver_main_cpu + max(loads)
    return {
        "single_cpu_s": round(single_cpu, 2),
        "driver_cpu_s": round(driver_cpu, 2),
        "driver_main_thread_cpu_s": round(driver_main_cpu, 2),
        "driver_background_cpu_s": round(driver_cpu - driver_main_cpu, 2),
        "worker_cpu_s": per_worker,
        "tasks_by_function": {
            k: {kk: round(vv, 2) if isinstance(vv, float) else vv for kk, vv in v.items()}
            for k, v in sorted(by_fn.items())
        },
        "critical_path_cpu_s": round(critical, 2),
        "predicted_ratio": round(critical / single_cpu, 3),
        "list_schedule_worker_cpu_s": [round(v, 2) for v in sorted(loads)],
        "balanced_path_cpu_s": round(balanced, 2),
        "predicted_ratio_balanced": round(balanced / single_cpu, 3),
        "explained": CRITICAL_PATH_NOTE,
    }


def run_case(tiles: list[TileRecord], config: PlanConfig, workers: int) -> dict:
    """Plan in this process and on ``workers`` Dask workers; the baseline; the comparison."""
    t0, c0 = time.perf_counter(), time.process_time()
    single = plan_patches(tiles, config)
    single_s, single_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_single = _maxrss_mib()
    tasks: list[dict] = []
    with dask_client(workers) as client:
        pids = client.run(os.getpid)
        cpu0 = client.run(time.process_time)  # workers are up before the clock starts
        t0, d0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
        par = plan_patches(tiles, config, map_fn=timed_map(client_map(client), tasks))
        par_s, driver_cpu = time.perf_counter() - t0, time.process_time() - d0
        driver_main_cpu = time.thread_time() - m0
        cpu1 = client.run(time.process_time)
        worker_rss = client.run(_maxrss_mib)
    process_cpu = {pids[w]: cpu1[w] - cpu0[w] for w in cpu1}
    same = par.patches == single.patches
    digest_single, digest_par = _plan_digest(single, config), _plan_digest(par, config)
    baseline = grid_first_baseline(tiles, config)
    s = single.summary
    ratio_by_t = {
        t: round(n / baseline["patches_by_timestamps"][t], 3)
        for t, n in s["patches_by_timestamps"].items()
        if baseline["patches_by_timestamps"].get(t)
    }
    return {
        "single_process": {
            "seconds_total": round(single_s, 2),
            "cpu_seconds_total": round(single_cpu, 2),
            "seconds_per_stage": s["seconds"],
            "peak_rss_mib": rss_single,
        },
        f"dask_{workers}_workers": {
            "seconds_total": round(par_s, 2),
            "seconds_per_stage": par.summary["seconds"],
            "cpu_seconds_driver": round(driver_cpu, 2),
            "cpu_seconds_workers": sorted(round(cpu1[w] - cpu0[w], 2) for w in cpu1),
            "speedup": round(single_s / par_s, 3),
            "time_ratio_vs_single": round(par_s / single_s, 3),
            "peak_rss_mib_driver": _maxrss_mib(),
            "peak_rss_mib_workers": sorted(worker_rss.values()),
            "cpu_accounting": cpu_accounting(
                single_cpu, driver_cpu, driver_main_cpu, process_cpu, tasks
            ),
        },
        "same_patches": same,
        "plan_sha256_single": digest_single,
        "plan_sha256_dask": digest_par,
        "same_plan_bytes": digest_single == digest_par,
        "plan": {
            k: s[k]
            for k in (
                "tiles",
                "tiles_without_clear_patch",
                "edges",
                "components",
                "largest_components",
                "planning_groups",
                "largest_planning_groups",
                "max_degree",
                "mean_degree",
                "tiles_with_degree_30_or_more",
                "tuples_by_size",
                "patches",
                "multi_timestamp_patches",
                "patches_by_timestamps",
                "placed_by_tuple_size",
                "views",
                "resampled_views",
            )
        },
        "grid_first_baseline": baseline,
        "multi_timestamp_ratio_vs_baseline": round(
            s["multi_timestamp_patches"] / max(1, baseline["multi_timestamp_patches"]), 3
        ),
        "patches_ratio_vs_baseline_by_timestamps": ratio_by_t,
    }


def _maxrss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / 1024 / (1024 if sys.platform == "darwin" else 1), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=11_636)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cases", default="cloudy,clear")
    default_out = Path(__file__).parent / "results/plan_full_scale.json"
    ap.add_argument("--out", type=Path, default=default_out)
    args = ap.parse_args()

    t0 = time.perf_counter()
    tiles = ArchiveGenerator(args.tiles, args.seed).generate()
    gen_s = time.perf_counter() - t0
    config = PlanConfig()
    out: dict = {
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
        "peak_rss_mib_before_planning": _maxrss_mib(),
        "cases": {},
    }
    for case in args.cases.split(","):
        case_tiles = add_clouds(tiles, args.seed) if case == "cloudy" else tiles
        if case == "cloudy":
            valid = sum(t.footprint.area for t in tiles)
            out["archive"]["cloudy_clear_fraction"] = round(
                sum(t.clear.area for t in case_tiles) / valid, 4
            )
        out["cases"][case] = run_case(case_tiles, config, args.workers)
        print(case, json.dumps(out["cases"][case], indent=1))
        out["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")  # after each case
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
