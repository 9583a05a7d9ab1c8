"""``spectralearth-build validate`` on a real build, clean and tampered with."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import zarr
from click.testing import CliRunner
from robustkit import copy_tree, good_archive, reference_build

from spectralearth_build import open_dataset
from spectralearth_build.cli import main
from spectralearth_build.validate import EXIT_MISMATCH, validate_dataset


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    return good_archive(tmp_path_factory)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return reference_build(tmp_path_factory)


def validate_cli(*args: str):  # noqa: ANN201
    return CliRunner().invoke(main, ["validate", *args])


def test_a_clean_build_is_valid_down_to_the_source_pixels(built, tiles):
    report = validate_dataset(built, tiles, sample=10**6)
    assert report.ok, [str(m) for m in report.mismatches]
    ds = open_dataset(built)
    assert report.views_compared == len(ds.views) > 0
    assert ds.views["resampled"].any()  # views from the other UTM zone were compared too
    assert report.shards_read == -(-ds.images.shape[0] // ds.images.shards[0])


def test_cli_runs_on_a_local_dask_cluster(built, tiles, tmp_path):
    out_json = tmp_path / "verdict.json"
    res = validate_cli(
        str(built), "--tiles", str(tiles), "--sample", "12", "--seed", "3", "--workers", "1",
        "--json", str(out_json), "-q",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "valid" in res.output and "12 views compared" in res.output
    assert '"ok": true' in out_json.read_text()


def test_the_sample_is_seeded():
    from spectralearth_build.validate import sample_views

    a, b, c = sample_views(100, 10, 1), sample_views(100, 10, 1), sample_views(100, 10, 2)
    assert list(a) == list(b) != list(c) and len(set(a)) == 10
    assert list(sample_views(5, 10, 1)) == [0, 1, 2, 3, 4]


def _overwrite_chunk(out: Path) -> None:
    ds = open_dataset(out)
    arr = zarr.open_array(store=str(out / "data.zarr" / "images"), mode="r+")
    slot = int(ds.index["slot"].iloc[len(ds) // 2])
    data = np.asarray(arr[slot])
    data[0, 3] = np.where(data[0, 3] > 0, data[0, 3] - 1, data[0, 3] + 1)  # one band, off by 1
    arr[slot] = data


def _remove_index_row(out: Path) -> None:
    index = gpd.read_parquet(out / "index.parquet")
    index.drop(index=len(index) // 2).reset_index(drop=True).to_parquet(out / "index.parquet")


def _rename_product(out: Path) -> None:
    views = pd.read_parquet(out / "views.parquet")
    other = views["product"].iloc[-1]
    row = int(np.flatnonzero(views["product"].to_numpy() != other)[0])
    views.loc[row, "product"] = other
    views.to_parquet(out / "views.parquet", index=False)


def _change_statistic(out: Path) -> None:
    group = zarr.open_group(store=str(out / "data.zarr"), mode="r+")
    mean = list(group.attrs["band_mean"])
    mean[5] += 0.25
    group.attrs["band_mean"] = mean


def _delete_shard(out: Path) -> None:
    ds = open_dataset(out)
    arr = ds.images
    slot = int(ds.index["slot"].iloc[0])
    coords = (slot // arr.shards[0], *([0] * (arr.ndim - 1)))
    shard_file = out / "data.zarr" / "images" / arr.metadata.encode_chunk_key(coords)
    assert shard_file.is_file()
    shard_file.unlink()


TAMPER = {
    "chunk overwritten": (_overwrite_chunk, "[statistics] band_mean[3]"),
    "index row removed": (_remove_index_row, "data stored without an index row"),
    "product renamed": (_rename_product, "not a planned view"),
    "statistic changed": (_change_statistic, "[statistics] band_mean[5]"),
    "shard file deleted": (_delete_shard, "no data stored (chunk or shard missing)"),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_validate_catches_a_tampered_store(case, built, tiles, tmp_path):
    out = copy_tree(built, tmp_path / "out")
    tamper, expect = TAMPER[case]
    tamper(out)
    res = validate_cli(str(out), "--workers", "0", "-q")
    assert res.exit_code == EXIT_MISMATCH, res.output
    assert "INVALID" in res.output and expect in res.output, res.output
    if case in ("chunk overwritten", "product renamed"):
        # re-reading the sources names the damaged view itself
        report = validate_dataset(out, tiles, sample=10**6)
        assert any(m.check == "sources" for m in report.mismatches), report.mismatches


def test_an_unfinished_or_missing_dataset_is_a_one_line_error(built, tmp_path):
    out = copy_tree(built, tmp_path / "out")
    (out / "_COMPLETE").unlink()
    for target in (out, tmp_path / "nope"):
        res = validate_cli(str(target), "--workers", "0")
        assert res.exit_code == 1 and res.output.startswith("Error: "), res.output
        assert len(res.output.strip().splitlines()) == 1
