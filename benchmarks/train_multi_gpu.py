"""Multi-GPU pretraining: scaling, loss agreement with gradient accumulation, loader share.

For each run (default: MoCo-v2 Spec RN50, DINO Spec ViT-S, MAE Spec ViT-S from
``configs/pretrain/``) and each per-GPU batch (64, 256), the script launches
``torchrun --nproc_per_node n -m spectralearth_build.train.cli pretrain`` from a store on local
disk through the loader, bf16 autocast, ``n`` = 1 and ``N`` GPUs (NCCL on GPUs, gloo on CPUs),
plus a one-process run at the N-GPU global batch with ``accumulate = N``.  From each run's
``log.csv`` (one row per step) it takes:

- samples/s per GPU over the steps after ``--warmup`` (the step clock includes the loader);
- scaling efficiency ``sps(N) / (N * sps(1))`` per run and batch;
- the first ``--compare-steps`` losses of the N-GPU run against the one-GPU reference (max
  absolute and relative difference): ``--reference accumulate`` (the issue's: per-GPU batch,
  ``accumulate = N``; its BatchNorm normalises each micro-batch while the N-GPU run's SyncBN
  normalises the global batch, so models with BN differ by more than rounding) or ``full``
  (the whole global batch in one step: equal up to rounding);
- the loader's share of step time (time the loop waited for ``next(loader)``).

JSON with the device names, host, platform and cores in ``benchmarks/results/``.

    python benchmarks/train_multi_gpu.py --data /local/store --gpus 4
    python benchmarks/train_multi_gpu.py --data OUT --gpus 1 --device cpu --steps 6 \\
        --batches 4 --set backbone.name=trainkit:TinySpecRN ...      # CPU check of the script
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "moco_spec_rn50": "configs/pretrain/moco.yaml",
    "dino_spec_vit_s": "configs/pretrain/dino.yaml",
    "mae_spec_vit_s": "configs/pretrain/mae.yaml",
}


def launch(
    name: str,
    config: Path,
    data: Path,
    out: Path,
    nproc: int,
    batch: int,
    accumulate: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One pretraining run through torchrun; its log rows and summary."""
    run_dir = out / f"{name}_b{batch}_n{nproc}_acc{accumulate}"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "spectralearth_build.train.cli",
        "pretrain",
        "--config",
        str(config),
        "--data",
        str(data),
        "--out",
        str(run_dir),
        "--max-steps",
        str(args.steps),
        "--batch-size",
        str(batch),
        "--accumulate",
        str(accumulate),
        "--log-every",
        "1",
        "--checkpoint-every",
        str(10 * args.steps),
        "--precision",
        args.precision,
        "--workers",
        str(args.workers),
        "-q",
    ]
    if args.compile:
        cmd.append("--compile")
    if args.device:
        cmd += ["--device", args.device]
    for item in args.set or []:
        cmd += ["--set", item]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(ROOT), *args.pythonpath, env.get("PYTHONPATH", "")] if p
    )
    print("+", " ".join(cmd[4:]), flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr[-2000:], "nproc": nproc, "batch": batch}
    with (run_dir / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((run_dir / "summary.json").read_text())
    timed = rows[args.warmup :] if len(rows) > args.warmup + 1 else rows
    t0 = float(rows[args.warmup - 1]["elapsed_s"]) if len(timed) < len(rows) else 0.0
    seconds = float(timed[-1]["elapsed_s"]) - t0
    global_batch = summary["global_batch"]
    sps = len(timed) * global_batch / max(seconds, 1e-9)
    share = sum(float(r["data_share"]) for r in timed) / len(timed)
    return {
        "ok": True,
        "nproc": nproc,
        "batch_per_gpu": batch,
        "accumulate": accumulate,
        "global_batch": global_batch,
        "samples_per_s": sps,
        "samples_per_s_per_gpu": sps / nproc,
        "loader_share": share,
        "losses": [float(r["loss"]) for r in rows],
        "device_name": summary.get("device_name"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="Store on local disk.")
    ap.add_argument("--gpus", type=int, default=None, help="N (default: all visible GPUs).")
    ap.add_argument("--runs", nargs="*", default=list(RUNS), help=f"Of {sorted(RUNS)}.")
    ap.add_argument(
        "--config",
        nargs="*",
        default=[],
        metavar="NAME=PATH",
        help="Extra or replacement runs: name=config path.",
    )
    ap.add_argument("--batches", type=int, nargs="*", default=[64, 256])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10, help="Steps left out of the rate.")
    ap.add_argument("--compare-steps", type=int, default=50)
    ap.add_argument(
        "--reference",
        choices=["accumulate", "full"],
        default="accumulate",
        help="One-GPU run compared with the N-GPU one: per-GPU batch with accumulate=N, or "
        "the whole global batch at once (the same BatchNorm statistics as SyncBN).",
    )
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--workers", type=int, default=8, help="Loader workers per process.")
    ap.add_argument("--device", default=None, help="cpu to check the script without GPUs.")
    ap.add_argument("--set", action="append", help="Config override for every run.")
    ap.add_argument("--pythonpath", nargs="*", default=[], help="Extra import paths for runs.")
    ap.add_argument("--out", type=Path, default=Path("/tmp/train_multi_gpu"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    n_gpu = args.gpus or max(1, torch.cuda.device_count())
    runs = {k: ROOT / v for k, v in RUNS.items() if k in args.runs}
    for item in args.config:
        name, _, path = item.partition("=")
        runs[name] = Path(path)
    results: dict[str, Any] = {}
    for name, config in runs.items():
        for batch in args.batches:
            key = f"{name}/b{batch}"
            one = launch(name, config, args.data, args.out, 1, batch, 1, args)
            entry: dict[str, Any] = {"one_gpu": one}
            if n_gpu > 1:
                many = launch(name, config, args.data, args.out, n_gpu, batch, 1, args)
                if args.reference == "accumulate":
                    accum = launch(name, config, args.data, args.out, 1, batch, n_gpu, args)
                else:
                    accum = launch(name, config, args.data, args.out, 1, batch * n_gpu, 1, args)
                entry.update(n_gpu=many, one_gpu_accumulated=accum)
            else:
                many = accum = one
            if one["ok"] and many["ok"]:
                entry["scaling_efficiency"] = many["samples_per_s"] / (n_gpu * one["samples_per_s"])
            if many["ok"] and accum["ok"]:
                a = many["losses"][: args.compare_steps]
                b = accum["losses"][: args.compare_steps]
                diffs = [abs(x - y) for x, y in zip(a, b)]
                entry["loss_compare"] = {
                    "reference": args.reference,
                    "steps": len(diffs),
                    "max_abs_diff": max(diffs),
                    "max_rel_diff": max(d / max(abs(y), 1e-12) for d, y in zip(diffs, b)),
                    "n_gpu": a,
                    "one_gpu_accumulated": b,
                }
            results[key] = entry
            eff = entry.get("scaling_efficiency")
            print(
                f"{key}: 1 GPU {one.get('samples_per_s_per_gpu', float('nan')):.1f} samples/s, "
                f"{n_gpu} GPUs {many.get('samples_per_s_per_gpu', float('nan')):.1f} /GPU, "
                f"efficiency {eff if eff is None else round(eff, 3)}, loader share "
                f"{many.get('loader_share', float('nan')):.3f}",
                flush=True,
            )
    devices = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() and args.device != "cpu"
        else ["cpu"]
    )
    report = {
        "benchmark": "train_multi_gpu",
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "devices": devices,
        "n_gpu": n_gpu,
        "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": results,
    }
    path = args.json or ROOT / "benchmarks" / "results" / f"train_multi_gpu_{n_gpu}gpu.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    if not all(e["one_gpu"]["ok"] for e in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
