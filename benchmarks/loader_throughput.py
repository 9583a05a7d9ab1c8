"""Loader throughput: samples/s from our store against SpectralEarth's GeoTIFF layout.

Measured in one run, side by side (the machine may be shared, so only ratios within a run are
compared), for ``SingleView`` and ``TemporalPair`` samples and each number of DataLoader
workers asked for:

* ``store``: :mod:`spectralearth_build.train.data` over a built store (per-view reads, int16),
  through torch's ``DataLoader`` (default collate);
* ``store_ring``: the same datasets and batches through
  :class:`~spectralearth_build.train.ring.RingLoader` (workers decode into a shared ring of
  batch buffers; ``ring_over_dataloader`` is the ratio of the two, per number of workers);
* ``geotiff``: the SpectralEarth layout ``enmap/<7-digit location>/<5-digit tile>.tif`` (one
  int16 202-band GeoTIFF per timestamp, uncompressed unless ``--geotiff-compress``), written
  here from the same store with rasterio, and read the way SpectralEarth's pretraining dataset
  reads it: a folder listing at start, then per sample a random file (two different ones for a
  pair, the one file twice for a single-timestamp location), one ``rasterio.open`` per file and
  an ``int16`` cast.  (Its code also builds ``list(keys)`` on every item, O(N) per sample; the
  key list is built once here, in its favour.)

Both are read once before timing, so both come from the page cache.  The run also counts the
bytes decoded per sample (the direct shard reader's and zarr's int16 chunk decodes, in process;
whole files for GeoTIFF) against the size of one view, and with ``--device cuda`` measures
samples/s with the batched transforms on the GPU (``TemporalPair`` + MoCo recipe,
``SingleView`` + MAE recipe; per batch size, with and without pinned memory), the transforms
alone, and the loader alone, for the DataLoader and for the ring loader (page-locked ring,
side-stream host-to-device copies, same batch sizes and workers).  Results go to
``benchmarks/results/``.

    python benchmarks/loader_throughput.py --store demo/dataset
    python benchmarks/loader_throughput.py --store /tmp/store --device cuda --workers 0 1 2 16 \\
        --no-geotiff --out benchmarks/results/loader_throughput_h200.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from spectralearth_build import __version__, open_dataset
from spectralearth_build.train.data import (
    EpochSampler,
    SingleView,
    StoreDataset,
    TemporalPair,
    make_loader,
)
from spectralearth_build.train.ring import RingLoader
from spectralearth_build.train.transforms import DeviceTransform

RESULTS = Path(__file__).resolve().parent / "results"
KINDS: dict[str, type[StoreDataset]] = {"SingleView": SingleView, "TemporalPair": TemporalPair}


# -- the SpectralEarth layout --------------------------------------------------------------------
def write_spectralearth_layout(store: Path, out: Path, compress: str) -> dict[str, Any]:
    """Write ``out/enmap/<patch_id:07d>/<tile:05d>.tif`` for every view of ``store``."""
    import rasterio
    from affine import Affine

    done = out / "_COMPLETE"
    ds = open_dataset(store)
    if not done.exists():
        views = ds.views
        tiles = {p: k for k, p in enumerate(sorted(views["product"].unique()))}
        idx = ds.index
        for j in range(len(ds)):
            row = idx.iloc[j]
            n = ds.n_views_at(j)
            start = int(row["view_start"])
            folder = out / "enmap" / f"{int(row['patch_id']):07d}"
            folder.mkdir(parents=True, exist_ok=True)
            image = ds.read_views(j, range(n))
            for t in range(n):
                tile = tiles[views["product"].iloc[start + t]]
                profile = {
                    "driver": "GTiff",
                    "height": image.shape[2],
                    "width": image.shape[3],
                    "count": image.shape[1],
                    "dtype": "int16",
                    "crs": str(row["crs"]),
                    "transform": Affine(*[float(v) for v in row["transform"]]),
                    "nodata": -32768,
                }
                if compress != "none":
                    profile["compress"] = compress
                with rasterio.open(folder / f"{tile:05d}.tif", "w", **profile) as dst:
                    dst.write(image[t])
        done.write_text(compress)
    files = sorted((out / "enmap").glob("*/*.tif"))
    return {
        "path": str(out),
        "compress": done.read_text(),
        "files": len(files),
        "bytes_on_disk": sum(f.stat().st_size for f in files),
    }


class SpectralEarthPretrainDataset(torch.utils.data.Dataset):
    """The read path of SpectralEarth's ``SpectralEarthDataset`` (pretraining)."""

    def __init__(self, root: Path, return_two_views: bool):
        self.root = Path(root)
        self.return_two_views = return_two_views
        self.patch_paths: dict[str, list[str]] = {}
        base = self.root / "enmap"
        for patch_dir in os.listdir(base):
            patch_path = base / patch_dir
            if patch_path.is_dir():
                files = [str(patch_path / f) for f in os.listdir(patch_path) if f.endswith(".tif")]
                if files:
                    self.patch_paths[patch_dir] = files
        self.keys = list(self.patch_paths)
        self.decoded = 0  # bytes of pixels read in this process

    def _read(self, path: str) -> torch.Tensor:
        import rasterio

        with rasterio.open(path) as f:
            arr = f.read().astype(np.int16)
        self.decoded += arr.nbytes
        return torch.from_numpy(arr)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        paths = self.patch_paths[self.keys[index]]
        if self.return_two_views:
            chosen = random.sample(paths, 2) if len(paths) >= 2 else [random.choice(paths)] * 2
            return {"image1": self._read(chosen[0]), "image2": self._read(chosen[1])}
        return {"image": self._read(random.choice(paths))}


