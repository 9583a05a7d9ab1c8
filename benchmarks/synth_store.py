"""``synth-store`` speed: where a location's time goes, and 1 vs N worker processes.

Two measurements, side by side in one run (the machine may be loaded, so only ratios count):

* ``profile``: for ``--profile-locations`` locations (128 px, 202 bands, 1..4 views) written in
  this process, the CPU seconds (``time.process_time``, all threads) of generating the views
  (``synthetic_views``; of which drawing the per-pixel noise alone), the exact band sums, and
  writing the shard block (Blosc + Zarr + file system), per location and as shares;
* ``workers``: wall time of ``write_synthetic_store`` for the same store with 1 and with
  ``--workers`` processes, alternated for ``--repeat`` rounds, best of each; the ratio is the
  speed-up.  ``--shard-locations`` locations per shard make ``--locations / --shard-locations``
  blocks, the units the workers share.  CPU seconds of all processes are recorded too: equal
  totals (``cpu_ratio`` 1) mean the pool adds no work; ``cores_used`` (CPU / wall seconds)
  shows how many cores the run got, which bounds the speed-up on a shared machine.

Writes ``benchmarks/results/synth_store.json`` (the machine named: platform, cores, load).

    python benchmarks/synth_store.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from spectralearth_build import __version__
from spectralearth_build import formats as fmt
from spectralearth_build.bands import reference_bands
from spectralearth_build.config import BuildConfig
from spectralearth_build.extract import store as st
from spectralearth_build.extract.results import BandSums
from spectralearth_build.synthstore import synthetic_views, write_synthetic_store

ROOT = Path(__file__).resolve().parent
PATCH_PX, MAX_VIEWS = 128, 4


def profile(n_locations: int, tmp: Path) -> dict:
    """CPU seconds per location of generation, noise alone, band sums and the block write."""
    config = BuildConfig()
    wl = reference_bands()[0][config.bands.kept_indices]
    n_bands, ex = wl.size, config.extract
    counts = np.random.default_rng([0, 0]).integers(1, MAX_VIEWS + 1, n_locations)
    layout = fmt.StoreLayout.for_store(
        n_locations, MAX_VIEWS, n_bands, PATCH_PX, n_locations, ex.compressor, ex.compression_level
    )
    arr = st.create_images(tmp / "profile", layout)
    block = np.full((n_locations, MAX_VIEWS, n_bands, PATCH_PX, PATCH_PX), fmt.NODATA, np.int16)
    gen = noise = sums = 0.0
    for pid, n in enumerate(counts):
        t0 = time.process_time()
        views = synthetic_views(
            np.random.default_rng([0, 1, pid]), wl, int(n), PATCH_PX, block[pid]
        )
        t1 = time.process_time()
        BandSums.of(list(views), n_bands)
        t2 = time.process_time()
        rng = np.random.default_rng([0, 2, pid])
        for _ in range(n):
            rng.standard_normal((n_bands, PATCH_PX, PATCH_PX), dtype=np.float32)
        t3 = time.process_time()
        gen, sums, noise = gen + t1 - t0, sums + t2 - t1, noise + t3 - t2
    t0 = time.process_time()
    st.write_block(arr, 0, block)
    write = time.process_time() - t0
    total = gen + sums + write
    per = {"generate": gen, "band_sums": sums, "write_block": write}
    return {
        "locations": n_locations,
        "views": int(counts.sum()),
        "cpu_s_per_location": {k: v / n_locations for k, v in per.items()},
        "share": {k: v / total for k, v in per.items()},
        "noise_share_of_generate": noise / gen,
    }


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the pool's workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def time_store(tmp: Path, locations: int, workers: int, config: BuildConfig) -> tuple[float, float]:
    """Wall and CPU seconds (all processes) of writing the store with ``workers``."""
    out = tmp / f"store-{workers}"
    c0, t0 = _cpu_s(), time.perf_counter()
    write_synthetic_store(
        out, locations, MAX_VIEWS, PATCH_PX, seed=1, config=config, workers=workers
    )
    wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    shutil.rmtree(out)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locations", type=int, default=32)
    parser.add_argument("--shard-locations", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile-locations", type=int, default=6)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "synth_store.json")
    args = parser.parse_args()

    config = BuildConfig().replace(extract={"locations_per_shard": args.shard_locations})
    with tempfile.TemporaryDirectory(prefix="synth-store-bench-") as name:
        tmp = Path(name)
        prof = profile(args.profile_locations, tmp)
        load_before = os.getloadavg()[0]
        walls: dict[int, list[float]] = {1: [], args.workers: []}
        cpus: dict[int, list[float]] = {1: [], args.workers: []}
        for _ in range(args.repeat):
            for w in walls:
                wall, cpu = time_store(tmp, args.locations, w, config)
                walls[w].append(wall)
                cpus[w].append(cpu)
    best = {w: min(v) for w, v in walls.items()}
    result = {
        "benchmark": "synth_store",
        "package_version": __version__,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "load_average_1min": [load_before, os.getloadavg()[0]],
        },
        "store": {
            "locations": args.locations,
            "locations_per_shard": args.shard_locations,
            "blocks": -(-args.locations // args.shard_locations),
            "patch_px": PATCH_PX,
            "max_views": MAX_VIEWS,
            "bands": int(config.bands.count),
            "compressor": config.extract.compressor,
        },
        "profile": prof,
        "workers": {
            "compared": [1, args.workers],
            "wall_s": {str(w): v for w, v in walls.items()},
            "best_wall_s": {str(w): v for w, v in best.items()},
            "cpu_s": {str(w): v for w, v in cpus.items()},
            "cores_used": {
                str(w): float(np.median([c / t for c, t in zip(cpus[w], walls[w])])) for w in walls
            },
            "cpu_ratio": float(np.median(cpus[args.workers]) / np.median(cpus[1])),
            "s_per_location": {str(w): v / args.locations for w, v in best.items()},
            "speedup": best[1] / best[args.workers],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"profile": prof["share"], "workers": result["workers"]}, indent=1))


if __name__ == "__main__":
    main()
