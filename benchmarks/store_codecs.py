"""Which codec for the store's inner chunks (one view, int16 ``(C, P, P)``): ratio and decode.

Real extracted data: a ``demo`` synthetic archive (128-px patches, 202 bands) is built with
``build-dataset``'s pipeline (``extract_dataset``) and up to ``--views`` stored views are taken
from it.  Each candidate codec (Blosc zstd and Blosc lz4 on bit-shuffled int16, plain zstd for
reference, and no compression) is measured two ways, single-threaded (per core):

* ``codec``: numcodecs encode/decode of each view's bytes (ratio, encode and decode MB/s);
* ``zarr``: a sharded store in the dataset layout (format 2) written with the codec, and single
  views read back as the loader reads them (``arr[slot, t]``: shard index + one inner chunk),
  giving views/s per core including Zarr's own overhead.

Then the GPU question: a data-loading worker must also read files, collate and copy to the
device, so a codec "feeds the GPU" when decoding alone, at the rate the training step needs,
takes at most half of the host's cores.  The rate: ``--target-samples`` samples/s (default 1000:
several times the 250-335 samples/s of SpectralEarth's reference Spec ViT-S step on one H200),
two views each (MoCo/DINO pairs), on ``--gpu-host-cores`` cores (16 on the H200 machine).  Among
the codecs that feed the GPU the best ratio is chosen.  Writes
``benchmarks/results/store_codecs.json``.

    python benchmarks/store_codecs.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from spectralearth_build import __version__, open_dataset
from spectralearth_build import formats as fmt
from spectralearth_build.build import extract_dataset
from spectralearth_build.catalog import scan, tile_records
from spectralearth_build.config import BuildConfig
from spectralearth_build.extract import store as st
from spectralearth_build.extract.reader import EnmapReader

ROOT = Path(__file__).resolve().parent
CANDIDATES = [("blosc-zstd", 5), ("blosc-zstd", 3), ("blosc-lz4", 5), ("zstd", 1), ("none", 0)]


def numcodec(name: str, level: int):  # noqa: ANN201
    import numcodecs

    if name == "blosc-zstd":
        return numcodecs.Blosc("zstd", level, shuffle=numcodecs.Blosc.BITSHUFFLE)
    if name == "blosc-lz4":
        return numcodecs.Blosc("lz4", level, shuffle=numcodecs.Blosc.BITSHUFFLE)
    if name == "zstd":
        return numcodecs.Zstd(level=level)
    return None


def best_of(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def codec_row(name: str, level: int, views: list[np.ndarray], repeat: int) -> dict:
    codec = numcodec(name, level)
    raw = sum(v.nbytes for v in views)
    if codec is None:
        enc = [v.tobytes() for v in views]
        t_enc = best_of(lambda: [v.tobytes() for v in views], repeat)
        t_dec = best_of(lambda: [np.frombuffer(e, np.int16).copy() for e in enc], repeat)
    else:
        enc = [codec.encode(v) for v in views]
        t_enc = best_of(lambda: [codec.encode(v) for v in views], repeat)
        t_dec = best_of(lambda: [np.frombuffer(codec.decode(e), np.int16) for e in enc], repeat)
    return {
        "ratio": raw / sum(len(e) for e in enc),
        "encode_MBps_per_core": raw / 1e6 / t_enc,
        "decode_MBps_per_core": raw / 1e6 / t_dec,
    }


def zarr_row(name: str, level: int, views: list[np.ndarray], work: Path, repeat: int) -> dict:
    """Views/s per core reading single views from a format-2 store written with the codec."""
    c, p = views[0].shape[0], views[0].shape[1]
    t_max, k = 4, 4
    n_loc = -(-len(views) // t_max)
    n_slots = -(-n_loc // k) * k
    path = work / f"zarr-{name}-{level}"
    shutil.rmtree(path, ignore_errors=True)
    layout = fmt.StoreLayout.for_store(n_slots, t_max, c, p, k, name, level)
    arr = st.create_images(path, layout)
    block = np.full((n_slots, t_max, c, p, p), fmt.NODATA, np.int16)
    where = []
    for j, v in enumerate(views):
        block[j // t_max, j % t_max] = v
        where.append((j // t_max, j % t_max))
    st.write_block(arr, 0, block)
    arr = st.open_images(path)
    t = best_of(lambda: [np.asarray(arr[s, ti]) for s, ti in where], repeat)
    return {
        "views_per_s_per_core": len(views) / t,
        "MBps_per_core": sum(v.nbytes for v in views) / 1e6 / t,
        "store_bytes": st.store_bytes(path),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=32, help="stored views to measure on")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many timings")
    ap.add_argument("--target-samples", type=float, default=1000.0)
    ap.add_argument("--views-per-sample", type=int, default=2)
    ap.add_argument("--gpu-host-cores", type=int, default=16)
    ap.add_argument("--decode-share", type=float, default=0.5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/seb-bench-codecs"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "store_codecs.json")
    ap.add_argument("--keep", action="store_true", help="keep the archive between runs")
    args = ap.parse_args()

    import numcodecs.blosc
    import zarr

    numcodecs.blosc.use_threads = False  # per-core figures
    numcodecs.blosc.set_nthreads(1)
    zarr.config.set({"threading.max_workers": 1})

    from spectralearth_build.geometry import plan_patches
    from spectralearth_build.synth import make_archive

    archive = args.work / "archive-demo"
    if not archive.exists():
        make_archive(archive, "demo", seed=0, tiles_per_datatake=1, revisits_eu=7, revisits_us=3)
    config = BuildConfig().replace(extract={"compressor": "none"})
    dataset = args.work / "dataset"
    if not (dataset / fmt.COMPLETE).exists():
        shutil.rmtree(dataset, ignore_errors=True)
        catalog = scan(archive, config)
        patches = list(plan_patches(tile_records(catalog), config.plan).patches)
        extract_dataset(dataset, patches, EnmapReader.from_catalog(catalog), config)
    ds = open_dataset(dataset)
    views = []
    for i in range(len(ds)):
        for t in range(ds.n_views_at(i)):
            if len(views) < args.views:
                views.append(ds.read_views(i, [t])[0])
    view_mb = views[0].nbytes / 1e6

    need_views = args.target_samples * args.views_per_sample
    need_per_core = need_views / (args.gpu_host_cores * args.decode_share)
    rows = []
    for name, level in CANDIDATES:
        row = {"codec": name, "level": level}
        row.update(codec_row(name, level, views, args.repeat))
        row["zarr"] = zarr_row(name, level, views, args.work, args.repeat)
        per_core = row["zarr"]["views_per_s_per_core"]
        row["samples_per_s_on_gpu_host"] = (
            per_core * args.gpu_host_cores * args.decode_share / args.views_per_sample
        )
        row["feeds_gpu"] = per_core >= need_per_core
        rows.append(row)
        print(
            f"{name:10s} L{level}  ratio {row['ratio']:.3f}  enc {row['encode_MBps_per_core']:6.0f}"
            f"  dec {row['decode_MBps_per_core']:6.0f} MB/s  zarr {per_core:6.1f} views/s/core"
            f"  -> {row['samples_per_s_on_gpu_host']:7.0f} samples/s  feeds GPU {row['feeds_gpu']}",
            flush=True,
        )
    feeding = [r for r in rows if r["feeds_gpu"]]
    chosen = (
        max(feeding, key=lambda r: r["ratio"])
        if feeding
        else max(rows, key=lambda r: r["zarr"]["views_per_s_per_core"])
    )
    doc = {
        "benchmark": "store_codecs",
        "package_version": __version__,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0],
        },
        "data": {
            "source": "demo synthetic archive extracted by extract_dataset (stored views)",
            "views": len(views),
            "view_shape": list(views[0].shape),
            "view_MB": view_mb,
        },
        "gpu_rule": {
            "target_samples_per_s": args.target_samples,
            "views_per_sample": args.views_per_sample,
            "gpu_host_cores": args.gpu_host_cores,
            "decode_share_of_cores": args.decode_share,
            "needed_views_per_s_per_core": need_per_core,
            "needed_decode_MBps_per_core": need_per_core * view_mb,
        },
        "codecs": rows,
        "chosen": {"compressor": chosen["codec"], "level": chosen["level"]},
        "default_in_config": {
            "compressor": BuildConfig().extract.compressor,
            "level": BuildConfig().extract.compression_level,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print("chosen:", doc["chosen"], "needed per core:", round(need_per_core, 1), "views/s")
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
