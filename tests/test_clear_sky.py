"""Clear-sky footprints and planning on them, checked against the extraction checks themselves.

The footprint tests enumerate every pixel-aligned patch inside a clear-sky footprint and run the
extraction's own quality checks (:mod:`spectralearth_build.extract.pixels`) on the raw layers; the
synth tests read the quality layers of every planned view from the GeoTIFFs.  Neither uses the
planner's code to decide what is right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from plankit import check_plan, make_tile

from spectralearth_build.catalog import read_catalog, scan, tile_records, write_catalog
from spectralearth_build.cli import main
from spectralearth_build.config import BuildConfig, ExtractConfig, PlanConfig
from spectralearth_build.enmap.footprint import clear_footprint, snow_blocked
from spectralearth_build.geometry import plan_patches
from spectralearth_build.plan import read_plan, write_plan
from spectralearth_build.records import TileRecord

RES = 30.0
TRANSFORM = (RES, 0.0, 500_015.0, 0.0, -RES, 5_000_015.0)


def _blobs(rng: np.random.Generator, shape: tuple[int, int], n: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, dtype=bool)
    for _ in range(n):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        rad = rng.uniform(0.3, 1.0) * r
        out |= (yy - cy) ** 2 + (xx - cx) ** 2 < rad**2
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_patch_inside_the_clear_footprint_passes_extraction(seed: int) -> None:
    from spectralearth_build.extract import pixels

    rng = np.random.default_rng(seed)
    h, w, p = 96, 104, 16
    cfg = ExtractConfig()
    valid = np.zeros((h, w), dtype=bool)
    valid[4:-6, 3:-5] = True
    cloud = _blobs(rng, (h, w), 4, 7)
    snow = _blobs(rng, (h, w), 8, 5) & ~cloud
    clear = valid & ~cloud & ~snow_blocked(snow, p, cfg.max_snow_fraction)
    fp = clear_footprint(clear, TRANSFORM, p, 1.5)
    assert fp.is_valid and fp.geom_type == "MultiPolygon"
    # never larger than the clear pixels: no flagged or invalid pixel is touched inside
    rows, cols = np.nonzero(~(valid & ~cloud))
    x0, y0 = TRANSFORM[2] + cols * RES, TRANSFORM[5] - rows * RES
    bad = shapely.box(x0, y0 - RES, x0 + RES, y0)
    assert float(shapely.area(shapely.intersection(bad, fp)).max(initial=0.0)) < 1e-6
    inside = 0
    for r in range(h - p + 1):
        for c in range(w - p + 1):
            x, y = TRANSFORM[2] + c * RES, TRANSFORM[5] - r * RES
            if not fp.covers(shapely.box(x, y - p * RES, x + p * RES, y)):
                continue
            inside += 1
            win = np.s_[r : r + p, c : c + p]
            assert valid[win].all()
            cl, sn = pixels.flag_fractions({"CLOUD": cloud[win], "SNOW": snow[win]}, (p, p))
            assert pixels.quality_reason(cl, sn, cfg) is None, (r, c, cl, sn)
    assert inside > 0
    # the opening keeps every pixel-aligned clear patch: each one is inside the footprint
    # (up to the simplification margin, so test a patch shrunk by it)
    for r in range(0, h - p + 1, 3):
        for c in range(0, w - p + 1, 3):
            if clear[r : r + p, c : c + p].all():
                x, y = TRANSFORM[2] + c * RES, TRANSFORM[5] - r * RES
                core = shapely.box(x + 3 * RES, y - (p - 3) * RES, x + (p - 3) * RES, y - 3 * RES)
                assert fp.covers(core), (r, c)
    # a snowy patch that extraction would drop is not inside; snow below the limit is allowed
    assert snow[clear].any() or not snow.any()


def test_snow_rule_is_the_extraction_comparison() -> None:
    snow = np.zeros((40, 40), dtype=bool)
    snow[10:12, 10:14] = True  # 8 px = 3.1% of a 16 x 16 patch
    assert not snow_blocked(snow, 16, 0.10).any()
    assert snow_blocked(snow, 16, 0.03)[18, 18]  # window rows 10..25 holds all of it
    assert not snow_blocked(snow, 16, 0.03)[30, 30]  # window rows 22..37: none


def test_record_round_trip_keeps_the_clear_footprint() -> None:
    t = make_tile(1, 0, (500_000, 5_000_000), side_px=100)
    hole = shapely.Point(500_000, 5_000_000).buffer(300)
    t2 = TileRecord(**{**t.__dict__, "clear": t.footprint.difference(hole)})
    assert TileRecord.from_dict(t2.to_dict()) == t2
    assert TileRecord.from_dict(t.to_dict()).clear is None


CFG = PlanConfig(patch_px=32, candidate_stride_px=8)


def test_planning_uses_clear_sky_and_leaves_out_tiles_without_a_clear_patch() -> None:
    tiles = [
        make_tile(10 + k, 7 * k, (500_000 + 300 * k, 5_000_000), side_px=160) for k in range(4)
    ]
    holes = shapely.Point(500_300, 5_000_300).buffer(900)
    tiles[0] = TileRecord(**{**tiles[0].__dict__, "clear": tiles[0].footprint.difference(holes)})
    tiles[1] = TileRecord(
        **{**tiles[1].__dict__, "clear": shapely.box(500_000, 5e6, 500_500, 5e6 + 500)}
    )
    result = plan_patches(tiles, CFG)
    assert result.summary["tiles_without_clear_patch"] == 1
    assert tiles[1].tile_id not in {v.tile_id for p in result.patches for v in p.views}
    check_plan(tiles, result.patches, CFG)
    assert any(p.n_views >= 3 for p in result.patches)


def test_touching_components_are_planned_together_without_overlap() -> None:
    # consecutive tiles of one datatake overlap by 14 rows: never a pair, so two components
    a = make_tile(5, 0, (500_000, 5_000_000), side_px=120, angle_deg=0, tile=1)
    b = make_tile(
        5, 4.1 / 86400, (500_000, 5_000_000 - 106 * RES), side_px=120, angle_deg=0, tile=2
    )
    c = make_tile(6, 3, (500_200, 5_000_100), side_px=120, angle_deg=8)
    result = plan_patches([a, b], CFG)
    assert result.summary["components"] == 2 and result.summary["planning_groups"] == 1
    assert {v.tile_id for p in result.patches for v in p.views} == {a.tile_id, b.tile_id}
    check_plan([a, b], result.patches, CFG)
    # a revisit joins both: one component, and still no overlap
    result = plan_patches([a, b, c], CFG)
    assert result.summary["components"] == 1 and result.summary["planning_groups"] == 1
    check_plan([a, b, c], result.patches, CFG)


# -- synth archives: clouds, snow, a UTM zone crossing ------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildConfig, Path]:
    from spectralearth_build.synth import make_archive

    root = tmp_path_factory.mktemp("clear_sky")
    make_archive(root / "archive", preset="tiny")
    config = BuildConfig().replace(plan={"patch_px": 32})
    catalog = scan(root / "archive", config)
    write_catalog(catalog, root / "catalog.parquet", config)
    return root / "archive", config, root / "catalog.parquet"


def test_planned_views_pass_the_cloud_and_snow_checks(synth) -> None:
    from spectralearth_build.catalog import source_from_json
    from spectralearth_build.enmap.product import EnmapProduct
    from spectralearth_build.extract import pixels

    _, config, catalog_path = synth
    catalog = read_catalog(catalog_path)
    ok = catalog[catalog["status"] == "ok"]
    assert (ok["clear_fraction"] < 0.999).sum() >= 3, "the archive must have clouds or snow"
    assert (ok["snow_cover"] > 0).any() and ok["crs"].nunique() >= 2
    tiles = tile_records(catalog)
    assert all(t.clear is not None for t in tiles)
    result = plan_patches(tiles, config.plan)
    patches = result.patches
    assert sum(p.n_views >= 2 for p in patches) >= 3
    check_plan(tiles, patches, config.plan)
    products = {r.product_id: EnmapProduct(source_from_json(r.source)) for r in ok.itertuples()}
    grids = {t.tile_id: t.grid for t in tiles}
    checked = 0
    for p in patches:
        for v in p.views:
            product = products[v.tile_id]
            layers = {n: product.read_layer(n, v.window) for n in ("CLOUD", "CLOUDSHADOW", "HAZE")}
            layers["SNOW"] = product.read_layer("SNOW", v.window)
            classes = product.read_layer("CLASSES", v.window)
            if v.resampled:
                src = grids[v.tile_id].crop(v.window)
                layers = {
                    n: pixels.reproject_to(a[None], src, p.grid, "nearest", nodata=None)[0]
                    for n, a in layers.items()
                }
            else:
                assert (classes != 3).all()
            cloud, snow = pixels.flag_fractions(layers, p.grid.shape_yx)
            assert pixels.quality_reason(cloud, snow, config.extract) is None, (
                p.patch_id,
                v.tile_id,
                cloud,
                snow,
            )
            checked += 1
    assert checked == result.summary["views"]


def test_plan_is_the_same_bytes_in_process_and_on_1_or_2_workers(synth, tmp_path: Path) -> None:
    _, config, catalog_path = synth
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("plan:\n  patch_px: 32\n")
    result = plan_patches(tile_records(read_catalog(catalog_path)), config.plan)
    write_plan(result.patches, tmp_path / "here.parquet", result.file_metadata(config))
    expected = (tmp_path / "here.parquet").read_bytes()
    for workers in (0, 1, 2):
        out = tmp_path / f"plan{workers}.parquet"
        args = ["plan", "--catalog", str(catalog_path), "--out", str(out), "--config", str(cfg)]
        res = CliRunner().invoke(main, [*args, "--workers", str(workers)])
        assert res.exit_code == 0, res.output
        assert "planning groups" in res.output
        assert out.read_bytes() == expected, f"--workers {workers}"
    patches, meta = read_plan(tmp_path / "plan2.parquet")
    assert patches == result.patches and meta["summary"]["patches"] == len(patches)
