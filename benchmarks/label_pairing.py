"""Label pairing throughput and bytes read from a large CORINE-like raster.

Writes a synthetic 20,000 x 20,000 px CORINE-like GeoTIFF (EPSG:3035, 100 m, uint8 grid
codes 1..44 in parcels of about 600 m, deflate, tiled) covering 2,000 x 2,000 km of Europe,
places clustered 128 x 128 px EnMAP patch grids (30 m, UTM zone of each cluster, origin
15 mod 30 m) over it, as a build places them (tile-sized clusters of neighbouring locations),
and pairs them with ``pair_labels`` as ``spectralearth-build labels`` does:

* in this process (no Dask), with the bytes this process read from files (``rchar`` of
  ``/proc/self/io``) during the pairing, and
* on a local Dask cluster of two single-threaded workers (the same locations, a fresh store),

side by side in one run, so only ratios are compared on a loaded machine.  Bytes are reported
per location against the location's own window (label pixels under the patch, 1 byte each):
the label pixels requested (bounding rectangle plus a one-pixel margin) and the compressed
GeoTIFF tiles those windows touch (``block_size`` of each tile, counted once per work unit, as
GDAL's block cache keeps them while a unit's file is open; and, for comparison, once per
location).  The bytes the process read from all files (``rchar``) are recorded too, but they
are dominated by PROJ's database, which GDAL's warper queries for every location.

    python benchmarks/label_pairing.py                  # 2,000 locations, 256-px tiles
    python benchmarks/label_pairing.py --locations 500 --block 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))

SIZE = 20_000
RES = 100.0
X0, Y0 = 4_000_000.0, 4_500_000.0  # upper-left corner in EPSG:3035


def rchar() -> int:
    """Bytes this process has read via read() calls so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def write_raster(path: Path, block: int, seed: int = 0) -> float:
    """The CORINE-like raster: parcels of 6 px with jittered edges; returns seconds."""
    import rasterio
    from rasterio.windows import Window

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    cell = 6
    n = SIZE // cell + 2
    codes = rng.integers(1, 45, size=(n, n), dtype=np.uint8)
    profile = {
        "driver": "GTiff",
        "height": SIZE,
        "width": SIZE,
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:3035",
        "transform": rasterio.Affine(RES, 0, X0, 0, -RES, Y0),
        "nodata": 48,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(path, "w", **profile) as dst:
        rows_per = block * 4
        for r0 in range(0, SIZE, rows_per):
            r1 = min(SIZE, r0 + rows_per)
            rr = np.arange(r0, r1)[:, None]
            cc = np.arange(SIZE)[None, :]
            jr = (rr + ((cc * 7 + rr * 3) % 5 == 0)) // cell
            jc = (cc + ((rr * 5 + cc) % 7 == 0)) // cell
            dst.write(codes[jr, jc], 1, window=Window(0, r0, SIZE, r1 - r0))
    return time.perf_counter() - t0


def patch_grids(n_locations: int, seed: int = 1) -> list:
    """Clusters of 40 locations inside 30 km squares, spread over the raster's inner area."""
    from spectralearth_build.crs import transformer
    from spectralearth_build.grid import PixelGrid

    rng = np.random.default_rng(seed)
    per = 40
    grids = []
    to_ll = transformer("EPSG:3035", "EPSG:4326")
    for _ in range((n_locations + per - 1) // per):
        cx = X0 + rng.uniform(100_000, SIZE * RES - 100_000)
        cy = Y0 - rng.uniform(100_000, SIZE * RES - 100_000)
        lon, lat = to_ll.transform(cx, cy)
        epsg = f"EPSG:{32600 + int((lon + 180) // 6) + 1}"
        ux, uy = transformer("EPSG:4326", epsg).transform(lon, lat)
        for _ in range(per):
            x = 30 * round((ux + rng.uniform(-15_000, 15_000)) / 30) + 15
            y = 30 * round((uy + rng.uniform(-15_000, 15_000)) / 30) + 15
            grids.append(PixelGrid(epsg, (30.0, 0.0, x, 0.0, -30.0, y), (128, 128)))
    return grids[:n_locations]


def tile_bytes(raster: Path, grids: list, spec: object, unit: int) -> dict[str, float]:
    """Compressed bytes of the GeoTIFF tiles the windows touch: once per unit (GDAL's block
    cache keeps a tile decoded while a unit's file is open) and once per location."""
    import rasterio

    from spectralearth_build.labels.pairing import plan_window
    from spectralearth_build.labels.source import resolve_source

    source = resolve_source(spec)  # type: ignore[arg-type]
    with rasterio.open(raster) as f:
        bh, bw = f.block_shapes[0]
        size = {}

        def blocks(rect: tuple[int, int, int, int]) -> set[tuple[int, int]]:
            r0, c0, r1, c1 = rect
            return {
                (i, j)
                for i in range(max(0, r0) // bh, (min(SIZE, r1) - 1) // bh + 1)
                for j in range(max(0, c0) // bw, (min(SIZE, c1) - 1) // bw + 1)
            }

        def nbytes(bs: set[tuple[int, int]]) -> int:
            for b in bs - size.keys():
                size[b] = f.block_size(1, *b)
            return sum(size[b] for b in bs)

        per_loc = [blocks(plan_window(g, source).padded) for g in grids]
        per_unit = sum(
            nbytes(set().union(*per_loc[s : s + unit])) for s in range(0, len(grids), unit)
        )
        alone = sum(nbytes(b) for b in per_loc)
    return {
        "tile_bytes_per_location_cached": per_unit / len(grids),
        "tile_bytes_per_location_uncached": alone / len(grids),
        "tiles_per_location": float(np.mean([len(b) for b in per_loc])),
    }


def _warm_worker() -> None:
    import rasterio.warp  # noqa: F401
    import zarr  # noqa: F401

    import spectralearth_build.labels.pairing  # noqa: F401
    import spectralearth_build.labels.store  # noqa: F401


def main() -> None:
    from labelkit import write_dataset

    from spectralearth_build import __version__
    from spectralearth_build.cluster import dask_client
    from spectralearth_build.labels.spec import parse_label_option
    from spectralearth_build.labels.store import pair_labels

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--locations", type=int, default=2000)
    ap.add_argument("--block", type=int, default=256, help="GeoTIFF tile size (px)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/seb-label-bench"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "label_pairing.json")
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    raster = args.work / f"CLC2018_synthetic_{SIZE}px_b{args.block}.tif"
    write_s = None
    if not raster.exists():
        write_s = write_raster(raster, args.block)
    grids = patch_grids(args.locations)
    spec = parse_label_option(f"corine={raster}")
    # warm up imports and GDAL (module files would count as bytes read) on other locations
    warm = args.work / "ds-warm-up"
    shutil.rmtree(warm, ignore_errors=True)
    write_dataset(warm, patch_grids(40, seed=99), [["W"]] * 40)
    pair_labels(warm, [spec])
    results = {}
    for mode, workers in (("in_process", 0), ("dask_2_workers", 2)):
        ds = args.work / f"ds-{mode}"
        shutil.rmtree(ds, ignore_errors=True)
        write_dataset(ds, grids, [[f"P{i // 40}"] for i in range(len(grids))])
        with dask_client(workers) as client:
            if client is not None:
                client.run(_warm_worker)
            r0 = rchar()
            t0 = time.perf_counter()
            report = pair_labels(ds, [spec], client=client)
            seconds = time.perf_counter() - t0
            read = rchar() - r0
        meta = report.labels["corine"]
        own = (128 * 30.0 / RES) ** 2
        results[mode] = {
            "workers": workers,
            "seconds": seconds,
            "locations_per_s": len(grids) / seconds,
            "coverage": meta["coverage"],
            "label_bytes_requested_per_location": meta["bytes_requested"] / len(grids),
            "own_window_bytes": own,
            "requested_over_own_window": meta["bytes_requested"] / len(grids) / own,
        }
        if workers == 0:  # all files: includes PROJ's proj.db, read for each CRS transform
            results[mode]["process_bytes_read_per_location"] = read / len(grids)
    size = raster.stat().st_size
    from spectralearth_build.labels.store import DEFAULT_SHARD_LOCATIONS

    tiles = tile_bytes(raster, grids, spec, DEFAULT_SHARD_LOCATIONS)
    own = (128 * 30.0 / RES) ** 2
    tiles["cached_over_own_window"] = tiles["tile_bytes_per_location_cached"] / own
    tiles["uncached_over_own_window"] = tiles["tile_bytes_per_location_uncached"] / own
    out = {
        "benchmark": "label_pairing",
        "package_version": __version__,
        "machine": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "platform": platform.platform(),
            "cpus": len(os.sched_getaffinity(0)),
        },
        "raster": {
            "shape_yx": [SIZE, SIZE],
            "res_m": RES,
            "crs": "EPSG:3035",
            "block_px": args.block,
            "file_bytes": size,
            "uncompressed_bytes": SIZE * SIZE,
            "write_seconds": write_s,
        },
        "locations": len(grids),
        "patch_px": 128,
        "tile_reads": tiles,
        "results": results,
        "ratios": {
            "dask_2_over_in_process_speed": results["dask_2_workers"]["locations_per_s"]
            / results["in_process"]["locations_per_s"],
            "raster_file_over_tile_bytes_read": size
            / (tiles["tile_bytes_per_location_cached"] * len(grids)),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
