"""Extraction throughput on a synthetic archive with real-size tiles.

Three ways of producing the same patches are timed in one run, in one process (the machine
running it may have few cores, so only ratios within a run are compared):

* ``pipeline``: ``extract_dataset`` as ``build-dataset`` runs it (work units, one bounding-window
  read per tile and unit, checks, Zarr shards, tables), without Dask;
* ``floor``: each source tile's needed region (the bounding window of all views planned in it)
  read and decoded once (quality layers and kept bands), views sliced out, and every location's
  chunk encoded once with the dataset's codec (nothing written): what any extraction must pay;
* ``naive``: what per-patch extractors do: one windowed rasterio read (kept bands and quality
  layers) per patch and timestamp, then the same encoding.

It also measures candidate codecs on the extracted int16 chunks (ratio, encode and decode
speed) and writes everything to ``benchmarks/results/extract_throughput.json``.

    python benchmarks/extract_throughput.py                 # preset full, 1000-px swaths
    python benchmarks/extract_throughput.py --tile-px 400   # quicker
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window as RioWindow

from spectralearth_build import __version__, open_dataset
from spectralearth_build.build import extract_dataset
from spectralearth_build.catalog import scan, source_from_json, tile_records
from spectralearth_build.config import BuildConfig
from spectralearth_build.extract.reader import NODATA, QUALITY_FLAGS, EnmapReader
from spectralearth_build.extract.store import plan_layout

ROOT = Path(__file__).resolve().parent


def rio(w):  # noqa: ANN001, ANN201
    return RioWindow(w.col_off, w.row_off, w.width, w.height)


def encoder(name: str, level: int):  # noqa: ANN201
    import numcodecs

    if name == "zstd":
        return numcodecs.Zstd(level=level)
    if name == "blosc-zstd":
        return numcodecs.Blosc(cname="zstd", clevel=level, shuffle=numcodecs.Blosc.BITSHUFFLE)
    if name == "blosc-zstd-byteshuffle":
        return numcodecs.Blosc(cname="zstd", clevel=level, shuffle=numcodecs.Blosc.SHUFFLE)
    if name == "gzip":
        return numcodecs.GZip(level=level)
    raise ValueError(name)


def encode_all(chunks: dict[int, np.ndarray], t_max: int, codec) -> int:  # noqa: ANN001
    """Pad each location to T_max and encode it once; total encoded bytes."""
    total = 0
    for views in chunks.values():
        block = np.full((t_max, *views.shape[1:]), NODATA, np.int16)
        block[: len(views)] = views
        total += len(codec.encode(block))
    return total


def merged_rows(windows) -> list[tuple[int, int, int, int]]:  # noqa: ANN001
    """Row intervals covering ``windows`` (merged where they touch), with the column range of
    all of them: ``(row0, row1, col0, col1)``.  Strips are decoded whole-width anyway, so this is
    the least a reader of strip-compressed rows can decode."""
    ws = sorted(windows, key=lambda w: w.row_off)
    c0 = min(w.col_off for w in ws)
    c1 = max(w.col_off + w.width for w in ws)
    out: list[list[int]] = []
    for w in ws:
        if out and w.row_off <= out[-1][1]:
            out[-1][1] = max(out[-1][1], w.row_off + w.height)
        else:
            out.append([w.row_off, w.row_off + w.height])
    return [(r0, r1, c0, c1) for r0, r1 in out]


def floor_run(patches, sources, kept, t_max, codec, stored) -> tuple[float, int]:  # noqa: ANN001
    """Quality layers of every planned view and kept bands of every stored view, each needed
    row range of each tile decoded once; every stored location encoded once."""
    t0 = time.perf_counter()
    by_tile: dict[str, list] = {}
    for p in patches:
        for j, v in enumerate(p.views):
            by_tile.setdefault(v.tile_id, []).append((p.patch_id, j, v))
    pieces: dict[int, dict[int, np.ndarray]] = {}
    idx = [int(i) + 1 for i in kept]
    for tile_id, items in by_tile.items():
        src = sources[tile_id]
        for name in QUALITY_FLAGS:
            with rasterio.open(src.gdal_path(f"QL_QUALITY_{name}")) as f:
                for r0, r1, c0, c1 in merged_rows(v.window for *_, v in items):
                    f.read(1, window=RioWindow(c0, r0, c1 - c0, r1 - r0))
        keep = [(pid, j, v) for pid, j, v in items if (pid, v.tile_id) in stored]
        if not keep:
            continue
        with rasterio.open(src.gdal_path("SPECTRAL_IMAGE")) as f:
            for r0, r1, c0, c1 in merged_rows(v.window for *_, v in keep):
                image = f.read(idx, window=RioWindow(c0, r0, c1 - c0, r1 - r0))
                for pid, j, v in keep:
                    w = v.window
                    if r0 <= w.row_off < r1:
                        y, x = w.row_off - r0, w.col_off - c0
                        pieces.setdefault(pid, {})[j] = image[
                            :, y : y + w.height, x : x + w.width
                        ].copy()
                del image
    chunks = {pid: np.stack([v[j] for j in sorted(v)]) for pid, v in pieces.items()}
    nbytes = encode_all(chunks, t_max, codec)
    return time.perf_counter() - t0, nbytes


def naive_run(patches, sources, kept, t_max, codec) -> tuple[float, int]:  # noqa: ANN001
    t0 = time.perf_counter()
    idx = [int(i) + 1 for i in kept]
    chunks = {}
    for p in patches:
        views = []
        for v in p.views:
            src = sources[v.tile_id]
            for name in QUALITY_FLAGS:
                with rasterio.open(src.gdal_path(f"QL_QUALITY_{name}")) as f:
                    f.read(1, window=rio(v.window))
            with rasterio.open(src.gdal_path("SPECTRAL_IMAGE")) as f:
                views.append(f.read(idx, window=rio(v.window)))
        chunks[p.patch_id] = np.stack(views)
    nbytes = encode_all(chunks, t_max, codec)
    return time.perf_counter() - t0, nbytes


def codec_table(sample: list[np.ndarray]) -> list[dict]:
    """Ratio and speed of candidate codecs on whole location chunks (views only)."""
    raw = sum(a.nbytes for a in sample)
    rows = []
    for name, level in [
        ("zstd", 1),
        ("zstd", 3),
        ("zstd", 9),
        ("blosc-zstd", 3),
        ("blosc-zstd", 5),
        ("blosc-zstd-byteshuffle", 3),
        ("gzip", 1),
        ("gzip", 6),
    ]:
        codec = encoder(name, level)
        t0 = time.perf_counter()
        enc = [codec.encode(a) for a in sample]
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        for e, a in zip(enc, sample):
            np.frombuffer(codec.decode(e), dtype=np.int16).reshape(a.shape)
        t_dec = time.perf_counter() - t0
        size = sum(len(e) for e in enc)
        rows.append(
            {
                "codec": name,
                "level": level,
                "ratio": raw / size,
                "encode_MBps": raw / 1e6 / t_enc,
                "decode_MBps": raw / 1e6 / t_dec,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="full")
    ap.add_argument("--tile-px", type=int, default=None, help="swath size override (px)")
    ap.add_argument(
        "--max-products",
        type=int,
        default=4,
        help="plan on this many usable products of the first site (a few suffice)",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/seb-bench-extract"))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "extract_throughput.json")
    ap.add_argument("--keep", action="store_true", help="keep the archive between runs")
    args = ap.parse_args()

    from spectralearth_build.geometry import plan_patches
    from spectralearth_build.synth import make_archive

    archive = args.work / f"archive-{args.preset}-{args.tile_px}"
    t0 = time.perf_counter()
    if not archive.exists():
        overrides = {"tiles_per_datatake": 1, "revisits_eu": 7, "revisits_us": 3}
        if args.tile_px:
            overrides["tile_px"] = args.tile_px
        make_archive(archive, preset=args.preset, seed=0, workers=2, **overrides)
    t_synth = time.perf_counter() - t0
    config = BuildConfig()
    catalog = scan(archive, config)
    ok = catalog[catalog["status"] == "ok"].copy()
    ok = ok.sort_values(["crs", "start_time", "product_id"])
    first_crs = ok["crs"].iloc[0]
    chosen = ok[ok["crs"] == first_crs].head(args.max_products)
    sub = catalog[catalog["product_id"].isin(chosen["product_id"])]
    plan = plan_patches(tile_records(sub), config.plan)
    patches = plan.patches
    layout = plan_layout(patches, config)
    kept = config.bands.kept_indices
    sources = {r.product_id: source_from_json(r.source) for r in sub.itertuples(index=False)}
    codec = encoder(config.extract.compressor, config.extract.compression_level)
    n_views = sum(p.n_views for p in patches)
    view_mb = n_views * len(kept) * layout.patch_px**2 * 2 / 1e6
    with rasterio.open(next(iter(sources.values())).gdal_path("SPECTRAL_IMAGE")) as f:
        tiff = {
            "shape": [f.count, f.height, f.width],
            "interleave": str(f.interleaving),
            "compression": str(f.compression),
            "block_shapes": list(f.block_shapes[0]),
        }

    results = {}
    out = args.work / "dataset"
    stored: set[tuple[int, str]] = set()
    for name in ("pipeline", "floor", "naive"):
        if name == "pipeline":
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            report = extract_dataset(out, patches, EnmapReader.from_catalog(sub), config)
            seconds = time.perf_counter() - t0
            nbytes = report.bytes_written
            views = open_dataset(out).views
            stored = set(zip(views["patch_id"].tolist(), views["product"].tolist()))
            extra = {
                "units": report.units,
                "patches_written": report.patches,
                "views_written": report.views,
                "dropped_views": report.dropped_views,
            }
        elif name == "floor":
            seconds, nbytes = floor_run(patches, sources, kept, layout.t_max, codec, stored)
            extra = {}
        else:
            seconds, nbytes = naive_run(patches, sources, kept, layout.t_max, codec)
            extra = {}
        results[name] = {
            "seconds": seconds,
            "patches_per_s": len(patches) / seconds,
            "MB_per_s": view_mb / seconds,
            "encoded_bytes": nbytes,
            **extra,
        }
        print(
            f"{name:9s} {seconds:8.2f} s  {len(patches) / seconds:8.2f} patches/s  "
            f"{view_mb / seconds:8.1f} MB/s",
            flush=True,
        )

    ds = open_dataset(out)
    sample = [ds[i]["image"] for i in range(min(len(ds), 48))]  # real views, no padding
    codecs = codec_table(sample)
    for row in codecs:
        print(
            f"  {row['codec']:24s} L{row['level']}  ratio {row['ratio']:.2f}  "
            f"enc {row['encode_MBps']:.0f} MB/s  dec {row['decode_MBps']:.0f} MB/s"
        )
    doc = {
        "benchmark": "extract_throughput",
        "package_version": __version__,
        "machine": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": __import__("os").cpu_count(),
        },
        "archive": {
            "preset": args.preset,
            "tile_px": args.tile_px,
            "products_used": len(sources),
            "synth_seconds": t_synth,
            "spectral_image": tiff,
        },
        "plan": {
            "patches": len(patches),
            "views": n_views,
            "t_max": layout.t_max,
            "patch_px": layout.patch_px,
            "bands": len(kept),
            "uncompressed_view_MB": view_mb,
        },
        "results": results,
        "ratios": {
            "pipeline_over_floor_time": results["pipeline"]["seconds"]
            / results["floor"]["seconds"],
            "naive_over_pipeline_time": results["naive"]["seconds"]
            / results["pipeline"]["seconds"],
        },
        "codec_in_use": {
            "compressor": config.extract.compressor,
            "level": config.extract.compression_level,
        },
        "codecs": codecs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["ratios"], indent=1))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
