"""Extraction against an in-memory fake reader and a hand-made plan."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from spectralearth_build import open_dataset
from spectralearth_build.build import extract_dataset
from spectralearth_build.config import BuildConfig
from spectralearth_build.extract import pixels
from spectralearth_build.extract.reader import NODATA, MemoryReader, MemoryTile, TileInfo
from spectralearth_build.extract.units import make_units
from spectralearth_build.grid import PixelGrid, Window
from spectralearth_build.plan import PatchView, PlannedPatch

P = 16  # patch side
H = W = 80  # tile side
LAYERS = ("CLOUD", "CLOUDSHADOW", "HAZE", "SNOW")
UTC = dt.timezone.utc


def make_tile(
    i: int,
    rng: np.random.Generator,
    crs: str = "EPSG:32633",
    x0: float = 500_010.0,
    y0: float = 5_000_010.0,
) -> MemoryTile:
    grid = PixelGrid(crs, (30.0, 0.0, x0, 0.0, -30.0, y0), (H, W))
    image = rng.integers(-200, 10_000, (224, H, W)).astype(np.int16)
    layers = {n: np.zeros((H, W), np.uint8) for n in LAYERS}
    return MemoryTile(TileInfo(f"T{i}", 1000 + i, 1, "010203"), grid, image, layers)


def time(i: int) -> dt.datetime:
    return dt.datetime(2023, 3, 1 + 5 * i, 10, 0, tzinfo=UTC)


@pytest.fixture
def scene() -> tuple[dict[str, MemoryTile], list[PlannedPatch]]:
    """Three same-zone tiles on one lattice (T1 shifted by 8 px), a grid of 16 patches."""
    rng = np.random.default_rng(42)
    tiles = {
        "T0": make_tile(0, rng),
        "T1": make_tile(1, rng, x0=500_010.0 + 8 * 30, y0=5_000_010.0 - 8 * 30),
        "T2": make_tile(2, rng),
    }
    base = tiles["T0"].grid
    patches = []
    pid = 0
    for r in range(8, 72, P):
        for c in range(8, 72, P):
            pgrid = base.crop(Window(r, c, P, P))
            views = []
            for i in (0, 1, 2):
                if i == 1 and pid % 3 == 0:
                    continue
                w = pgrid.window_in(tiles[f"T{i}"].grid)
                views.append(PatchView(f"T{i}", time(i), w))
            patches.append(PlannedPatch(pid, pgrid, tuple(views), component=pid // 8))
            pid += 1
    return tiles, patches


def covering_window(src: PixelGrid, dst: PixelGrid, margin: int = 2) -> Window:
    """Window of ``src`` covering ``dst``'s footprint, plus ``margin`` pixels."""
    from pyproj import Transformer

    t = Transformer.from_crs(dst.crs, src.crs, always_xy=True)
    minx, miny, maxx, maxy = dst.bounds
    xs, ys = t.transform([minx, maxx, minx, maxx], [miny, miny, maxy, maxy])
    res = src.res
    c0 = math.floor((min(xs) - src.transform[2]) / res) - margin
    r0 = math.floor((src.transform[5] - max(ys)) / res) - margin
    c1 = math.ceil((max(xs) - src.transform[2]) / res) + margin
    r1 = math.ceil((src.transform[5] - min(ys)) / res) + margin
    return Window(r0, c0, r1 - r0, c1 - c0)


def grid_in_other_zone(src: PixelGrid, row: int, col: int, crs: str) -> PixelGrid:
    """A P x P grid in ``crs`` whose corner lies near pixel (row, col) of ``src``."""
    from pyproj import Transformer

    t = Transformer.from_crs(src.crs, crs, always_xy=True)
    x, y = t.transform(src.transform[2] + col * 30, src.transform[5] - row * 30)
    return PixelGrid(crs, (30.0, 0.0, round(x / 30) * 30, 0.0, -30.0, round(y / 30) * 30), (P, P))


def config(**extract) -> BuildConfig:
    return BuildConfig().replace(plan={"patch_px": P}, extract=extract)


def expected(tiles: dict[str, MemoryTile], view: PatchView) -> np.ndarray:
    kept = BuildConfig().bands.kept_indices
    rows, cols = view.window.to_slices()
    return tiles[view.tile_id].image[kept][:, rows, cols]


