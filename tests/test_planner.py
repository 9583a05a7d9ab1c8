"""The planner end to end: determinism, purity, the plan file and the ``plan`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import shapely
from click.testing import CliRunner
from plankit import check_plan, scenario_tiles

from spectralearth_build.catalog import footprint_to_lonlat, rows_to_catalog, write_catalog
from spectralearth_build.cli import main
from spectralearth_build.config import BuildConfig, PlanConfig
from spectralearth_build.geometry import plan_patches
from spectralearth_build.plan import read_plan, write_plan

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
CFG = PlanConfig(patch_px=32, candidate_stride_px=8)

WRITE_PLAN = """
import sys
sys.path.insert(0, {tests!r})
from plankit import scenario_tiles
from spectralearth_build.config import BuildConfig, PlanConfig
from spectralearth_build.geometry import plan_patches
config = BuildConfig().replace(plan=PlanConfig(patch_px=32, candidate_stride_px=8))
from spectralearth_build.plan import write_plan
result = plan_patches(scenario_tiles(), config.plan)
write_plan(result.patches, {out!r}, result.file_metadata(config))
"""


def _write(result, path: Path, config: BuildConfig) -> None:
    write_plan(result.patches, path, result.file_metadata(config))


def _write_plan_in_subprocess(out: Path, seed: str) -> None:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    code = WRITE_PLAN.format(tests=str(TESTS), out=str(out))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


def test_plan_is_byte_identical_across_runs_and_processes(tmp_path: Path) -> None:
    config = BuildConfig().replace(plan=CFG)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    _write(plan_patches(scenario_tiles(), CFG), a, config)
    # the input order is irrelevant
    _write(plan_patches(list(reversed(scenario_tiles())), CFG), b, config)
    assert a.read_bytes() == b.read_bytes()
    c, d = tmp_path / "c.parquet", tmp_path / "d.parquet"
    _write_plan_in_subprocess(c, "1")
    _write_plan_in_subprocess(d, "12345")
    assert c.read_bytes() == a.read_bytes()
    assert d.read_bytes() == a.read_bytes()


def test_plan_file_round_trip(tmp_path: Path) -> None:
    tiles = scenario_tiles()
    result = plan_patches(tiles, CFG)
    config = BuildConfig().replace(plan=CFG)
    _write(result, tmp_path / "plan.parquet", config)
    patches, meta = read_plan(tmp_path / "plan.parquet")
    assert patches == result.patches
    assert meta["config"]["plan"]["patch_px"] == 32
    assert meta["summary"]["patches"] == len(patches)
    assert "seconds" not in meta["summary"]  # timings would break reproducible bytes
    check_plan(tiles, patches, CFG)
    s = result.summary
    assert s["tiles"] == len(tiles) and s["edges"] == result.graph.number_of_edges()
    assert sum(s["patches_by_timestamps"].values()) == len(patches)
    assert set(s["seconds"]) >= {"graph", "tuples", "placement", "views", "windows"}
    # patch components are the overlap graph's components
    comps = {p.component for p in patches}
    assert len(comps) <= s["components"]


def test_geometry_package_imports_no_io_stack() -> None:
    code = (
        "import sys, spectralearth_build.geometry\n"
        "io = ('rasterio', 'dask', 'distributed', 'zarr', 'torch')\n"
        "bad = [m for m in io if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""


# -- the plan command ----------------------------------------------------------------------------
def _catalog(tmp_path: Path, tiles) -> Path:
    rows = []
    for t in tiles:
        rows.append(
            {
                "product_id": t.tile_id,
                "location": f"/archive/{t.tile_id}",
                "datatake": t.datatake,
                "tile": t.tile,
                "start_time": t.start_time,
                "crs": t.crs,
                "transform": list(t.grid.transform),
                "height": t.grid.height,
                "width": t.grid.width,
                "footprint_native": shapely.to_wkb(t.footprint),
                "footprint_area_m2": t.footprint.area,
                "geometry": footprint_to_lonlat(t.footprint, t.crs),
                "status": "ok",
                "reason": "",
                "detail": "",
            }
        )
    rows[0] = dict(rows[0], status="cloudy", reason="cloud cover above limit")
    path = tmp_path / "catalog.parquet"
    write_catalog(rows_to_catalog(rows), path, BuildConfig())
    return path


def test_plan_command(tmp_path: Path) -> None:
    tiles = sorted(scenario_tiles(), key=lambda t: t.tile_id)
    catalog = _catalog(tmp_path, tiles)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("plan:\n  patch_px: 32\n  candidate_stride_px: 8\n")
    out = tmp_path / "plan.parquet"
    res = CliRunner().invoke(
        main, ["plan", "--catalog", str(catalog), "--out", str(out), "--config", str(cfg)]
    )
    assert res.exit_code == 0, res.output
    assert "patches by number of timestamps" in res.output
    assert "max degree" in res.output and "seconds:" in res.output
    patches, meta = read_plan(out)
    usable = [t for t in tiles if t.tile_id != tiles[0].tile_id]  # the cloudy one is left out
    assert patches == plan_patches(usable, CFG).patches
    assert tiles[0].tile_id not in {v.tile_id for p in patches for v in p.views}
    check_plan(usable, patches, CFG)


@pytest.mark.parametrize("kind", ["missing", "not_parquet", "folder"])
def test_plan_command_bad_catalog(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "catalog.parquet"
    if kind == "not_parquet":
        path.write_text("this is not a catalog")
    elif kind == "folder":
        path.mkdir()
    res = CliRunner().invoke(main, ["plan", "--catalog", str(path), "--out", str(tmp_path / "p")])
    assert res.exit_code != 0
    assert "Error:" in res.output and str(path) in res.output
    assert "Traceback" not in res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit)


def test_plan_on_synth_archive(tiny_archive: Path) -> None:
    from spectralearth_build.catalog import scan, tile_records

    config = BuildConfig().replace(plan={"patch_px": 32})
    tiles = tile_records(scan(tiny_archive, config))
    assert len(tiles) >= 4
    result = plan_patches(tiles, config.plan)
    patches = result.patches
    assert result.summary["edges"] > 0
    assert any(p.n_views >= 2 for p in patches), result.summary
    check_plan(tiles, patches, config.plan)
