"""Patch placement: lattice alignment, containment, overlap limits and the longest-first rule."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pytest
import shapely
from plankit import check_plan, grid_first_multi, make_tile, reproject, scenario_tiles

from spectralearth_build.config import PlanConfig
from spectralearth_build.geometry import plan_patches
from spectralearth_build.geometry.patches import window_sum

CFG = PlanConfig(patch_px=32, candidate_stride_px=8)


def test_window_sum_matches_direct_sums() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, size=(9, 11))
    got = window_sum(a, 4)
    want = np.array([[a[r : r + 4, c : c + 4].sum() for c in range(8)] for r in range(6)])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"max_overlap_fraction": 0.25},
        {"include_single": False},
        {"candidate_stride_px": 32, "complete_views": False},
        {"patch_px": 16, "min_gap_days": 0.0, "beam_width": 2},
    ],
)
def test_plan_properties(changes) -> None:
    tiles = scenario_tiles()
    config = dataclasses.replace(CFG, **changes)
    result = plan_patches(tiles, config)
    patches = result.patches
    assert sum(p.n_views >= 2 for p in patches) > 10
    check_plan(tiles, patches, config)
    if config.include_single:
        assert any(p.n_views == 1 for p in patches)


def test_cross_zone_patches_are_resampled_views() -> None:
    tiles = scenario_tiles()
    patches = plan_patches(tiles, CFG).patches
    zones = {t.tile_id: t.crs for t in tiles}
    mixed = [p for p in patches if len({zones[v.tile_id] for v in p.views}) == 2]
    assert mixed, "the zone-line site yields patches with views from both zones"
    resampled = 0
    for p in mixed:
        for v in p.views:
            assert v.resampled == (zones[v.tile_id] != p.grid.crs)
            if v.resampled:  # a small source window: the patch plus a pad of a few pixels
                assert CFG.patch_px <= v.window.height <= CFG.patch_px + 8
                assert CFG.patch_px <= v.window.width <= CFG.patch_px + 8
                resampled += 1
    assert resampled >= len(mixed)  # every mixed patch has at least one resampled view


def test_every_patch_has_all_compatible_covering_tiles() -> None:
    """Longest series win: no tile covering a patch could have been added as a further view."""
    # plus a second acquisition of the revisited site half a day after the first one: it covers
    # patches of that site but is too close in time to join them, so the check below has cases
    tiles = [*scenario_tiles(), make_tile(99, 0.5, (498_800, 5_000_000), side_px=150, angle_deg=10)]
    patches = plan_patches(tiles, CFG).patches
    gap = timedelta(days=CFG.min_gap_days)
    by_id = {t.tile_id: t for t in tiles}
    checked = 0  # covering tiles that were not views: each must be incompatible
    for p in patches:
        box = shapely.box(*p.grid.bounds)
        views = [by_id[v.tile_id] for v in p.views]
        for t in tiles:
            if t in views:
                continue
            here = reproject(box, p.grid.crs, t.crs)
            # covered with a margin (other zones are shrunk by one pixel in the planner)
            if not t.footprint.buffer(-31).covers(here):
                continue
            compatible = all(
                t.datatake != v.datatake and abs(t.start_time - v.start_time) >= gap for v in views
            )
            assert not compatible, f"patch {p.patch_id} misses view {t.tile_id}"
            checked += 1
    assert checked > 0, "no covering tile outside a patch's views was checked"


def test_longer_tuple_takes_the_shared_area() -> None:
    # three revisits sharing a core; a fourth overlapping only part of it
    tiles = [make_tile(1 + k, 5 * k, (500_000 + 90 * k, 5_000_000), side_px=120) for k in range(3)]
    tiles.append(make_tile(9, 40, (500_000 + 60 * 30, 5_000_000 + 20 * 30), side_px=120))
    config = dataclasses.replace(CFG, complete_views=False)
    patches = plan_patches(tiles, config).patches
    core = shapely.intersection_all([t.footprint for t in tiles])
    n_core = [p.n_views for p in patches if core.covers(shapely.box(*p.grid.bounds))]
    assert n_core and min(n_core) == 4
    triple = shapely.intersection_all([t.footprint for t in tiles[:3]])
    for p in patches:
        if triple.covers(shapely.box(*p.grid.bounds)):
            assert p.n_views >= 3
    check_plan(tiles, patches, config)


def test_at_least_as_many_multi_patches_as_a_fixed_grid() -> None:
    one_zone = [t for t in scenario_tiles() if t.datatake < 40 or t.datatake >= 60]
    assert {t.crs for t in one_zone} == {"EPSG:32633"}
    for config in (CFG, dataclasses.replace(CFG, patch_px=16)):
        patches = plan_patches(one_zone, config).patches
        ours = sum(p.n_views >= 2 for p in patches)
        assert ours >= grid_first_multi(one_zone, config) > 0


def test_isolated_tile_gets_single_patches_inside_it() -> None:
    t = make_tile(1, 0, (500_000, 5_000_000), side_px=100, angle_deg=30)
    patches = plan_patches([t], CFG).patches
    # a rotated 100 px square holds at least a 1 x 1 arrangement of 32 px patches... and more
    assert len(patches) >= 4
    assert all(p.n_views == 1 for p in patches)
    check_plan([t], patches, CFG)
    assert plan_patches([t], dataclasses.replace(CFG, include_single=False)).patches == []
    assert plan_patches([], CFG).patches == []
