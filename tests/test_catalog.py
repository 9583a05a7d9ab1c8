"""Tile catalog: statuses and reasons, GeoParquet output, the scan command."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pyarrow.parquet as pq
import pytest
import shapely
from click.testing import CliRunner
from productkit import STEM, write_product
from shapely.geometry import box

from spectralearth_build.catalog import (
    read_catalog,
    scan,
    source_from_json,
    summarize,
    tile_records,
    write_catalog,
)
from spectralearth_build.cli import main
from spectralearth_build.config import BuildConfig
from spectralearth_build.enmap.discovery import discover_products

OLD = STEM.replace("V010111_20220613T102034Z", "V010100_20220601T000000Z")
NIGHT = STEM.replace("DT0000001049", "DT0000002000")
CLOUDY = STEM.replace("DT0000001049", "DT0000003000")
WRONG = STEM.replace("DT0000001049", "DT0000004000")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    write_product(root / STEM, STEM)
    write_product(root / OLD, OLD, revision="01.01.00")
    write_product(root / NIGHT, NIGHT, sun_elevation=-12.0, datatake_id=2000)
    write_product(root / CLOUDY, CLOUDY, cloud_cover=85.0, datatake_id=3000)
    write_product(root / WRONG, WRONG, bands=200, datatake_id=4000)
    (
        root / "ENMAP01-____L2A-DT0000005000_20220612T105735Z_001_V010111_20220613T102034Z.ZIP"
    ).write_bytes(b"")
    return root


def _by_id(catalog):
    return {r.product_id: r for r in catalog.itertuples(index=False)}


def test_statuses_and_reasons(archive: Path):
    catalog = scan(archive)
    rows = _by_id(catalog)
    assert len(catalog) == 6
    assert rows[STEM].status == "ok" and rows[STEM].reason == ""
    assert rows[OLD].status == "duplicate" and rows[OLD].reason == "older processor version"
    assert STEM in rows[OLD].detail
    assert rows[NIGHT].status == "night" and "-12.0" in rows[NIGHT].detail
    assert rows[CLOUDY].status == "cloudy" and "86.0%" in rows[CLOUDY].detail  # cloud + cirrus
    assert rows[WRONG].status == "invalid" and rows[WRONG].reason == "wrong band count"
    zipped = rows["ENMAP01-____L2A-DT0000005000_20220612T105735Z_001_V010111_20220613T102034Z"]
    assert zipped.status == "invalid" and zipped.reason == "unreadable archive"
    assert zipped.location.endswith(".ZIP")
    s = summarize(catalog)
    assert s["by_status"] == {"ok": 1, "invalid": 2, "duplicate": 1, "night": 1, "cloudy": 1}


def test_cloud_limit_is_configurable(archive: Path):
    config = BuildConfig().replace(scan={"max_cloud_cover": 90.0})
    rows = _by_id(scan(archive, config))
    assert rows[CLOUDY].status == "ok"


def test_catalog_is_valid_geoparquet(archive: Path, tmp_path: Path):
    catalog = scan(archive)
    out = tmp_path / "catalog.parquet"
    write_catalog(catalog, out, BuildConfig())
    geo = json.loads(pq.read_schema(out).metadata[b"geo"])
    assert geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry"]["encoding"] == "WKB"
    assert "crs" in geo["columns"]["geometry"]  # PROJJSON of EPSG:4326
    ours = json.loads(pq.read_schema(out).metadata[b"spectralearth_build"])
    assert ours["kind"] == "catalog" and ours["config"]["bands"]["expected_count"] == 224
    back = gpd.read_parquet(out)
    assert back.crs.to_epsg() == 4326
    assert back["status"].tolist() == catalog["status"].tolist()
    ok = back[back["status"] == "ok"].iloc[0]
    # footprint in lon/lat near the product location, and natively inside the raster bounds
    assert 10 < ok.geometry.centroid.x < 13 and 46 < ok.geometry.centroid.y < 48
    native = shapely.from_wkb(ok["footprint_native"])
    t = ok["transform"]
    bounds = box(t[2], t[5] + t[4] * ok["height"], t[2] + t[0] * ok["width"], t[5])
    assert bounds.contains(native)
    assert 0.2 < ok["valid_fraction"] < 0.9
    # the source column re-opens the product
    src = source_from_json(ok["source"])
    assert src == discover_products(archive / STEM)[0][0]
    records = tile_records(read_catalog(out))
    assert [r.tile_id for r in records] == [STEM]
    assert records[0].grid.crs == "EPSG:32632"
    assert records[0].footprint.equals(native)


def test_scan_command(archive: Path, tmp_path: Path):
    out = tmp_path / "c.parquet"
    runner = CliRunner()
    res = runner.invoke(main, ["scan", "--tiles", str(archive), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert "6 products: 1 ok, 2 invalid, 1 duplicate, 1 night, 1 cloudy" in res.output
    assert "invalid: wrong band count" in res.output
    assert out.exists()
    strict = runner.invoke(main, ["scan", "--tiles", str(archive), "--out", str(out), "--strict"])
    assert strict.exit_code == 1


def test_scan_command_parallel_matches_serial(archive: Path, tmp_path: Path):
    runner = CliRunner()
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert runner.invoke(main, ["scan", "--tiles", str(archive), "--out", str(a)]).exit_code == 0
    res = runner.invoke(main, ["scan", "--tiles", str(archive), "--out", str(b), "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert gpd.read_parquet(a).equals(gpd.read_parquet(b))


def test_scan_user_errors_are_one_line(tmp_path: Path):
    runner = CliRunner()
    res = runner.invoke(
        main, ["scan", "--tiles", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]
    )
    assert res.exit_code == 1
    assert "Error: --tiles" in res.output and "Traceback" not in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("scan:\n  max_clod_cover: 3\n")
    res = runner.invoke(
        main, ["scan", "--tiles", str(tmp_path), "--out", str(tmp_path / "c"), "--config", str(bad)]
    )
    assert res.exit_code == 1
    assert "unknown key(s) in 'scan'" in res.output and "max_clod_cover" in res.output