# -- measurement ---------------------------------------------------------------------------------
def warm_page_cache(paths: list[Path]) -> None:
    for p in paths:
        for f in (f for f in p.rglob("*") if f.is_file()):
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def batches_per_s(loader: DataLoader, batch_size: int, step: Any = None) -> float:
    """Samples/s after the first batch (worker start-up excluded); ``step`` runs per batch."""
    it = iter(loader)
    first = next(it)
    if step is not None:
        step(first)
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 0
    for batch in it:
        if step is not None:
            step(batch)
        n += batch_size
    if step is not None:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def store_loader(store: Path, kind: str, n: int, bs: int, workers: int, **kw: Any) -> DataLoader:
    n_loc = len(open_dataset(store))
    ds = KINDS[kind](store, locations=np.resize(np.arange(n_loc), n), seed=0)
    return make_loader(ds, bs, num_workers=workers, persistent_workers=False, **kw)


def ring_loader(
    store: Path, kind: str, n: int, bs: int, workers: int, device: str | None = None
) -> RingLoader:
    """:class:`RingLoader` over the batches :func:`store_loader`'s DataLoader draws."""
    n_loc = len(open_dataset(store))
    ds = KINDS[kind](store, locations=np.resize(np.arange(n_loc), n), seed=0)
    batches = BatchSampler(EpochSampler(ds, shuffle=True, seed=0), bs, drop_last=True)
    return RingLoader(ds, batches, num_workers=workers, device=device)


def geotiff_loader(root: Path, kind: str, n: int, bs: int, workers: int) -> DataLoader:
    ds = SpectralEarthPretrainDataset(root, return_two_views=kind == "TemporalPair")
    sampler = RandomSampler(ds, replacement=True, num_samples=n)
    return DataLoader(ds, batch_size=bs, sampler=sampler, num_workers=workers, drop_last=True)


class DecodeCounter:
    """Counts int16 chunk bytes that zarr decodes in this process (its ``bytes`` codec)."""

    def __init__(self) -> None:
        import zarr.codecs.bytes as zb

        self.bytes = 0
        self.calls = 0
        self._cls = zb.BytesCodec
        self._orig = zb.BytesCodec._decode_sync
        counter = self

        def counted(codec: Any, chunk_bytes: Any, chunk_spec: Any) -> Any:
            out = counter._orig(codec, chunk_bytes, chunk_spec)
            arr = out.as_ndarray_like()
            if arr.dtype == np.int16:
                counter.bytes += int(arr.nbytes)
                counter.calls += 1
            return out

        self._cls._decode_sync = counted  # type: ignore[method-assign]

    def close(self) -> None:
        self._cls._decode_sync = self._orig  # type: ignore[method-assign]


