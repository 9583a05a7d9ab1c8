"""The build report, quicklooks and `info` on a tiny synthetic build (real files and browser)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from browserkit import Chromium, find_chromium
from click.testing import CliRunner
from matplotlib.image import imread
from pyproj import Transformer
from scipy.ndimage import binary_erosion

from spectralearth_build import open_dataset
from spectralearth_build.cli import main
from spectralearth_build.report.figures import find_frequencies, regions
from spectralearth_build.report.info import store_info
from spectralearth_build.report.page import FIGURES
from spectralearth_build.report.quicklook import location_figure
from spectralearth_build.report.rgb import location_rgb, rgb_band_indices

CONFIG = "plan:\n  patch_px: 32\nextract:\n  max_unit_patches: 4\n"
# CDL codes of the synthetic classes (spectralearth_build/synth/spectra.py)
WATER = [111]
VEGETATION = [141, 142, 1, 5, 176]  # forests, corn, soybean, grassland
BARE = [131]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from spectralearth_build.synth import make_archive

    # with broken products: the report lists them (and the build exits 0 with --allow-invalid)
    return make_archive(tmp_path_factory.mktemp("synth") / "tiles", "tiny", seed=0, broken=True)


@pytest.fixture(scope="module")
def built(archive, tmp_path_factory) -> Path:
    """A dataset built by the CLI, which writes the report at the end."""
    root = tmp_path_factory.mktemp("build")
    (root / "cfg.yaml").write_text(CONFIG)
    out = root / "out"
    res = CliRunner().invoke(
        main,
        ["build", "--tiles", archive.out, "--out", str(out), "--config", str(root / "cfg.yaml")]
        + ["--workers", "0", "--allow-invalid"],
    )
    assert res.exit_code == 0, res.output
    assert f"report: {out / 'report' / 'index.html'}" in res.output
    return out


def value_at(doc: dict, key: list) -> object:
    for k in key:
        doc = doc[k]
    return doc


def test_build_writes_the_report_figures(built):
    rep = built / "report"
    for name, _, _ in FIGURES:
        img = imread(rep / name)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400, name
        assert img[..., :3].std() > 0.05, f"{name} is blank"
    html = (rep / "index.html").read_text()
    assert all(f'src="{name}"' in html for name, _, _ in FIGURES)


@pytest.mark.skipif(find_chromium() is None, reason="no chromium binary (.ci/run installs it)")
def test_report_page_in_headless_chromium(built, tmp_path):
    report = json.loads((built / "report.json").read_text())
    info = store_info(built)
    page = (built / "report" / "index.html").resolve()
    with Chromium(find_chromium()) as browser:
        browser.open(page.as_uri())
        images = browser.evaluate(
            "Array.from(document.images).map(i => "
            "[i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight])"
        )
        cells = browser.evaluate(
            "Array.from(document.querySelectorAll('[data-key],[data-info]')).map(e => "
            "[e.dataset.key || null, e.dataset.info || null, e.textContent])"
        )
        untagged = browser.evaluate(
            "Array.from(document.querySelectorAll('td')).filter(e => /[0-9]/.test(e.textContent)"
            " && !e.dataset.key && !e.dataset.info).map(e => e.textContent)"
        )
        remote = browser.evaluate(
            "Array.from(document.querySelectorAll('[src],[href]')).map(e => "
            "e.getAttribute('src') || e.getAttribute('href')).filter(u => /^[a-z]+:/i.test(u))"
        )
        browser.screenshot(tmp_path / "report.png")
    # every figure is on the page and loaded; every PNG of the folder is shown
    assert sorted(src for src, *_ in images) == sorted(p.name for p in page.parent.glob("*.png"))
    assert {name for name, _, _ in FIGURES} <= {src for src, *_ in images}
    for src, complete, width, height in images:
        assert complete and width > 200 and height > 100, src
    assert remote == []  # offline: no remote (or any absolute) URL
    assert untagged == []
    # every number shown is the one in report.json (or the store summary)
    checked = 0
    for key, ikey, text in cells:
        value = value_at(report, json.loads(key)) if key else value_at(info, json.loads(ikey))
        if isinstance(value, bool) or not isinstance(value, int | float):
            assert text == str(value)
        elif isinstance(value, int):
            assert int(text.replace(",", "")) == value, (key or ikey, text)
        else:
            assert abs(float(text.replace(",", "")) - value) <= 0.005 + 1e-9, (key or ikey, text)
        checked += 1
    keys = {tuple(json.loads(k)) for k, _, _ in cells if k}
    for t in report["patches_by_timestamps"]:
        assert ("patches_by_timestamps", t) in keys
    for reason in report["dropped_views"]:
        assert ("dropped_views", reason) in keys
    for stage in report["seconds"]:
        assert ("seconds", stage) in keys
    assert {("patches",), ("views",), ("bytes_written",), ("planned_patches",)} <= keys
    assert len(report["invalid_products"]) >= 5
    for i in range(len(report["invalid_products"])):
        assert ("invalid_products", i, "product") in keys
    assert checked >= 25
    assert imread(tmp_path / "report.png").shape[0] > 2000


def test_report_command_rewrites_elsewhere(built, tmp_path):
    res = CliRunner().invoke(main, ["report", str(built), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == sorted(
        [name for name, _, _ in FIGURES] + ["index.html"]
    )
    res = CliRunner().invoke(main, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 1 and res.output.startswith("Error: ")


def _class_masks(item: dict, cdl_path: str) -> dict[str, np.ndarray] | None:
    """Interior pixels of each class in a location, from the CDL raster at the pixel centres."""
    with rasterio.open(cdl_path) as src:
        labels, crs, transform = src.read(1), src.crs.to_string(), src.transform
    p = item["image"].shape[-1]
    rows, cols = np.mgrid[0:p, 0:p]
    x, y = Affine(*item["transform"]) * (cols + 0.5, rows + 0.5)
    lx, ly = Transformer.from_crs(item["crs"], crs, always_xy=True).transform(x, y)
    r, c = rasterio.transform.rowcol(transform, lx.ravel(), ly.ravel())
    r, c = np.asarray(r), np.asarray(c)
    if r.min() < 0 or c.min() < 0 or r.max() >= labels.shape[0] or c.max() >= labels.shape[1]:
        return None
    codes = labels[r, c].reshape(p, p)
    return {
        name: binary_erosion(np.isin(codes, cls), iterations=1)
        for name, cls in (("water", WATER), ("vegetation", VEGETATION), ("bare", BARE))
    }


def test_quicklook_colours_follow_the_land_cover(built, archive):
    ds = open_dataset(built)
    bands = rgb_band_indices(ds.wavelengths)
    assert [round(float(ds.wavelengths[b]) / 10) * 10 for b in bands] == [640, 550, 460]
    dark, green = 0, 0
    for i in range(len(ds)):
        item = ds[i]
        masks = _class_masks(item, str(archive.label("cdl")))
        if masks is None:  # not (fully) in the US site that the CDL raster covers
            continue
        rgb = location_rgb(item["image"], bands)
        for t in range(len(rgb)):
            mean = {k: rgb[t][m].mean(axis=0) for k, m in masks.items() if m.sum() >= 10}
            luma = {k: float(v @ [0.2126, 0.7152, 0.0722]) for k, v in mean.items()}
            exg = {k: float(2 * v[1] - v[0] - v[2]) for k, v in mean.items()}
            if "water" in mean and "vegetation" in mean:
                assert luma["water"] < luma["vegetation"], (item["patch_id"], t, mean)
                dark += 1
            if "bare" in mean and "vegetation" in mean:
                assert exg["vegetation"] > exg["bare"], (item["patch_id"], t, mean)
                green += 1
    assert dark >= 3 and green >= 2  # the comparisons were made


def test_quicklook_shows_timestamps_in_time_order_with_dates(built, tmp_path):
    ds = open_dataset(built)
    views = pd.read_parquet(built / "views.parquet")
    n_views = ds.index.set_index("patch_id")["n_views"]
    multi, single = int(n_views.idxmax()), int(n_views.idxmin())
    assert n_views[multi] >= 3
    res = CliRunner().invoke(
        main,
        ["quicklook", str(built), "--out", str(tmp_path), "--patch-id", str(multi)]
        + ["--patch-id", str(single)],
    )
    assert res.exit_code == 0, res.output
    wide, narrow = (imread(tmp_path / f"location-{p:07d}.png") for p in (multi, single))
    assert wide.shape[1] > 2 * narrow.shape[1]  # one panel per timestamp
    # the panels, left to right, are the location's views in time order, titled with dates
    pos = int(np.nonzero(ds.index["patch_id"].to_numpy() == multi)[0][0])
    item = ds[pos]
    fig = location_figure(item, location_rgb(item["image"], rgb_band_indices(ds.wavelengths)), {})
    titles = [ax.get_title() for ax in fig.axes]
    expected = views[views["patch_id"] == multi]["time"].sort_values()
    assert titles == [f"{t:%Y-%m-%d %H:%M} UTC" for t in expected]
    assert pd.Series(pd.to_datetime([t[:16] for t in titles])).is_monotonic_increasing
    products = [ax.get_xlabel().replace("\n", "") for ax in fig.axes]
    assert [f"ENMAP01-____L2A-{p}" for p in products] == item["products"]


def test_quicklook_sample_and_contact_sheet(built, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["quicklook", str(built), "--out", str(tmp_path / "a"), "--n", "5"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(names) == 6 and "contact_sheet.png" in names
    again = runner.invoke(main, ["quicklook", str(built), "--out", str(tmp_path / "b"), "--n", "5"])
    assert again.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == names  # seeded sample
    bad = runner.invoke(
        main, ["quicklook", str(built), "--out", str(tmp_path), "--patch-id", "999"]
    )
    assert bad.exit_code == 1 and "no location with patch id 999" in bad.output


def test_info_text_and_json(built):
    ds = open_dataset(built)
    res = CliRunner().invoke(main, ["info", str(built), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["locations"] == len(ds) and info["views"] == len(ds.views)
    by_t = ds.index["n_views"].value_counts()
    assert info["locations_by_timestamps"] == {str(k): int(v) for k, v in by_t.items()}
    assert info["bands"] == 202 == len(ds.wavelengths)
    assert info["wavelength_nm"] == [ds.wavelengths.min(), ds.wavelengths.max()]
    cname = {"blosc-lz4": "lz4", "blosc-zstd": "zstd"}[ds.attrs["config"]["extract"]["compressor"]]
    assert info["codec"] == f"blosc {cname} level 5, bitshuffle"
    assert info["store_bytes"] == sum(
        p.stat().st_size for p in (built / "data.zarr").rglob("*") if p.is_file()
    )
    assert info["config"]["plan"]["patch_px"] == 32 and info["labels"] is None
    text = CliRunner().invoke(main, ["info", str(built)])
    assert text.exit_code == 0
    assert f"locations  {len(ds)} (" in text.output and "labels     none" in text.output
    assert len(text.output.splitlines()) <= 25


def test_labels_and_tasks_are_shown_when_present(built, archive, tmp_path):
    out = tmp_path / "labelled"
    shutil.copytree(built, out, ignore=shutil.ignore_patterns("report"))
    cdl = f"cdl={archive.label('cdl')}"
    res = CliRunner().invoke(
        main, ["labels", "--dataset", str(out), "--labels", cdl, "--workers", "0"]
    )
    assert res.exit_code == 0, res.output
    ds = open_dataset(out)
    labelled = np.flatnonzero(np.asarray(ds.labels.has("cdl")))
    assert len(labelled) > 0
    text = CliRunner().invoke(main, ["info", str(out)])
    assert text.exit_code == 0, text.output
    assert f"  cdl.coverage.ok: {len(labelled)}" in text.output
    res = CliRunner().invoke(main, ["report", str(out)])
    assert res.exit_code == 0, res.output
    assert imread(out / "report" / "labels.png").shape[0] > 100
    html = (out / "report" / "index.html").read_text()
    assert 'src="labels.png"' in html and "cdl.splits.random.train" in html
    tables = dict(find_frequencies(ds.attrs["tasks"]))
    task = ds.attrs["tasks"]["cdl"]
    assert tables["cdl.class_frequencies.all"]["all"] == dict(
        zip(task["classes"], map(float, task["class_frequencies"]["all"]))
    )
    # a labelled location: mask panels with a legend of class names after the timestamps
    item = ds[int(labelled[0])]
    rgb = location_rgb(item["image"], rgb_band_indices(ds.wavelengths))
    fig = location_figure(item, rgb, ds.attrs)
    assert len(fig.axes) == len(rgb) + 2 and fig.axes[-2].get_title() == "label: cdl"
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    names = {1: "Corn", 5: "Soybeans", 111: "Open Water", 0: "Background"}
    codes = np.unique(item["labels"]["cdl"]).tolist()
    assert len(legend) == len(codes)
    for code, entry in zip(codes, legend):
        assert entry.startswith(f"{code} ")
        if code in names:
            assert entry == f"{code} {names[code]}"


def test_map_regions_group_nearby_boxes():
    boxes = np.array(
        [
            [11.9, 48.3, 12.0, 48.4],
            [12.1, 48.2, 12.3, 48.5],
            [-93.6, 42.0, -93.5, 42.1],
            [5, 5, 5.1, 5.1],
        ]
    )
    panels, n = regions(boxes, weights=np.array([1, 1, 5, 1]), max_regions=2)
    assert n == 3
    np.testing.assert_allclose(panels[0], boxes[2])  # heaviest first
    np.testing.assert_allclose(panels[1], [11.9, 48.2, 12.3, 48.5])  # the two nearby boxes