def test_pixels_equal_sources_and_reads_once_per_unit(tmp_path, scene):
    tiles, patches = scene
    reader = MemoryReader(tiles)
    cfg = config(max_unit_patches=6, locations_per_shard=4)
    report = extract_dataset(tmp_path / "out", patches, reader, cfg)
    ds = open_dataset(tmp_path / "out")
    assert len(ds) == len(patches) == report.patches
    assert report.views == sum(p.n_views for p in patches)
    for i in range(len(ds)):
        item = ds[i]
        patch = patches[item["patch_id"]]
        assert item["image"].dtype == np.int16
        assert item["image"].shape == (patch.n_views, 202, P, P)
        assert item["products"] == list(patch.tile_ids)
        assert item["crs"] == "EPSG:32633"
        assert item["transform"] == patch.grid.transform
        assert list(item["times"]) == [
            np.datetime64(v.start_time.replace(tzinfo=None), "s") for v in patch.views
        ]
        for t, view in enumerate(patch.views):
            np.testing.assert_array_equal(item["image"][t], expected(tiles, view))
    units = make_units(patches, 4, 6, 24)
    for tile_id in tiles:
        n_units = sum(tile_id in u.tile_ids for u in units)
        assert reader.reads[(tile_id, "IMAGE")] == n_units
        assert reader.reads[(tile_id, "CLOUD")] == n_units
    assert ds.views["resampled"].sum() == 0
    np.testing.assert_array_equal(ds.band_indices, BuildConfig().bands.kept_indices)


