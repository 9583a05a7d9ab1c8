"""The Zarr layout: shard sizing, codecs, shard ownership, completion and the loader's errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

from spectralearth_build import open_dataset
from spectralearth_build.config import BuildConfig, ExtractConfig
from spectralearth_build.errors import IncompleteDatasetError, InputError
from spectralearth_build.extract import store as st


def test_auto_shard_size_is_a_power_of_two_within_the_budget():
    cfg = ExtractConfig(shard_max_mib=256)
    chunk = 202 * 128 * 128 * 2
    for t_max in (1, 2, 3, 7, 16, 40):
        k = st.locations_per_shard(cfg, t_max, 202, 128)
        assert k >= 1 and k & (k - 1) == 0
        assert k == 1 or k * t_max * chunk <= 256 * 2**20
        assert 2 * k * t_max * chunk > 256 * 2**20
    assert st.locations_per_shard(ExtractConfig(locations_per_shard=5), 3, 202, 128) == 5


@pytest.mark.parametrize("name", ["zstd", "blosc-zstd", "gzip", "none"])
def test_each_codec_round_trips_int16(tmp_path, name):
    cfg = ExtractConfig(compressor=name, compression_level=3)
    arr = st.create_images(tmp_path, 4, 2, 5, 8, 2, cfg)
    rng = np.random.default_rng(0)
    block = rng.integers(-32768, 32767, (4, 2, 5, 8, 8)).astype(np.int16)
    st.write_block(arr, 0, block)
    np.testing.assert_array_equal(st.open_images(tmp_path)[:], block)


def test_create_is_idempotent_and_rejects_another_layout(tmp_path):
    cfg = ExtractConfig()
    a = st.create_images(tmp_path, 8, 3, 4, 8, 4, cfg)
    st.write_block(a, 4, np.ones((4, 3, 4, 8, 8), np.int16))
    b = st.create_images(tmp_path, 8, 3, 4, 8, 4, cfg)  # resume: same layout, data kept
    assert (b[4:] == 1).all() and (b[:4] == st.NODATA).all()
    with pytest.raises(ValueError, match="does not match"):
        st.create_images(tmp_path, 8, 4, 4, 8, 4, cfg)


def test_writes_are_shard_aligned_and_one_file_per_shard(tmp_path):
    arr = st.create_images(tmp_path, 12, 2, 3, 4, 4, ExtractConfig())
    with pytest.raises(ValueError, match="shard-aligned"):
        st.write_block(arr, 2, np.zeros((4, 2, 3, 4, 4), np.int16))
    with pytest.raises(ValueError, match="shard-aligned"):
        st.write_block(arr, 0, np.zeros((3, 2, 3, 4, 4), np.int16))
    block = np.full((4, 2, 3, 4, 4), st.NODATA, np.int16)
    block[1, 0] = 7  # one location, one timestamp: the rest of the shard is nodata
    st.write_block(arr, 8, block)
    files = sorted(
        p.relative_to(tmp_path / st.STORE_NAME / st.ARRAY_NAME).as_posix()
        for p in (tmp_path / st.STORE_NAME / st.ARRAY_NAME).rglob("*")
        if p.is_file() and p.name != "zarr.json"
    )
    assert files == ["c/2/0/0/0/0"]  # only shard 2, as one file
    st.write_block(arr, 8, np.full((4, 2, 3, 4, 4), st.NODATA, np.int16))
    meta = json.loads((tmp_path / st.STORE_NAME / st.ARRAY_NAME / "zarr.json").read_text())
    assert meta["fill_value"] == st.NODATA
    assert meta["dimension_names"] == list(st.DIMENSIONS)
    assert (arr[8:] == st.NODATA).all()


def test_one_location_is_one_chunk(tmp_path):
    arr = st.create_images(tmp_path, 4, 3, 5, 8, 2, ExtractConfig())
    assert arr.chunks == (1, 3, 5, 8, 8)
    assert arr.shards == (2, 3, 5, 8, 8)
    g = zarr.open_group(str(tmp_path / st.STORE_NAME), mode="r")
    assert g[st.ARRAY_NAME].dtype == np.int16


def test_incomplete_dataset_is_a_clear_error(tmp_path):
    st.create_images(tmp_path, 4, 1, 2, 4, 2, ExtractConfig())
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


def test_unknown_compressor_is_a_config_error():
    from spectralearth_build.build import validate_config
    from spectralearth_build.config import ConfigError

    with pytest.raises(ConfigError, match="compressor"):
        validate_config(BuildConfig().replace(extract={"compressor": "lz77"}))
    with pytest.raises(ConfigError, match="resampling"):
        validate_config(BuildConfig().replace(extract={"resampling": "magic"}))
