"""Scan cost of the clear-sky footprint: time per product with and without it, side by side.

For every product of a synthetic archive (default: ``synth --preset full``, real tile size), runs
the scan of one product twice, alternating the order: *valid only* (metadata, image check, valid
footprint: what scanning did before clear-sky footprints) and *valid + clear* (the current
:func:`spectralearth_build.catalog.scan_source`, which also reads the cloud, shadow, haze, cirrus
and snow layers and builds the clear-sky footprint).  Writes
benchmarks/results/scan_footprints.json.

Run: ``spectralearth-build synth --out /tmp/full --preset full --bands 8`` (the footprints do
not depend on the band count), then ``python benchmarks/scan_footprints.py --tiles /tmp/full``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import shapely

from spectralearth_build.bands import BandSelection
from spectralearth_build.catalog import scan_source
from spectralearth_build.config import BuildConfig
from spectralearth_build.enmap.discovery import discover_products
from spectralearth_build.enmap.product import EnmapProduct, ProductError


def valid_only(source, config: BuildConfig) -> None:
    product = EnmapProduct(source)
    _ = product.metadata
    product.check(config.bands, verify_pixels=config.scan.verify_pixels)
    product.footprint(config.scan.footprint_simplify_px)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=Path, required=True)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results/scan_footprints.json"
    )
    args = ap.parse_args()
    sources, _ = discover_products(args.tiles)
    n_bands = EnmapProduct(sources[0]).metadata.band_count  # archives made with --bands N
    config = BuildConfig().replace(bands=BandSelection(n_bands, ()))
    before, after, vertices, clear_fraction, shapes = [], [], [], [], set()
    for k, source in enumerate(sources):
        try:
            valid_only(source, config)  # warm the file cache for both
        except ProductError:
            continue
        runs = ["before", "after"] if k % 2 == 0 else ["after", "before"]
        for which in runs:
            t0 = time.perf_counter()
            if which == "before":
                valid_only(source, config)
            else:
                row = scan_source(source, config)
            (before if which == "before" else after).append(time.perf_counter() - t0)
        clear = shapely.from_wkb(row["clear_native"])
        vertices.append(int(shapely.get_num_coordinates(clear)))
        clear_fraction.append(row["clear_fraction"])
        shapes.add((row["height"], row["width"]))
    out = {
        "benchmark": "scan_footprints",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        },
        "archive": str(args.tiles),
        "products": len(before),
        "bands": n_bands,
        "raster_shapes": sorted(shapes),
        "seconds_per_product_valid_only": {
            "mean": round(statistics.mean(before), 4),
            "median": round(statistics.median(before), 4),
        },
        "seconds_per_product_valid_and_clear": {
            "mean": round(statistics.mean(after), 4),
            "median": round(statistics.median(after), 4),
        },
        "ratio_mean": round(statistics.mean(after) / statistics.mean(before), 3),
        "clear_footprint_vertices": {
            "mean": round(statistics.mean(vertices), 1),
            "max": max(vertices),
        },
        "clear_fraction": {
            "mean": round(statistics.mean(clear_fraction), 3),
            "min": round(min(clear_fraction), 3),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