def decoded_per_sample(store: Path, geotiff: Path | None, n: int) -> dict[str, Any]:
    ds0 = open_dataset(store)
    c, p = len(ds0.wavelengths), int(ds0.attrs["patch_px"])
    one_view = c * p * p * 2
    out: dict[str, Any] = {"one_view_bytes": one_view}
    for kind, cls in KINDS.items():
        ds = cls(store, seed=1)
        counter = DecodeCounter()  # reads through zarr
        reader = ds.reader  # direct per-view reads (format 2)
        try:
            for j in range(n):
                ds[j % len(ds)]
        finally:
            counter.close()
        decoded = counter.bytes + (reader.decoded_bytes if reader is not None else 0)
        row: dict[str, Any] = {
            "store_read_path": "direct shard reads" if reader is not None else "zarr",
            "store_bytes_per_sample": decoded / n,
            "store_per_view": decoded / n / one_view,
        }
        if geotiff is not None:
            gd = SpectralEarthPretrainDataset(geotiff, return_two_views=kind == "TemporalPair")
            for j in range(n):
                gd[j % len(gd)]
            row["geotiff_bytes_per_sample"] = gd.decoded / n
            row["geotiff_per_view"] = gd.decoded / n / one_view
        out[kind] = row
    return out


def gpu_section(store: Path, workers: int, sizes: list[int], n: int) -> dict[str, Any]:
    """Samples/s with the transforms on the GPU (per batch size, pinned or not), alone, loader."""
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(), "workers": workers}
    for kind, recipe in (("TemporalPair", "moco"), ("SingleView", "mae")):
        ds = KINDS[kind](store)
        tr = DeviceTransform.from_dataset(ds, recipe, device="cuda")

        def step(batch: dict[str, torch.Tensor], tr: DeviceTransform = tr, kind: str = kind) -> Any:
            x = batch["image"].to("cuda", non_blocking=True)
            return tr.pair(x) if kind == "TemporalPair" else tr(x)

        runs, ring_runs = [], []
        for bs in sizes:
            for pin in (False, True):
                loader = store_loader(store, kind, n, bs, workers, pin_memory=pin)
                rate = batches_per_s(loader, bs, step)
                row = {"batch_size": bs, "loader": "torch", "pin_memory": pin}
                runs.append({**row, "samples_per_s": rate})
                print(kind, runs[-1], flush=True)
            ring = ring_loader(store, kind, n, bs, workers, device="cuda")
            rate = batches_per_s(ring, bs, step)
            ring_runs.append({"batch_size": bs, **ring.settings(), "samples_per_s": rate})
            print(kind, ring_runs[-1], flush=True)
        best = max(runs, key=lambda r: r["samples_per_s"])
        loader = store_loader(store, kind, n, best["batch_size"], workers)
        loader_only = batches_per_s(loader, best["batch_size"])
        ring_best = max(ring_runs, key=lambda r: r["samples_per_s"])
        ring = ring_loader(store, kind, n, ring_best["batch_size"], workers, device="cuda")
        ring_only = batches_per_s(ring, ring_best["batch_size"], lambda b: None)  # loader + H2D
        # transforms alone on one device-resident batch
        bs = best["batch_size"]
        x = next(iter(store_loader(store, kind, bs, bs, 0)))["image"].to("cuda")
        for _ in range(3):
            step({"image": x})
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        reps = 20
        for _ in range(reps):
            step({"image": x})
        torch.cuda.synchronize()
        out[kind] = {
            "recipe": recipe,
            "loader_plus_gpu_transforms": runs,
            "best_samples_per_s_loader_plus_gpu_transforms": best["samples_per_s"],
            "samples_per_s_loader_only_at_best": loader_only,
            "samples_per_s_gpu_transforms_only": reps * bs / (time.perf_counter() - t0),
            "ring_loader_plus_h2d_plus_gpu_transforms": ring_runs,
            "best_samples_per_s_ring_plus_gpu_transforms": ring_best["samples_per_s"],
            "samples_per_s_ring_plus_h2d_only_at_best": ring_only,
            "ring_over_dataloader_best": ring_best["samples_per_s"] / best["samples_per_s"],
        }
        print(kind, json.dumps(out[kind]), flush=True)
    return out


