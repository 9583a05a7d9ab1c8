"""Same inputs, same results: this checkout against an earlier commit of the package.

Builds the same synthetic archives with the same configs twice, once with the package of a
``--base`` checkout (e.g. ``git worktree add /tmp/base 717f63b``) and once with this one, each
in its own Python process (``PYTHONPATH`` set to the checkout), and compares:

* ``catalog.parquet`` and ``plan.parquet``: byte for byte;
* the pixels: the whole ``images`` arrays (whatever their chunk layout), and every sample
  ``ds[i]`` and ``ds.read_views(i, ts)`` read with this checkout's loader from both datasets;
* the tables (``index.parquet``, ``views.parquet``, ``dropped_views.parquet``): equal frames;
* the store attributes, apart from the format fields (``format_version``);
* ``report.json`` apart from ``seconds``.

Configs pin ``extract.compressor`` so that both builds use the same codec (a different default
codec is a different config, and the config is part of the plan file's metadata).  Writes
``benchmarks/results/compare_with_base.json`` and exits 1 on any difference.

    git worktree add /tmp/base 717f63b
    python benchmarks/compare_with_base.py --base /tmp/base
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parents[1]
ROOT = Path(__file__).resolve().parent
FORMAT_FIELDS = {"format_version"}
CASES = {
    "tiny-test-config": (
        {"preset": "tiny", "seed": 0},
        {
            "plan": {"patch_px": 32},
            "extract": {"max_unit_patches": 3, "locations_per_shard": 2},
        },
    ),
    "tiny-mixed-broken-loose-checks": (
        {"preset": "tiny", "seed": 1, "broken": True, "packaging": "mixed"},
        {
            "plan": {"patch_px": 48},
            "extract": {"max_cloud_fraction": 0.3, "max_snow_fraction": 0.5},
        },
    ),
}


def run_build(checkout: Path, tiles: Path, out: Path, config: dict) -> None:
    code = (
        "import json, sys; from spectralearth_build.build import build_dataset;"
        "from spectralearth_build.config import BuildConfig;"
        f"build_dataset({str(tiles)!r}, {str(out)!r}, "
        f"BuildConfig.from_dict(json.loads({json.dumps(config)!r})), workers=0)"
    )
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def git_head(checkout: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


def compare(a: Path, b: Path) -> dict:
    """Differences between dataset ``a`` (base) and ``b`` (this checkout); empty = equal."""
    import geopandas as gpd
    import zarr

    from spectralearth_build import open_dataset

    out: dict = {}
    for name in ("catalog.parquet", "plan.parquet"):
        out[f"{name} identical bytes"] = (a / name).read_bytes() == (b / name).read_bytes()
    ia = zarr.open_array(store=str(a / "data.zarr" / "images"), mode="r")
    ib = zarr.open_array(store=str(b / "data.zarr" / "images"), mode="r")
    out["images equal"] = bool(ia.shape == ib.shape and np.array_equal(ia[:], ib[:]))
    out["chunks"] = {"base": list(ia.chunks), "new": list(ib.chunks)}
    da, db = open_dataset(a), open_dataset(b)
    same = len(da) == len(db)
    for i in range(len(da) if same else 0):
        x, y = da[i], db[i]
        same &= np.array_equal(x.pop("image"), y.pop("image"))
        same &= np.array_equal(x.pop("times"), y.pop("times"))
        same &= x == y
        ts = list(range(da.n_views_at(i)))[::-1]
        same &= np.array_equal(da.read_views(i, ts), db.read_views(i, ts))
    out["samples equal"] = bool(same)
    out["samples"] = len(db)
    ga, gb = gpd.read_parquet(a / "index.parquet"), gpd.read_parquet(b / "index.parquet")
    out["index equal"] = bool(
        pd.DataFrame(ga.drop(columns="geometry")).equals(pd.DataFrame(gb.drop(columns="geometry")))
        and list(ga.geometry.to_wkb()) == list(gb.geometry.to_wkb())
        and ga.crs == gb.crs
    )
    for name in ("views.parquet", "dropped_views.parquet"):
        fa, fb = pd.read_parquet(a / name), pd.read_parquet(b / name)
        out[f"{name} equal"] = bool(fa.equals(fb) and list(fa.dtypes) == list(fb.dtypes))
    aa = {k: v for k, v in da.attrs.items() if k not in FORMAT_FIELDS}
    ab = {k: v for k, v in db.attrs.items() if k not in FORMAT_FIELDS}
    out["attributes equal apart from format fields"] = json.dumps(aa, sort_keys=True) == (
        json.dumps(ab, sort_keys=True)
    )
    out["format_version"] = {"base": da.attrs["format_version"], "new": db.attrs["format_version"]}
    ra = json.loads((a / "report.json").read_text())
    rb = json.loads((b / "report.json").read_text())
    ra.pop("seconds"), rb.pop("seconds")
    ra.pop("out"), rb.pop("out")
    ra.pop("bytes_written"), rb.pop("bytes_written")  # the layout changes the store's size
    out["report equal apart from seconds and bytes"] = ra == rb
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="checkout of the earlier commit")
    ap.add_argument("--work", type=Path, default=Path("/tmp/seb-compare"))
    ap.add_argument("--compressor", default="blosc-zstd", help="pinned in both builds")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "compare_with_base.json")
    args = ap.parse_args()
    from spectralearth_build.synth import make_archive

    shutil.rmtree(args.work, ignore_errors=True)
    results = {}
    ok = True
    for case, (synth, config) in CASES.items():
        tiles = args.work / case / "tiles"
        make_archive(tiles, **synth)
        config = {**config, "extract": {**config["extract"], "compressor": args.compressor}}
        run_build(args.base, tiles, args.work / case / "base", config)
        run_build(HERE, tiles, args.work / case / "new", config)
        res = compare(args.work / case / "base", args.work / case / "new")
        res["config"] = config
        res["archive"] = synth
        checks = [v for v in res.values() if isinstance(v, bool)]
        res["all equal"] = all(checks)
        ok &= res["all equal"]
        results[case] = res
        print(case, "all equal" if res["all equal"] else json.dumps(res, indent=1), flush=True)
    doc = {
        "benchmark": "compare_with_base",
        "base_commit": git_head(args.base),
        "new_commit": git_head(HERE),
        "machine": {"platform": platform.platform(), "cores": os.cpu_count()},
        "cases": results,
        "all equal": ok,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    shutil.rmtree(args.work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
