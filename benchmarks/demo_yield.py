"""Yield of the quickstart: the demo archive built, against the clear-sky grid-first baseline.

Builds ``synth --preset demo`` (default seed) with ``build-dataset`` (unless given an existing
archive and dataset), then reports the multi-timestamp locations written, the views planned and
dropped at extraction by reason, and the grid-first baseline (:mod:`grid_first`) on the
catalog's clear-sky footprints.  Writes benchmarks/results/demo_yield.json.

Run: ``python benchmarks/demo_yield.py [--work DIR]`` or, for an existing build,
``python benchmarks/demo_yield.py --tiles demo/enmap --dataset demo/dataset``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from spectralearth_build.build import build_dataset
from spectralearth_build.catalog import read_catalog, tile_records
from spectralearth_build.config import BuildConfig
from spectralearth_build.extract.pixels import CLOUD_REASON, SNOW_REASON

sys.path.insert(0, str(Path(__file__).parent))
from grid_first import grid_first_baseline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="Folder for archive and dataset.")
    ap.add_argument("--tiles", type=Path, default=None)
    ap.add_argument("--dataset", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results/demo_yield.json")
    args = ap.parse_args()
    config = BuildConfig()
    work = args.work or Path(tempfile.mkdtemp(prefix="demo_yield_"))
    tiles = args.tiles or work / "enmap"
    dataset = args.dataset or work / "dataset"
    if args.tiles is None:
        from spectralearth_build.synth import make_archive

        make_archive(tiles, preset="demo")
    if args.dataset is None:
        build_dataset(tiles, dataset, config)
    report = json.loads((dataset / "report.json").read_text())
    by_t = {int(k): v for k, v in report["patches_by_timestamps"].items()}
    planned_views = report["views"] + sum(report["dropped_views"].values())
    quality_drops = sum(report["dropped_views"].get(r, 0) for r in (CLOUD_REASON, SNOW_REASON))
    baseline = grid_first_baseline(
        tile_records(read_catalog(dataset / "catalog.parquet")), config.plan
    )
    out = {
        "benchmark": "demo_yield",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "archive": "synth --preset demo --seed 0",
        "written_locations": report["patches"],
        "written_multi_timestamp_locations": sum(n for t, n in by_t.items() if t >= 2),
        "written_patches_by_timestamps": report["patches_by_timestamps"],
        "planned_patches": report["planned_patches"],
        "planned_views": planned_views,
        "dropped_views": report["dropped_views"],
        "dropped_for_cloud_or_snow_fraction_of_planned": round(quality_drops / planned_views, 4),
        "grid_first_baseline": baseline,
        "multi_timestamp_ratio_vs_baseline": round(
            sum(n for t, n in by_t.items() if t >= 2) / max(1, baseline["multi_timestamp_patches"]),
            3,
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