def store_info(store: Path) -> dict[str, Any]:
    ds = open_dataset(store)
    arr = ds.images
    files = [f for f in (store / "data.zarr").rglob("*") if f.is_file()]
    return {
        "path": str(store),
        "format_version": ds.attrs.get("format_version"),
        "locations": len(ds),
        "views": len(ds.views),
        "t_max": ds.attrs.get("t_max"),
        "bands": len(ds.wavelengths),
        "patch_px": ds.attrs.get("patch_px"),
        "shape": list(arr.shape),
        "chunks": list(arr.chunks),
        "shards": list(arr.shards) if arr.shards else None,
        "codecs": json.loads(json.dumps(arr.metadata.to_dict().get("codecs"), default=str)),
        "bytes_on_disk": sum(f.stat().st_size for f in files),
    }


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True, help="a dataset built by build-dataset")
    ap.add_argument("--geotiff", type=Path, help="SpectralEarth layout folder (written if absent)")
    ap.add_argument("--geotiff-compress", default="none", help="GeoTIFF compression (none)")
    ap.add_argument("--no-geotiff", action="store_true", help="skip the GeoTIFF comparison")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samples", type=int, default=240, help="timed samples per measurement")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="repeats; medians are reported")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--gpu-workers", type=int, default=16)
    ap.add_argument("--gpu-batch-sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--gpu-samples", type=int, default=6400)
    ap.add_argument("--out", type=Path, default=RESULTS / "loader_throughput.json")
    args = ap.parse_args()

    geotiff: Path | None = None
    result: dict[str, Any] = {
        "benchmark": "loader_throughput",
        "package_version": __version__,
        "machine": machine_info(),
        "store": store_info(args.store),
        "settings": {
            "samples": args.samples,
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "workers": args.workers,
        },
    }
    if not args.no_geotiff:
        try:
            import rasterio  # noqa: F401
        except ImportError:
            result["geotiff"] = {"skipped": "rasterio is not installed"}
        else:
            geotiff = args.geotiff or args.store.parent / f"{args.store.name}-spectralearth"
            t0 = time.perf_counter()
            result["geotiff"] = write_spectralearth_layout(
                args.store, geotiff, args.geotiff_compress
            )
            result["geotiff"]["write_seconds"] = time.perf_counter() - t0
    else:
        result["geotiff"] = {"skipped": "--no-geotiff"}
    warm_page_cache([args.store] + ([geotiff] if geotiff else []))

    result["decoded"] = decoded_per_sample(args.store, geotiff, 40)
    print(json.dumps(result["decoded"], indent=1), flush=True)

    rates: dict[tuple[str, str, int], list[float]] = {}
    n = args.samples + args.batch_size  # the first batch is not timed
    for _ in range(args.rounds):  # each round runs store and GeoTIFF side by side
        for kind in KINDS:
            for workers in args.workers:
                loader = store_loader(args.store, kind, n, args.batch_size, workers)
                rates.setdefault((kind, "store", workers), []).append(
                    batches_per_s(loader, args.batch_size)
                )
                ring = ring_loader(args.store, kind, n, args.batch_size, workers)
                rates.setdefault((kind, "store_ring", workers), []).append(
                    batches_per_s(ring, args.batch_size)
                )
                if geotiff is not None:
                    loader = geotiff_loader(geotiff, kind, n, args.batch_size, workers)
                    rates.setdefault((kind, "geotiff", workers), []).append(
                        batches_per_s(loader, args.batch_size)
                    )
                now = {
                    k[1]: [round(v, 1) for v in r]
                    for k, r in rates.items()
                    if k[::2] == (kind, workers)
                }
                print(kind, workers, now, flush=True)
    med = {k: float(np.median(r)) for k, r in rates.items()}
    result["throughput"] = [
        {"dataset": k, "source": s, "workers": w, "samples_per_s": med[(k, s, w)], "rounds": r}
        for (k, s, w), r in sorted(rates.items())
    ]
    result["ring_over_dataloader"] = {  # same samples, batches and workers; medians
        kind: {str(w): med[(kind, "store_ring", w)] / med[(kind, "store", w)] for w in args.workers}
        for kind in KINDS
    }
    if geotiff is not None:  # ratios of the medians over rounds
        result["store_over_geotiff"] = {
            kind: {
                str(w): med[(kind, "store", w)] / med[(kind, "geotiff", w)] for w in args.workers
            }
            for kind in KINDS
        }
    if args.device == "cuda":
        result["gpu"] = gpu_section(
            args.store, args.gpu_workers, args.gpu_batch_sizes, args.gpu_samples
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in result
                if k in ("store_over_geotiff", "ring_over_dataloader", "gpu")
            },
            indent=1,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
