"""The n-tuple search against brute-force enumeration of all tile subsets."""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plankit import make_tile

from spectralearth_build.config import PlanConfig
from spectralearth_build.geometry import find_tuples
from spectralearth_build.records import TileRecord

PATCH_PX = 8
PATCH_AREA = (PATCH_PX * 30.0) ** 2


def brute_force_valid(tiles: list[TileRecord], config: PlanConfig) -> dict[frozenset[str], float]:
    """Every subset of >= 2 pairwise different acquisitions sharing one patch area."""
    gap = timedelta(days=config.min_gap_days)
    out = {}
    for n in range(2, min(len(tiles), config.max_tuple_size) + 1):
        for combo in itertools.combinations(tiles, n):
            if any(
                a.datatake == b.datatake or abs(a.start_time - b.start_time) < gap
                for a, b in itertools.combinations(combo, 2)
            ):
                continue
            geom = combo[0].footprint
            for t in combo[1:]:
                geom = geom.intersection(t.footprint)
            if geom.area >= PATCH_AREA * (1 - 1e-9):
                out[frozenset(t.tile_id for t in combo)] = geom.area
    return out


def maximal(valid: dict[frozenset[str], float]) -> set[frozenset[str]]:
    return {s for s in valid if not any(s < t for t in valid)}


tile_strategy = st.tuples(
    st.integers(0, 5),  # datatake (repeats allowed: same-datatake tiles never pair)
    st.integers(0, 6),  # day
    st.integers(-25, 25),  # x offset in pixels
    st.integers(-25, 25),  # y offset in pixels
    st.integers(30, 70),  # side in pixels
    st.floats(0, 45),  # rotation
)


def _tiles(specs) -> list[TileRecord]:
    return [
        make_tile(
            dt,
            day + 0.01 * k,
            (500_000 + 30 * x, 5_000_000 + 30 * y),
            side_px=side,
            angle_deg=ang,
            tile=k + 1,
        )
        for k, (dt, day, x, y, side, ang) in enumerate(specs)
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(tile_strategy, min_size=2, max_size=6))
def test_search_matches_brute_force_with_a_wide_beam(specs) -> None:
    tiles = _tiles(specs)
    config = PlanConfig(patch_px=PATCH_PX, candidate_stride_px=4, beam_width=64, max_tuple_size=6)
    valid = brute_force_valid(tiles, config)
    found = {frozenset(t.tile_ids): t.area for t in find_tuples(tiles, config)}
    # sound: everything found is valid, with the right area
    for s, area in found.items():
        assert s in valid, s
        assert abs(area - valid[s]) <= 1e-6 * max(1.0, area)
    # complete: no valid tuple, maximal or not, is missed when the beam is wide enough
    assert set(found) == set(valid)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(tile_strategy, min_size=2, max_size=6), st.integers(1, 3))
def test_narrow_beam_is_sound_and_keeps_all_pairs(specs, beam) -> None:
    tiles = _tiles(specs)
    config = PlanConfig(patch_px=PATCH_PX, candidate_stride_px=4, beam_width=beam, max_tuple_size=6)
    valid = brute_force_valid(tiles, config)
    found = {frozenset(t.tile_ids) for t in find_tuples(tiles, config)}
    assert found <= set(valid)
    # every valid pair is a tuple whatever the beam
    assert {s for s in valid if len(s) == 2} <= found
    assert all(len(s) <= config.max_tuple_size for s in found)


def test_chain_of_overlaps_is_not_a_triple() -> None:
    # a overlaps b, b overlaps c, a and c do not: pairs only
    a = make_tile(1, 0, (500_000, 5_000_000), side_px=60, angle_deg=0)
    b = make_tile(2, 2, (500_000 + 40 * 30, 5_000_000), side_px=60, angle_deg=0)
    c = make_tile(3, 4, (500_000 + 80 * 30, 5_000_000), side_px=60, angle_deg=0)
    found = {frozenset(t.tile_ids) for t in find_tuples([a, b, c], PlanConfig(patch_px=8))}
    assert found == {frozenset({a.tile_id, b.tile_id}), frozenset({b.tile_id, c.tile_id})}


def test_high_degree_site_stays_bounded() -> None:
    # 40 revisits of one site (degree 39 each): the beam bounds the tuples kept per level
    tiles = [
        make_tile(
            100 + k,
            2 * k,
            (500_000 + 30 * (k % 7), 5_000_000 - 30 * (k % 5)),
            side_px=60,
            angle_deg=10 + k % 4,
        )
        for k in range(40)
    ]
    config = PlanConfig(patch_px=8, beam_width=4, max_tuple_size=12)
    found = find_tuples(tiles, config)
    by_size: dict[int, int] = {}
    for t in found:
        by_size[len(t.tile_ids)] = by_size.get(len(t.tile_ids), 0) + 1
    assert by_size[2] == 40 * 39 // 2
    assert max(by_size) == 12  # the deepest level is reached
    for n in range(3, 13):
        assert by_size[n] <= 40 * config.beam_width  # at most beam_width per tile and size
    for t in found:  # every tuple is a set of distinct acquisitions in time order
        assert len(set(t.tile_ids)) == len(t.tile_ids)
        assert list(t.tile_ids) == sorted(t.tile_ids, key=lambda i: i.split("_")[1])
