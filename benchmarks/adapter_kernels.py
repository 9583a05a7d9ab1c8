"""Launch configurations of the fused Triton adapter kernels, timed on a GPU in one run.

For every candidate tile size / warp count (and, for the backward kernels, programs per SM) the
fused layers 1-2 are timed alone (forward; backward), at batch 256 of 128 x 128 px in bf16, and
the whole adapter's forward + backward with the best pair, against the Conv3d reference and the
banded-GEMM ``fast`` path. The fixed configurations in ``adapter_triton.py`` come from here.

    python benchmarks/adapter_kernels.py --out benchmarks/results/adapter_kernels_h200.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import time
from pathlib import Path

import torch

from spectralearth_build.train.models import SpectralAdapter
from spectralearth_build.train.models import adapter_triton as kt


def _time(fn, reps: int = 5) -> float:
    """Mean milliseconds of ``fn()`` after one warm-up call (CUDA events)."""
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def _best(results: list[dict], name: str) -> dict:
    """The fastest swept configuration, set on ``adapter_triton`` (or the current one)."""
    ok = [r for r in results if "ms" in r]
    cur = getattr(kt, name)
    if not ok:
        return {**dataclasses.asdict(cur), "swept": False}
    best = min(ok, key=lambda r: r["ms"])
    setattr(
        kt,
        name,
        kt.LaunchConfig(best["block_m"], best["num_warps"], best["programs_per_sm"]),
    )
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--px", type=int, default=128)
    ap.add_argument("--sweep", default="fwd,bwd,rows", help="which kernels to sweep")
    ap.add_argument("--out", default="benchmarks/results/adapter_kernels_h200.json")
    args = ap.parse_args()
    dev = "cuda"
    torch.manual_seed(0)
    x = torch.randn(args.batch, 202, args.px, args.px, device=dev, dtype=torch.bfloat16)
    geo = kt.BlockGeometry(bands=202, pos1=40, pos2=8)
    w1 = torch.randn(kt.WIN_BANDS, kt.WIN_POS * 32, device=dev) * 0.1
    b1 = torch.randn(kt.WIN_POS * 32, device=dev) * 0.1
    w2 = torch.randn(kt.WIN_POS * 32, 64, device=dev) * 0.05
    b2 = torch.randn(64, device=dev) * 0.1
    params = [t.requires_grad_() for t in (w1, b1, w2, b2)]
    res: dict = {
        "device_name": torch.cuda.get_device_name(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "batch": args.batch,
        "image_px": args.px,
        "fwd": [],
        "bwd": [],
    }
    t_start = time.perf_counter()
    sweep = args.sweep.split(",")
    for bm, nw in itertools.product((64, 128), (4, 8)) if "fwd" in sweep else ():
        kt.FWD = kt.LaunchConfig(block_m=bm, num_warps=nw)
        try:
            ms = _time(lambda: kt.FusedLayers12.apply(x, *params, geo))
            res["fwd"].append({"block_m": bm, "num_warps": nw, "ms": round(ms, 3)})
        except Exception as exc:  # noqa: BLE001
            res["fwd"].append({"block_m": bm, "num_warps": nw, "error": str(exc)[:200]})
        print(res["fwd"][-1], flush=True)
    if res["fwd"]:
        best_f = min((r for r in res["fwd"] if "ms" in r), key=lambda r: r["ms"])
        kt.FWD = kt.LaunchConfig(block_m=best_f["block_m"], num_warps=best_f["num_warps"])
    else:
        best_f = {"block_m": kt.FWD.block_m, "num_warps": kt.FWD.num_warps, "swept": False}
    y = kt.FusedLayers12.apply(x, *params, geo)
    g = torch.randn_like(y)
    bwd_grid = itertools.product((32, 64), (4, 8), (2, 4, 8, 16)) if "bwd" in sweep else ()
    for bm, nw, pps in bwd_grid:
        kt.BWD = kt.LaunchConfig(block_m=bm, num_warps=nw, programs_per_sm=pps)
        r = {"block_m": bm, "num_warps": nw, "programs_per_sm": pps}
        try:
            r["ms"] = round(_time(lambda: torch.autograd.grad(y, params, g, retain_graph=True)), 3)
        except Exception as exc:  # noqa: BLE001
            r["error"] = str(exc)[:200]
        res["bwd"].append(r)
        print(r, flush=True)
    best_b = _best(res["bwd"], "BWD")
    res["rows"] = []
    h = torch.randn(args.batch * args.px * args.px * 8, 64, device=dev, dtype=torch.bfloat16)
    gw = torch.rand(64, device=dev, requires_grad=True)
    gb = torch.randn(64, device=dev, requires_grad=True)
    gy = torch.randn_like(h)
    rows_grid = itertools.product((32, 64, 128), (4, 8), (2, 4, 8)) if "rows" in sweep else ()
    for bm, nw, pps in rows_grid:
        kt.ROWS = kt.LaunchConfig(block_m=bm, num_warps=nw, programs_per_sm=pps)
        r = {"block_m": bm, "num_warps": nw, "programs_per_sm": pps}

        def bn_step() -> None:
            mean, var = kt.row_moments(h)
            out = kt.BatchNormReLURows.apply(h, gw, gb, mean, var, 1e-5, True)
            torch.autograd.grad(out, (gw, gb), gy)

        try:
            r["ms"] = round(_time(bn_step), 3)
        except Exception as exc:  # noqa: BLE001
            r["error"] = str(exc)[:200]
        res["rows"].append(r)
        print(r, flush=True)
    best_r = _best(res["rows"], "ROWS")
    torch.cuda.empty_cache()
    res["best"] = {"fwd": best_f, "bwd": best_b, "rows": best_r}
    xf = x.float()
    whole = {}
    for impl in ("reference", "fast", "triton"):
        ad = SpectralAdapter(impl=impl).to(dev).train()

        def step(ad=ad):
            with torch.autocast(dev, dtype=torch.bfloat16):
                out = ad(xf)
            out.backward(torch.ones_like(out))

        whole[impl] = round(_time(step, reps=3), 3)
        print(impl, whole[impl], flush=True)
        del ad
        torch.cuda.empty_cache()
    res["adapter_fwd_bwd_ms"] = whole
    res["speedup_vs_reference"] = {k: round(whole["reference"] / v, 2) for k, v in whole.items()}
    res["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res["best"]), res["speedup_vs_reference"])


if __name__ == "__main__":
    main()
