"""The Zarr layout: shard sizing, codecs, shard ownership, per-view reads, v1 stores, loader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.abc.store import RangeByteRequest
from zarr.storage import LocalStore

from spectralearth_build import formats as fmt
from spectralearth_build import open_dataset
from spectralearth_build.config import BuildConfig, ExtractConfig
from spectralearth_build.errors import ConfigError, IncompleteDatasetError, InputError
from spectralearth_build.extract import store as st


def layout(n_slots, t_max, n_bands, patch_px, k, compressor="blosc-lz4", level=5, version=2):
    return fmt.StoreLayout.for_store(
        n_slots, t_max, n_bands, patch_px, k, compressor, level, format_version=version
    )


def test_auto_shard_size_is_a_power_of_two_within_the_budget():
    cfg = ExtractConfig(shard_max_mib=256)
    chunk = 202 * 128 * 128 * 2
    for t_max in (1, 2, 3, 7, 16, 40):
        k = st.locations_per_shard(cfg, t_max, 202, 128)
        assert k >= 1 and k & (k - 1) == 0
        assert k == 1 or k * t_max * chunk <= 256 * 2**20
        assert 2 * k * t_max * chunk > 256 * 2**20
    assert st.locations_per_shard(ExtractConfig(locations_per_shard=5), 3, 202, 128) == 5


@pytest.mark.parametrize("name", ["blosc-lz4", "blosc-zstd", "zstd", "gzip", "none"])
def test_each_codec_round_trips_int16(tmp_path, name):
    arr = st.create_images(tmp_path, layout(4, 2, 5, 8, 2, compressor=name, level=3))
    rng = np.random.default_rng(0)
    block = rng.integers(-32768, 32767, (4, 2, 5, 8, 8)).astype(np.int16)
    st.write_block(arr, 0, block)
    np.testing.assert_array_equal(st.open_images(tmp_path)[:], block)


def test_layout_round_trips_and_knows_both_versions():
    v2 = layout(8, 3, 4, 8, 4)
    assert fmt.StoreLayout.from_dict(json.loads(json.dumps(v2.to_dict()))) == v2
    assert v2.chunks == (1, 1, 4, 8, 8) and v2.shards == (4, 3, 4, 8, 8)
    assert layout(8, 3, 4, 8, 4, version=1).chunks == (1, 3, 4, 8, 8)
    assert v2.with_slots(12).shape == (12, 3, 4, 8, 8)
    with pytest.raises(ValueError, match="format_version"):
        layout(8, 3, 4, 8, 4, version=3)


def test_create_is_idempotent_and_rejects_another_layout(tmp_path):
    a = st.create_images(tmp_path, layout(8, 3, 4, 8, 4))
    st.write_block(a, 4, np.ones((4, 3, 4, 8, 8), np.int16))
    b = st.create_images(tmp_path, layout(8, 3, 4, 8, 4))  # resume: same layout, data kept
    assert (b[4:] == 1).all() and (b[:4] == fmt.NODATA).all()
    with pytest.raises(ValueError, match="does not match"):
        st.create_images(tmp_path, layout(8, 4, 4, 8, 4))
    with pytest.raises(ValueError, match="does not match"):
        st.create_images(tmp_path, layout(8, 3, 4, 8, 4, version=1))


def test_writes_are_shard_aligned_and_one_file_per_shard(tmp_path):
    arr = st.create_images(tmp_path, layout(12, 2, 3, 4, 4))
    with pytest.raises(ValueError, match="shard-aligned"):
        st.write_block(arr, 2, np.zeros((4, 2, 3, 4, 4), np.int16))
    with pytest.raises(ValueError, match="shard-aligned"):
        st.write_block(arr, 0, np.zeros((3, 2, 3, 4, 4), np.int16))
    block = np.full((4, 2, 3, 4, 4), fmt.NODATA, np.int16)
    block[1, 0] = 7  # one location, one timestamp: the rest of the shard is nodata
    st.write_block(arr, 8, block)
    files = sorted(
        p.relative_to(tmp_path / fmt.STORE_NAME / fmt.ARRAY_NAME).as_posix()
        for p in (tmp_path / fmt.STORE_NAME / fmt.ARRAY_NAME).rglob("*")
        if p.is_file() and p.name != "zarr.json"
    )
    assert files == ["c/2/0/0/0/0"]  # only shard 2, as one file
    st.write_block(arr, 8, np.full((4, 2, 3, 4, 4), fmt.NODATA, np.int16))
    meta = json.loads((tmp_path / fmt.STORE_NAME / fmt.ARRAY_NAME / "zarr.json").read_text())
    assert meta["fill_value"] == fmt.NODATA
    assert meta["dimension_names"] == list(fmt.DIMENSIONS)
    assert (arr[8:] == fmt.NODATA).all()


def test_one_view_is_one_inner_chunk(tmp_path):
    arr = st.create_images(tmp_path, layout(4, 3, 5, 8, 2))
    assert arr.chunks == (1, 1, 5, 8, 8)
    assert arr.shards == (2, 3, 5, 8, 8)
    g = zarr.open_group(str(tmp_path / fmt.STORE_NAME), mode="r")
    assert g[fmt.ARRAY_NAME].dtype == np.int16


class CountingStore(LocalStore):
    """A LocalStore that records every read: ``(key, byte_range, bytes returned)``."""

    def __init__(self, root: Path):
        super().__init__(root, read_only=True)
        self.reads: list[tuple[str, object, int]] = []

    async def get(self, key, prototype=None, byte_range=None):  # noqa: ANN001, ANN201
        buf = await super().get(key, prototype, byte_range)
        self.reads.append((key, byte_range, 0 if buf is None else len(buf)))
        return buf

    def chunk_reads(self) -> list[tuple[str, object, int]]:
        """Reads of inner chunks (byte ranges inside a shard; the shard index is a suffix)."""
        return [r for r in self.reads if isinstance(r[1], RangeByteRequest)]


def counting(ds) -> CountingStore:  # noqa: ANN001
    store = CountingStore(ds.path / fmt.STORE_NAME / fmt.ARRAY_NAME)
    ds._array = zarr.open_array(store=store, mode="r")
    return store


def test_a_single_view_read_decodes_one_inner_chunk(reference):
    ds = open_dataset(reference)
    assert ds.format_version == 2 and ds.attrs["format_version"] == 2
    n_views = ds.table["n_views"].to_numpy()
    i = int(np.flatnonzero(n_views >= 2)[0])
    whole = ds[i]["image"]
    view_bytes = fmt.view_chunk_bytes(len(ds.wavelengths), ds.attrs["patch_px"])

    store = counting(ds)
    one = ds.read_views(i, [1])
    np.testing.assert_array_equal(one, whole[[1]])
    reads = store.chunk_reads()
    assert len(reads) == 1, store.reads  # one inner chunk: view 1 only
    assert 0 < reads[0][2] <= view_bytes  # its compressed bytes, not the location's series

    store = counting(ds)
    pair = ds.read_views(i, [1, 0, 1])
    np.testing.assert_array_equal(pair, whole[[1, 0, 1]])
    assert len(store.chunk_reads()) == 2  # two distinct views, each decoded once

    j = int(np.flatnonzero(n_views < ds.attrs["t_max"])[0])  # a padded series
    store = counting(ds)
    assert ds[j]["image"].shape[0] == n_views[j]
    assert len(store.chunk_reads()) == n_views[j]  # the stored views, never the padding


def rewrite_as_version_1(src: Path, dst: Path) -> None:
    """Copy a dataset, rewriting its store in the format-version-1 layout (chunk = location)."""
    shutil.copytree(src, dst)
    old = zarr.open_array(store=str(src / fmt.STORE_NAME / fmt.ARRAY_NAME), mode="r")
    attrs = dict(zarr.open_group(str(src / fmt.STORE_NAME), mode="r").attrs)
    shutil.rmtree(dst / fmt.STORE_NAME)
    n_slots, t_max, n_bands, patch_px, _ = old.shape
    v1 = layout(n_slots, t_max, n_bands, patch_px, old.shards[0], "blosc-zstd", 5, version=1)
    arr = st.create_images(dst, v1)
    arr[:] = old[:]
    group = zarr.open_group(str(dst / fmt.STORE_NAME), mode="r+")
    group.attrs.update({**attrs, "format_version": 1})


def test_version_1_stores_still_open(reference, tmp_path):
    rewrite_as_version_1(reference, tmp_path / "v1")
    new, old = open_dataset(reference), open_dataset(tmp_path / "v1")
    assert old.format_version == 1 and old.images.chunks[1] == old.attrs["t_max"]
    assert len(old) == len(new)
    for i in range(len(new)):
        a, b = new[i], old[i]
        np.testing.assert_array_equal(a.pop("image"), b.pop("image"))
        np.testing.assert_array_equal(a.pop("times"), b.pop("times"))
        assert a == b
        ts = list(range(new.n_views_at(i)))[::-1] * 2
        np.testing.assert_array_equal(new.read_views(i, ts), old.read_views(i, ts))
    store = counting(old)
    old.read_views(0, [0])
    assert len(store.chunk_reads()) == 1  # version 1: the location's one chunk


def test_unknown_format_version_is_a_clear_error(reference, tmp_path):
    shutil.copytree(reference, tmp_path / "x")
    zarr.open_group(str(tmp_path / "x" / fmt.STORE_NAME), mode="r+").attrs["format_version"] = 9
    with pytest.raises(InputError, match="format version 9"):
        open_dataset(tmp_path / "x")


def test_incomplete_dataset_is_a_clear_error(tmp_path):
    st.create_images(tmp_path, layout(4, 1, 2, 4, 2))
    with pytest.raises(IncompleteDatasetError, match="not finished"):
        open_dataset(tmp_path)
    with pytest.raises(InputError, match="no such dataset"):
        open_dataset(tmp_path / "missing")


def test_package_import_does_not_load_dask_zarr_or_torch():
    code = (
        "import sys, spectralearth_build, spectralearth_build.dataset, spectralearth_build.build;"
        "heavy = {'dask', 'distributed', 'zarr', 'torch'};"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_loader_imports_no_raster_or_geo_stack(reference):
    """open_dataset, ds[i], read_views and the tables load neither GDAL nor geopandas."""
    code = (
        "import sys, spectralearth_build as seb;"
        f"ds = seb.open_dataset({str(reference)!r});"
        "ds[0]; ds.read_views(0, [0, 0]); ds.views; ds.table; ds.band_mean; ds.wavelengths;"
        "import pickle; pickle.loads(pickle.dumps(ds))[0];"
        "bad = {'rasterio', 'osgeo', 'geopandas', 'shapely', 'pyproj', 'fiona', 'torch'};"
        "print(sorted({m.split('.')[0] for m in sys.modules} & bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr
    ds = open_dataset(reference)
    assert ds.index.crs.to_epsg() == 4326  # the GeoDataFrame, on demand
    assert list(ds.index["patch_id"]) == list(ds.table["patch_id"])


def test_unknown_compressor_is_a_config_error():
    with pytest.raises(ConfigError, match="compressor"):
        BuildConfig().replace(extract={"compressor": "lz77"}).validate()
    with pytest.raises(ConfigError, match="resampling"):
        BuildConfig().replace(extract={"resampling": "magic"}).validate()


def test_resuming_a_build_of_another_format_version_is_a_clear_error(tmp_path):
    out = tmp_path / "out"
    manifest = st.build_manifest(BuildConfig(), tmp_path)
    st.check_or_write_manifest(out, {**manifest, "format_version": 1}, resume=False)
    with pytest.raises(InputError, match="format version"):
        st.check_or_write_manifest(out, manifest, resume=True)
    assert st.check_or_write_manifest(out, {**manifest, "format_version": 1}, resume=True)
