"""``synth-store``: a synthetic dataset written straight into the store format."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from spectralearth_build import formats as fmt
from spectralearth_build import open_dataset
from spectralearth_build.bands import reference_bands
from spectralearth_build.cli import main
from spectralearth_build.config import BuildConfig
from spectralearth_build.errors import InputError
from spectralearth_build.synthstore import synthetic_views, write_synthetic_store


def test_command_writes_a_dataset_like_a_build(tmp_path):
    out = tmp_path / "store"
    args = ["synth-store", "--out", out, "--locations", 7, "--max-views", 3, "--patch-px", 16]
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert "wrote 7 locations" in res.output
    ds = open_dataset(out)
    assert len(ds) == 7 and ds.format_version == fmt.FORMAT_VERSION
    assert ds.images.chunks == (1, 1, 202, 16, 16) and ds.attrs["t_max"] == 3
    wl, fw = reference_bands()
    kept = BuildConfig().bands.kept_indices
    np.testing.assert_array_equal(ds.wavelengths, wl[kept])
    np.testing.assert_array_equal(ds.fwhm, fw[kept])
    np.testing.assert_array_equal(ds.band_indices, kept)
    images = [ds[i]["image"] for i in range(len(ds))]
    assert {im.shape[0] for im in images} <= {1, 2, 3} and len({im.shape[0] for im in images}) > 1
    stack = np.concatenate(images).astype(np.float64)
    assert stack.min() >= 0 and stack.max() <= 10_000
    np.testing.assert_allclose(ds.band_mean, stack.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(ds.band_std, stack.std(axis=(0, 2, 3)), rtol=1e-9)
    # spectra are smooth along wavelength (a random walk), not white noise
    spectrum = stack[0, :, 8, 8]
    assert np.abs(np.diff(spectrum)).mean() < 0.5 * spectrum.std() + 200
    # tables like a real build's
    assert list(ds.table.columns) == list(fmt.INDEX_COLUMNS)
    assert list(ds.views.columns) == list(fmt.VIEW_COLUMNS)
    assert ds.attrs["n_views"] == len(ds.views) == int(ds.table["n_views"].sum())
    for i in range(len(ds)):
        item = ds[i]
        assert (np.diff(item["times"].astype(np.int64)) > 0).all()
        rows = ds.views.iloc[ds.table["view_start"].iat[i] :][: len(item["products"])]
        assert list(rows["t"]) == list(range(len(rows))) and (rows["patch_id"] == i).all()
    index = ds.index
    assert index.crs.to_epsg() == 4326 and index.geometry.is_valid.all()
    import shapely
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(ds.table["crs"].iat[0], "EPSG:4326", always_xy=True)
    for native, geom in zip(index["footprint_native"], index.geometry):
        xy = shapely.get_coordinates(shapely.from_wkb(native))
        exact = np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1]))
        np.testing.assert_allclose(shapely.get_coordinates(geom), exact, atol=1e-6)  # degrees
    assert (out / fmt.COMPLETE).exists()
    assert json.loads((out / fmt.MANIFEST).read_text())["kind"] == "synthetic-store"
    res = CliRunner().invoke(main, [str(a) for a in args])  # refuses a non-empty folder
    assert res.exit_code == 1 and res.output.startswith("Error: ")


def test_same_seed_same_store_whatever_the_shard_size(tmp_path):
    small = BuildConfig().replace(extract={"locations_per_shard": 2})
    write_synthetic_store(tmp_path / "a", 5, max_views=2, patch_px=8, seed=3)
    write_synthetic_store(tmp_path / "b", 5, max_views=2, patch_px=8, seed=3, config=small)
    a, b = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "b")
    assert a.images.shards[0] != b.images.shards[0]
    for i in range(5):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
    assert a.views.equals(b.views) and a.attrs["band_mean"] == b.attrs["band_mean"]
    wl = a.wavelengths
    one = synthetic_views(np.random.default_rng([3, 1, 0]), wl, 2, 8)
    other = synthetic_views(np.random.default_rng([4, 1, 0]), wl, 2, 8)
    assert not np.array_equal(one, other)  # another seed, other pixels
    with pytest.raises(InputError, match="locations"):
        write_synthetic_store(tmp_path / "d", 0)


def test_synth_store_imports_no_raster_or_geo_stack(tmp_path):
    out = tmp_path / "store"
    code = (
        "import sys; from spectralearth_build.cli import main;"
        f"main(['synth-store', '--out', {str(out)!r}, '--locations', '3', '--max-views', '2',"
        " '--patch-px', '8', '-q'], standalone_mode=False);"
        "import spectralearth_build as seb; ds = seb.open_dataset("
        f"{str(out)!r}); ds.read_views(0, [0]);"
        "bad = {'rasterio', 'osgeo', 'geopandas', 'shapely', 'pyproj', 'fiona', 'dask',"
        " 'distributed', 'torch'};"
        "print(sorted({m.split('.')[0] for m in sys.modules} & bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout + res.stderr


def _reference_views(rng, wavelengths, n_views, patch_px):
    """``synthetic_views`` as first written (temporaries per view): the bytes it must keep."""
    c = wavelengths.size
    spacing = np.abs(np.diff(wavelengths, prepend=wavelengths[0]))
    steps = rng.normal(0.0, 1.0, c) * np.sqrt(spacing + 1.0)
    base = 1500.0 + 900.0 * rng.random() + 60.0 * np.cumsum(steps)
    base = np.clip(base, 100.0, 8000.0).astype(np.float32)
    coarse = rng.normal(0.0, 1.0, (8, 8)).astype(np.float32)
    rep = -(-patch_px // 8)
    field = np.kron(coarse, np.ones((rep, rep), np.float32))[:patch_px, :patch_px]
    out = np.empty((n_views, c, patch_px, patch_px), np.int16)
    for t in range(n_views):
        gain = np.float32(0.8 + 0.4 * rng.random())
        image = base[:, None, None] * gain * (1.0 + 0.15 * field[None])
        image += rng.standard_normal(image.shape, dtype=np.float32) * 25.0
        out[t] = np.clip(image, 0.0, 10_000.0).astype(np.int16)
    return out


@pytest.mark.parametrize(("n_views", "patch_px"), [(1, 8), (3, 13), (2, 128)])
def test_views_are_those_of_the_reference_generator(n_views, patch_px):
    wl = reference_bands()[0][BuildConfig().bands.kept_indices]
    expected = _reference_views(np.random.default_rng([5, 1, patch_px]), wl, n_views, patch_px)
    got = synthetic_views(np.random.default_rng([5, 1, patch_px]), wl, n_views, patch_px)
    assert got.dtype == np.int16 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    block = np.full((n_views + 1, wl.size, patch_px, patch_px), fmt.NODATA, np.int16)
    filled = synthetic_views(
        np.random.default_rng([5, 1, patch_px]), wl, n_views, patch_px, out=block
    )
    assert np.shares_memory(filled, block)
    np.testing.assert_array_equal(block[:n_views], expected)
    assert (block[n_views] == fmt.NODATA).all()  # slots past the views are left alone


def _files(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_one_and_two_worker_processes_write_the_same_bytes(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("extract:\n  locations_per_shard: 2\n")  # 5 locations: 3 shard blocks
    stores = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        args = ["synth-store", "--out", str(out), "--locations", "5", "--max-views", "3"]
        args += ["--patch-px", "16", "--seed", "4", "--config", str(cfg), "--workers", workers]
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        stores[workers] = _files(out)
    one, two = stores["1"], stores["2"]
    shards = [k for k in one if k.startswith(f"{fmt.STORE_NAME}/images/c/")]
    assert len(shards) == 3 and sorted(one) == sorted(two)
    for name in one:  # chunks, zarr.json with the attributes, the parquet tables, build.json
        assert one[name] == two[name], name
    ds = open_dataset(tmp_path / "w2")
    assert list(ds.views["patch_id"]) == sorted(ds.views["patch_id"])
    assert ds.attrs["n_views"] == len(ds.views) == int(ds.table["n_views"].sum())
    stack = np.concatenate([ds[i]["image"] for i in range(len(ds))]).astype(np.float64)
    np.testing.assert_allclose(ds.band_mean, stack.mean(axis=(0, 2, 3)), rtol=1e-12)


def test_workers_must_be_a_positive_number_or_auto(tmp_path):
    base = ["synth-store", "--out", str(tmp_path / "s"), "--locations", "2", "--patch-px", "8"]
    for bad in ("0", "-2", "two"):
        res = CliRunner().invoke(main, [*base, "--workers", bad])
        assert res.exit_code == 2 and "Invalid value for '--workers'" in res.output, res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "s").exists()
    res = CliRunner().invoke(main, [*base, "--workers", "auto", "-q"])
    assert res.exit_code == 0 and "wrote 2 locations" in res.output, res.output
    with pytest.raises(InputError, match="workers"):
        write_synthetic_store(tmp_path / "t", 2, patch_px=8, workers=0)
