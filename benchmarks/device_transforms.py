"""Device-side augmentation: the separable two-product warp against kornia's, side by side.

For each recipe (``moco``: crop, flips, blur; ``mae``: crop, flips) and batch, times the
project's :func:`~spectralearth_build.train.transforms.apply_params` (crop + resize + flip +
blur as two batched matrix products) and the same augmentation through kornia
(``transforms.kornia_reference``: ``crop_and_resize`` + ``gaussian_blur2d`` on the blurred
samples, the former implementation),
on normalised float32 ``(B, 202, 128, 128)`` batches, same draws, and the largest difference.
On CUDA it also times the whole ``DeviceTransform`` call on int16 batches as training makes it
(normalise + augment; float32 views for MAE, bf16 for MoCo) with the fused Triton kernel
(:mod:`~spectralearth_build.train.transforms_triton`) against the two-product path
(``fused=False``), same draws.

    python benchmarks/device_transforms.py --device cuda   # H200: a few seconds
    python benchmarks/device_transforms.py --device cpu --batch 4 --px 64

Writes ``benchmarks/results/device_transforms.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from spectralearth_build.train.transforms import (
    RECIPES,
    DeviceTransform,
    apply_params,
    kornia_reference,
    sample_params,
)

ROOT = Path(__file__).resolve().parent


def timed(fn, device: str, reps: int) -> float:
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--px", type=int, default=128)
    ap.add_argument("--bands", type=int, default=202)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "results" / "device_transforms.json"))
    args = ap.parse_args()
    dev = args.device
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(args.batch, args.bands, args.px, args.px, device=dev, generator=g)
    rows = []
    for name in ("moco", "mae"):
        cfg = RECIPES[name]
        params = sample_params(cfg, args.batch, args.px, args.px, torch.Generator().manual_seed(1))
        ours = timed(lambda p=params, c=cfg: apply_params(x, p, c), dev, args.reps)
        ref = timed(lambda p=params, c=cfg: kornia_reference(x, p, c)[0], dev, args.reps)
        diff = (apply_params(x, params, cfg)[0] - kornia_reference(x, params, cfg)[0]).abs().max()
        rows.append(
            {
                "recipe": name,
                "batch": args.batch,
                "ours_ms": round(ours, 3),
                "kornia_ms": round(ref, 3),
                "speedup": round(ref / ours, 2),
                "ours_views_per_s": round(args.batch / ours * 1e3, 1),
                "max_abs_diff": float(diff),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    whole = []
    raw = (x * 500 + 2000).to(torch.int16)
    mean, std = [2000.0] * args.bands, [500.0] * args.bands
    for name, dtype in (("moco", torch.bfloat16), ("mae", torch.float32)):
        fused = DeviceTransform(mean, std, name, seed=1, device=dev, dtype=dtype)
        plain = DeviceTransform(mean, std, name, seed=1, device=dev, dtype=dtype, fused=False)
        row: dict = {"recipe": name, "batch": args.batch, "dtype": str(dtype).split(".")[-1]}
        if not fused.uses_fused(raw):
            row["fused"] = "not available (needs CUDA and Triton)"
            whole.append(row)
            continue
        t_plain = timed(lambda t=plain: t(raw), dev, args.reps)
        t_fused = timed(lambda t=fused: t(raw), dev, args.reps)
        fused.set_epoch(0)
        plain.set_epoch(0)
        diff = (fused(raw).float() - plain(raw).float()).abs().max()
        row.update(
            two_product_ms=round(t_plain, 3),
            fused_ms=round(t_fused, 3),
            speedup=round(t_plain / t_fused, 2),
            max_abs_diff=float(diff),
        )
        whole.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "benchmark": "device_transforms",
        "device": dev,
        "device_name": torch.cuda.get_device_name() if dev == "cuda" else platform.processor(),
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "shape": [args.batch, args.bands, args.px, args.px],
        "cases": rows,
        "int16_transform": whole,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