def test_band_statistics_match_numpy(tmp_path, scene):
    tiles, patches = scene
    extract_dataset(tmp_path / "out", patches, MemoryReader(tiles), config(max_unit_patches=5))
    ds = open_dataset(tmp_path / "out")
    stack = np.concatenate([ds[i]["image"] for i in range(len(ds))]).astype(np.float64)
    np.testing.assert_allclose(ds.band_mean, stack.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(ds.band_std, stack.std(axis=(0, 2, 3)), rtol=1e-9)


def test_checks_drop_views_and_patches_by_reason(tmp_path, scene):
    tiles, patches = scene
    # patch 0: T0 view gets one nodata pixel in a kept band, T2 view 2% cloud -> T1 absent
    # (pid % 3 == 0), so patch 0 loses every view
    p0 = patches[0]
    r, c = p0.views[0].window.row_off, p0.views[0].window.col_off
    tiles["T0"].image[5, r + 3, c + 4] = NODATA
    tiles["T0"].image[130, r + 5, c + 5] = NODATA  # dropped band: must not matter elsewhere
    cloud = tiles["T2"].layers["HAZE"]
    cloud[r : r + 1, c : c + 6] = 1  # 6/256 = 2.3% > 1%
    # patch 1: T1 view 11% snow; its nodata in a dropped band only does not drop it
    p1 = patches[1]
    w1 = p1.views[1].window
    assert p1.views[1].tile_id == "T1"
    tiles["T1"].layers["SNOW"][w1.row_off : w1.row_off + 2, w1.col_off : w1.col_off + 15] = 1
    w1t0 = p1.views[0].window
    tiles["T0"].image[130, w1t0.row_off + 1, w1t0.col_off + 1] = NODATA
    # patch 2: cloud below the limit (2 px of 256 = 0.8%) keeps the view
    w2 = patches[2].views[0].window
    tiles["T0"].layers["CLOUDSHADOW"][w2.row_off, w2.col_off : w2.col_off + 2] = 1

    report = extract_dataset(tmp_path / "out", patches, MemoryReader(tiles), config())
    assert report.dropped_views == {
        pixels.CLOUD_REASON: 1,
        pixels.NODATA_REASON: 1,
        pixels.SNOW_REASON: 1,
    }
    assert report.dropped_patches == 1
    ds = open_dataset(tmp_path / "out")
    assert 0 not in set(ds.index["patch_id"])
    item = ds[int(np.flatnonzero(ds.index["patch_id"] == 1)[0])]
    assert item["products"] == ["T0", "T2"]
    np.testing.assert_array_equal(item["image"][1], expected(tiles, p1.views[2]))
    v2 = ds.views[ds.views["patch_id"] == 2]
    assert v2["cloud_fraction"].iloc[0] == pytest.approx(2 / 256)
    import pandas as pd

    dropped = pd.read_parquet(tmp_path / "out" / "dropped_views.parquet")
    assert sorted(dropped["reason"]) == sorted(report.dropped_views)


def test_view_from_other_zone_is_resampled_like_rasterio(tmp_path):
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    rng = np.random.default_rng(1)
    a = make_tile(0, rng, crs="EPSG:32633", x0=300_000.0, y0=5_000_010.0)
    b = make_tile(1, rng, crs="EPSG:32632", x0=0.0, y0=0.0)  # placed below
    b.grid = grid_in_other_zone(a.grid, -20, -20, "EPSG:32632")
    b.grid = PixelGrid(b.grid.crs, b.grid.transform, (H, W))
    tiles = {"T0": a, "T1": b}
    pgrid = a.grid.crop(Window(32, 32, P, P))
    cover = covering_window(b.grid, pgrid)
    assert b.grid.contains_window(cover)
    patch = PlannedPatch(
        0,
        pgrid,
        (
            PatchView("T0", time(0), Window(32, 32, P, P)),
            PatchView("T1", time(1), cover, resampled=True),
        ),
    )
    report = extract_dataset(tmp_path / "out", [patch], MemoryReader(tiles), config())
    assert report.dropped_views == {}
    kept = BuildConfig().bands.kept_indices
    ref = np.full((202, P, P), NODATA, np.int16)
    reproject(
        b.image[kept],
        ref,
        src_transform=Affine(*b.grid.transform),
        src_crs=b.grid.crs,
        dst_transform=Affine(*pgrid.transform),
        dst_crs=pgrid.crs,
        src_nodata=NODATA,
        dst_nodata=NODATA,
        resampling=Resampling.nearest,
    )
    assert not (ref == NODATA).any()
    ds = open_dataset(tmp_path / "out")
    item = ds[0]
    assert item["products"] == ["T0", "T1"]
    np.testing.assert_array_equal(item["image"][1], ref)
    np.testing.assert_array_equal(item["image"][0], expected(tiles, patch.views[0]))
    assert list(ds.views["resampled"]) == [False, True]
    assert list(ds.views["row_off"]) == [32, cover.row_off]


def test_resampled_view_partly_outside_its_tile_is_dropped_as_nodata(tmp_path):
    rng = np.random.default_rng(2)
    a = make_tile(0, rng, crs="EPSG:32633", x0=300_000.0, y0=5_000_010.0)
    b = make_tile(1, rng, crs="EPSG:32632")
    # T1's raster ends inside the patch: its corner is at the patch centre
    g = grid_in_other_zone(a.grid, 32 + P // 2, 32 + P // 2, "EPSG:32632")
    b.grid = PixelGrid(
        g.crs, (30.0, 0.0, g.transform[2] - W * 30, 0.0, -30.0, g.transform[5] + H * 30), (H, W)
    )
    pgrid = a.grid.crop(Window(32, 32, P, P))
    cover = covering_window(b.grid, pgrid)
    patch = PlannedPatch(
        0,
        pgrid,
        (
            PatchView("T0", time(0), Window(32, 32, P, P)),
            PatchView("T1", time(1), cover, resampled=True),
        ),
    )
    report = extract_dataset(tmp_path / "out", [patch], MemoryReader({"T0": a, "T1": b}), config())
    assert report.dropped_views == {pixels.NODATA_REASON: 1}
    assert open_dataset(tmp_path / "out")[0]["products"] == ["T0"]


def test_resampled_window_cuts_covering_region_exactly():
    """Reprojecting only the covering window equals reprojecting the whole tile."""
    rng = np.random.default_rng(3)
    src = PixelGrid("EPSG:32632", (30.0, 0.0, 700_020.0, 0.0, -30.0, 5_010_000.0), (90, 90))
    dst = grid_in_other_zone(src, 30, 30, "EPSG:32633")
    img = rng.integers(0, 100, (3, 90, 90)).astype(np.int16)
    whole = pixels.reproject_to(img, src, dst)
    assert not (whole == NODATA).any()
    w = covering_window(src, dst)
    part = pixels.reproject_to(img[(slice(None), *w.to_slices())], src.crop(w), dst)
    np.testing.assert_array_equal(part, whole)


def test_corrupt_tile_is_reported_and_the_rest_is_built(tmp_path, scene):
    tiles, patches = scene
    tiles["T1"].fail = "TIFFReadEncodedStrip() failed"
    report = extract_dataset(tmp_path / "out", patches, MemoryReader(tiles), config())
    assert [p["product"] for p in report.invalid_products] == ["T1"]
    n_t1 = sum("T1" in p.tile_ids for p in patches)
    assert report.dropped_views == {pixels.READ_FAILED_REASON: n_t1}
    ds = open_dataset(tmp_path / "out")
    assert len(ds) == len(patches)
    assert "T1" not in set(ds.views["product"])


def test_in_process_and_dask_workers_write_identical_stores(tmp_path, scene):
    from distributed import Client, LocalCluster

    tiles, patches = scene
    cfg = config(max_unit_patches=4, locations_per_shard=2)
    extract_dataset(tmp_path / "a", patches, MemoryReader(tiles), cfg)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        extract_dataset(tmp_path / "b", patches, MemoryReader(tiles), cfg, client=client)
    a, b = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "b")
    np.testing.assert_array_equal(a.images[:], b.images[:])
    assert a.index.drop(columns="geometry").equals(b.index.drop(columns="geometry"))
    assert a.views.equals(b.views)
    assert a.attrs == b.attrs
    shard_files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("c/*/0/0/0/0")
    )
    assert shard_files == sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("c/*/0/0/0/0")
    )


