"""End to end: ``build-dataset`` on a tiny synthetic archive (real GeoTIFFs, real Dask)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
from affine import Affine
from buildkit import BUILD_CONFIG, assert_same_dataset
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window as RioWindow

from spectralearth_build import open_dataset
from spectralearth_build.build import EXIT_INVALID_PRODUCTS, build_dataset
from spectralearth_build.catalog import read_catalog, source_from_json
from spectralearth_build.config import BuildConfig


def test_cli_build_on_one_worker_matches_source_pixels(run_build, reference, tmp_path):
    out = tmp_path / "out"
    res = run_build("--out", out, "--workers", 1)
    assert res.exit_code == 0, res.output  # the archive has no broken products
    assert "patches:" in res.output and "written:" in res.output and "time:" in res.output
    ds = open_dataset(out)
    assert len(ds) > 0 and ds.views["resampled"].any()  # the archive straddles UTM 32/33
    assert ds.wavelengths.shape == (202,) and ds.fwhm.shape == (202,)
    assert (ds.index["n_views"] > 1).any(), "the tiny archive should give multi-timestamp patches"
    catalog = read_catalog(out / "catalog.parquet")
    sources = {
        r.product_id: source_from_json(r.source)
        for r in catalog.itertuples(index=False)
        if r.status == "ok"
    }
    kept = [int(i) + 1 for i in BuildConfig().bands.kept_indices]
    checked = resampled = 0
    for i in range(len(ds)):
        item = ds[i]
        rows = ds.views.iloc[int(ds.index["view_start"].iloc[i]) :][: len(item["products"])]
        assert item["image"].shape == (len(rows), 202, 32, 32)
        assert list(rows["product"]) == item["products"]
        assert (np.diff(item["times"].astype(np.int64)) > 0).all()
        for t, r in enumerate(rows.itertuples(index=False)):
            if r.resampled:  # another UTM zone: nearest-neighbour resampling of the window
                with rasterio.open(sources[r.product].gdal_path("SPECTRAL_IMAGE")) as f:
                    win = RioWindow(r.col_off, r.row_off, r.width, r.height)
                    src = f.read(kept, window=win)
                    src_transform, src_crs = f.window_transform(win), f.crs
                    assert src_crs.to_string() != item["crs"]
                ref = np.full((202, 32, 32), -32768, np.int16)
                reproject(
                    src,
                    ref,
                    src_transform=src_transform,
                    src_crs=src_crs,
                    dst_transform=Affine(*item["transform"]),
                    dst_crs=item["crs"],
                    src_nodata=-32768,
                    dst_nodata=-32768,
                    resampling=Resampling.nearest,
                )
                np.testing.assert_array_equal(item["image"][t], ref)
                resampled += 1
                continue
            with rasterio.open(sources[r.product].gdal_path("SPECTRAL_IMAGE")) as f:
                src = f.read(kept, window=RioWindow(r.col_off, r.row_off, r.width, r.height))
                assert f.crs.to_string() == item["crs"]
                # the patch transform is the source transform shifted by the window
                a = f.transform
                assert item["transform"][2] == pytest.approx(a.c + a.a * r.col_off)
                assert item["transform"][5] == pytest.approx(a.f + a.e * r.row_off)
            np.testing.assert_array_equal(item["image"][t], src)
            checked += 1
    assert checked >= len(ds) and resampled >= 1
    assert_same_dataset(out, reference)


def test_default_workers_give_the_dataset_of_zero_and_one(
    tiny_archive, config_file, reference, tmp_path
):
    # 0 workers (the reference) == one worker per core here == 1 worker (the CLI test above)
    build_dataset(tiny_archive, tmp_path / "w", BuildConfig.from_yaml(config_file))
    assert_same_dataset(tmp_path / "w", reference)


def test_killed_build_resumes_to_the_same_dataset(
    tiny_archive, config_file, reference, run_build, tmp_path
):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-c",
        "from spectralearth_build.cli import build_dataset_main as m; m()",
        "--tiles",
        str(tiny_archive),
        "--out",
        str(out),
        "--config",
        str(config_file),
        "--workers",
        "0",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not list((out / "units").glob("unit-*.json")):
            assert proc.poll() is None, "build finished before the first unit marker was seen"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "_COMPLETE").exists()
    from spectralearth_build.errors import IncompleteDatasetError

    with pytest.raises(IncompleteDatasetError):
        open_dataset(out)
    n_before = len(list((out / "units").glob("unit-*.json")))
    res = run_build("--out", out, "--resume")
    assert res.exit_code == 0, res.output
    assert "continuing the build" in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["units_resumed"] >= n_before >= 1
    assert report["units"] > report["units_resumed"]
    assert_same_dataset(out, reference)


def test_rerun_of_a_complete_build_does_nothing(reference, tiny_archive, config_file):
    before = sorted(
        p.stat().st_mtime_ns for p in (reference / "data.zarr").rglob("*") if p.is_file()
    )
    report = build_dataset(tiny_archive, reference, BuildConfig.from_yaml(config_file), workers=0)
    after = sorted(
        p.stat().st_mtime_ns for p in (reference / "data.zarr").rglob("*") if p.is_file()
    )
    assert before == after
    assert report.patches == len(open_dataset(reference))


def test_invalid_products_are_reported_with_a_distinct_exit_status(
    tiny_archive, run_build, tmp_path
):
    tiles = tmp_path / "tiles"
    shutil.copytree(tiny_archive, tiles)
    image = sorted(p for p in tiles.rglob("*SPECTRAL_IMAGE*.TIF"))[0]
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 3])  # truncated download
    args = ["--tiles", tiles, "--quiet"]
    res = run_build(*args, "--out", tmp_path / "a")
    assert res.exit_code == EXIT_INVALID_PRODUCTS, res.output
    assert "invalid products skipped" in res.output
    assert image.name.split("-SPECTRAL")[0] in res.output
    assert (tmp_path / "a" / "_COMPLETE").exists()
    res = run_build(*args, "--out", tmp_path / "b", "--allow-invalid")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    "case",
    ["missing tiles", "bad config", "resume nothing", "changed config", "not a build", "both"],
)
def test_user_mistakes_give_one_line_errors(case, reference, run_build, tmp_path):
    args = ["--out", str(tmp_path / "out")]
    if case == "missing tiles":
        args += ["--tiles", str(tmp_path / "nope")]
        expect = "no such file or folder"
    elif case == "bad config":
        bad = tmp_path / "bad.yaml"
        bad.write_text("extract:\n  max_cloud_fractoin: 0.5\n")
        args += ["--config", str(bad)]
        expect = "unknown key"
    elif case == "resume nothing":
        args += ["--resume"]
        expect = "no build to resume"
    elif case == "changed config":
        other = tmp_path / "other.yaml"
        other.write_text(json.dumps({**BUILD_CONFIG, "extract": {"max_cloud_fraction": 0.5}}))
        args[1] = str(reference)
        args += ["--config", str(other)]
        expect = "different config"
    elif case == "not a build":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "x.txt").write_text("mine")
        expect = "not a dataset build"
    else:
        args += ["--workers", "0", "--scheduler", "tcp://127.0.0.1:1"]
        expect = "exclude each other"
    res = run_build(*args)
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and expect in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
