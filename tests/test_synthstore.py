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
from spectralearth_build.synthstore import write_synthetic_store


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
    write_synthetic_store(tmp_path / "c", 5, max_views=2, patch_px=8, seed=4)
    a, b, c = (open_dataset(tmp_path / x) for x in "abc")
    assert a.images.shards[0] != b.images.shards[0]
    for i in range(5):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
    assert not np.array_equal(a[0]["image"][0], c[0]["image"][0])
    assert a.views.equals(b.views) and a.attrs["band_mean"] == b.attrs["band_mean"]
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