# -- work units -------------------------------------------------------------------------
def _fake_patches(n_components: list[int], tiles_per_comp: int) -> list[PlannedPatch]:
    out = []
    pid = 0
    for comp, n in enumerate(n_components):
        for i in range(n):
            row, col = divmod(i, 7)
            grid = PixelGrid(
                "EPSG:32633",
                (30.0, 0.0, 1e5 + col * 3840, 0.0, -30.0, 5e6 - row * 3840),
                (128, 128),
            )
            views = tuple(
                PatchView(
                    f"C{comp}-T{(i // 3 + k) % tiles_per_comp}", time(k), Window(0, 0, 128, 128)
                )
                for k in range(2)
            )
            out.append(PlannedPatch(pid, grid, views, comp))
            pid += 1
    return out


@settings(max_examples=40, deadline=None)
@given(
    comps=hst.lists(hst.integers(1, 60), min_size=1, max_size=6),
    tiles_per_comp=hst.integers(1, 30),
    k=hst.integers(1, 9),
    max_patches=hst.integers(1, 50),
    max_tiles=hst.integers(2, 12),
)
def test_units_partition_the_plan_into_owned_shards(
    comps, tiles_per_comp, k, max_patches, max_tiles
):
    patches = _fake_patches(comps, tiles_per_comp)
    units = make_units(patches, k, max_patches, max_tiles)
    seen = [p.patch_id for u in units for p in u.patches]
    assert sorted(seen) == [p.patch_id for p in patches]
    slot = 0
    for i, u in enumerate(units):
        assert u.index == i
        assert u.slot_start == slot and u.slot_start % k == 0 and u.n_slots % k == 0
        assert len(u.patches) <= u.n_slots < len(u.patches) + k
        assert len(u.patches) <= max_patches
        assert len(u.patches) == 1 or len(u.tile_ids) <= max_tiles
        assert len({p.component for p in u.patches}) == 1  # one component (or a piece of one)
        slot += u.n_slots
    # every component is split into as few units as its limits allow, never merged
    assert len(units) >= len(comps)
    # determinism: same plan, same units and keys
    again = make_units(patches, k, max_patches, max_tiles)
    assert [u.key for u in again] == [u.key for u in units]


def test_large_component_is_split_into_balanced_units():
    patches = _fake_patches([100], tiles_per_comp=40)
    units = make_units(patches, 4, 30, 100)
    sizes = [len(u.patches) for u in units]
    assert len(units) == 4 and max(sizes) - min(sizes) <= 1
    # each unit is a compact band of rows: its patches' rows do not interleave with others
    rows = [sorted({-p.grid.origin_xy[1] for p in u.patches}) for u in units]
    for a, b in zip(rows, rows[1:]):
        assert a[-1] <= b[0]


def test_reprojection_fill_is_nodata_for_images_and_unflagged_for_quality_layers():
    """pixels.reproject_to: target pixels the source does not cover get -32768 in an image
    (so the view fails the nodata check) and 0 (unflagged) in a quality layer."""
    src = PixelGrid("EPSG:32633", (30.0, 0.0, 500_000.0, 0.0, -30.0, 5_000_000.0), (8, 8))
    # the target grid: its 4 western columns (of 8) lie west of the source
    dst = PixelGrid("EPSG:32633", (30.0, 0.0, 500_000.0 - 4 * 30, 0.0, -30.0, 5_000_000.0), (8, 8))
    image = np.full((2, 8, 8), 1234, np.int16)
    out = pixels.reproject_to(image, src, dst, "nearest")
    assert (out[:, :, :4] == NODATA).all() and (out[:, :, 4:] == 1234).all()
    assert pixels.has_nodata(out)
    layer = np.ones((1, 8, 8), np.uint8)  # every source pixel flagged
    flags = pixels.reproject_to(layer, src, dst, "nearest", nodata=None)[0]
    assert (flags[:, :4] == 0).all() and (flags[:, 4:] == 1).all()
    cloud, _ = pixels.flag_fractions({"CLOUD": flags}, dst.shape_yx)
    assert cloud == 0.5  # uncovered pixels count as unflagged
