"""The tile-overlap graph: pairs are different acquisitions sharing one patch area."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import shapely
from plankit import make_tile, reproject, xy
from pyproj import CRS

from spectralearth_build.config import PlanConfig
from spectralearth_build.geometry import PlanningError, build_overlap_graph

CFG = PlanConfig(patch_px=16)
PATCH_AREA = (16 * 30.0) ** 2


def test_edge_needs_one_patch_area_and_different_acquisitions() -> None:
    a = make_tile(1, 0, (500_000, 5_000_000))
    b = make_tile(2, 10, (503_000, 5_001_000))  # large overlap, other datatake, 10 days later
    c = make_tile(1, 0.0001, (500_000, 4_994_100), tile=2)  # same datatake, next tile
    d = make_tile(3, 0.5, (501_000, 5_000_500))  # other datatake but only 12 hours later
    # a sliver: overlaps ``a`` by less than one patch area
    th = math.radians(12.0)
    shift = 200 * 30 - 30  # across-track: a 30 m wide strip, 6 km long
    e = make_tile(4, 30, (500_000 + shift * math.cos(th), 5_000_000 - shift * math.sin(th)))
    g = build_overlap_graph([a, b, c, d, e], CFG)
    assert set(g.nodes) == {t.tile_id for t in (a, b, c, d, e)}
    assert g.has_edge(a.tile_id, b.tile_id)
    assert not g.has_edge(a.tile_id, c.tile_id)  # consecutive tiles of one datatake
    assert not g.has_edge(a.tile_id, d.tile_id)  # closer than min_gap_days
    assert g.has_edge(b.tile_id, d.tile_id)
    assert 0 < a.footprint.intersection(e.footprint).area < PATCH_AREA
    assert not g.has_edge(a.tile_id, e.tile_id)
    expected = a.footprint.intersection(b.footprint).area
    assert g.edges[a.tile_id, b.tile_id]["area"] == pytest.approx(expected)
    # with no gap required, same-day acquisitions of other datatakes pair
    g0 = build_overlap_graph([a, d], PlanConfig(patch_px=16, min_gap_days=0))
    assert g0.has_edge(a.tile_id, d.tile_id)


def test_edges_across_a_utm_zone_boundary() -> None:
    # lon 12 E is the line between zones 32 and 33; each tile lives in the zone of its centre
    a = make_tile(1, 0, (11.99, 47.0), lonlat=True)
    b = make_tile(2, 5, (12.02, 47.01), lonlat=True)
    far = make_tile(3, 9, (12.2, 47.0), lonlat=True)
    assert a.crs == "EPSG:32632" and b.crs == "EPSG:32633"
    g = build_overlap_graph([a, b, far], CFG)
    assert g.has_edge(a.tile_id, b.tile_id)
    assert not g.has_edge(a.tile_id, far.tile_id)
    # reference area in a local equal-area projection, computed independently
    laea = CRS.from_proj4("+proj=laea +lat_0=47 +lon_0=12 +datum=WGS84 +units=m").to_wkt()
    fa = reproject(a.footprint, a.crs, laea)
    fb = reproject(b.footprint, b.crs, laea)
    assert g.edges[a.tile_id, b.tile_id]["area"] == pytest.approx(
        fa.intersection(fb).area, rel=5e-3
    )


def test_components_and_degrees() -> None:
    # two clusters of three tiles revisiting a site, far apart, plus one isolated tile
    tiles = [make_tile(10 + k, 3 * k, (400_000 + 900 * k, 6_000_000)) for k in range(3)]
    tiles += [make_tile(20 + k, 3 * k + 1, (600_000 + 900 * k, 6_100_000)) for k in range(3)]
    tiles.append(make_tile(99, 50, (800_000, 5_500_000)))
    g = build_overlap_graph(tiles, CFG)
    comps = sorted(sorted(c) for c in nx.connected_components(g))
    assert sorted(len(c) for c in comps) == [1, 3, 3]
    assert max(d for _, d in g.degree) == 2
    # nodes are in time order with their index
    assert [g.nodes[n]["index"] for n in g.nodes] == list(range(7))


def test_bounding_boxes_meet_but_footprints_do_not() -> None:
    # rotated swaths: north-up rasters overlap at the corners while the footprints do not
    a = make_tile(1, 0, (500_000, 5_000_000), angle_deg=40)
    th, d = math.radians(40), 200 * 30 + 300  # side by side across track, 300 m apart
    b = make_tile(2, 3, (500_000 + d * math.cos(th), 5_000_000 - d * math.sin(th)), angle_deg=40)
    assert shapely.box(*a.grid.bounds).intersection(shapely.box(*b.grid.bounds)).area > 1e6
    assert not a.footprint.intersects(b.footprint)
    assert build_overlap_graph([a, b], CFG).number_of_edges() == 0


def test_bad_input_is_a_planning_error() -> None:
    a = make_tile(1, 0, (500_000, 5_000_000))
    with pytest.raises(PlanningError, match="appears twice"):
        build_overlap_graph([a, a], CFG)
    with pytest.raises(PlanningError, match="pixel size"):
        build_overlap_graph([a], PlanConfig(pixel_size_m=10.0))
    with pytest.raises(PlanningError, match="beam_width"):
        build_overlap_graph([a], PlanConfig(beam_width=0))
    x, y = xy("EPSG:32633", 15.0, 47.0)
    assert x == pytest.approx(500_000, abs=1)


def test_edges_through_a_pickling_map_and_a_tile_subset_are_the_same() -> None:
    """Areas computed in chunks in another process (pickled there and back) equal the local ones;
    a subset of a tile set equals the set built from those tiles alone."""
    import pickle

    import numpy as np
    from plankit import scenario_tiles

    from spectralearth_build.geometry import TileSet
    from spectralearth_build.geometry.graph import overlap_edges

    def pickling_map(fn, items):
        for item in items:
            yield pickle.loads(pickle.dumps(fn(pickle.loads(pickle.dumps(item)))))

    tileset = TileSet.build(scenario_tiles(), CFG)
    pairs, areas = overlap_edges(tileset)
    pairs2, areas2 = overlap_edges(tileset, map_fn=pickling_map)
    assert len(pairs) >= 10 and len({t.crs for t in tileset.tiles}) >= 2
    assert np.array_equal(pairs, pairs2) and np.array_equal(areas, areas2)
    for idx in ([0, 3, 9, 11], list(range(len(tileset)))[5:]):
        sub = tileset.subset(idx)
        ref = TileSet.build([tileset.tiles[i] for i in idx], CFG)
        assert sub.tiles == ref.tiles and sub.frames == ref.frames
        for name in ("frame_of", "lonlat_bounds", "datatakes", "times_s"):
            assert np.array_equal(getattr(sub, name), getattr(ref, name)), name
    with pytest.raises(ValueError, match="ascending"):
        tileset.subset([3, 1])


def test_components_and_planning_groups_match_networkx() -> None:
    import numpy as np

    from spectralearth_build.geometry.graph import components, planning_groups

    rng = np.random.default_rng(3)
    for n, m in [(0, 0), (1, 0), (7, 0), (40, 25), (200, 150), (300, 600)]:
        pairs = rng.integers(0, max(n, 1), size=(m, 2)) if n else np.zeros((0, 2), np.int64)
        touching = rng.integers(0, max(n, 1), size=(m // 5, 2)) if n else pairs
        g = nx.Graph()
        g.add_nodes_from(range(n))
        g.add_edges_from(pairs.tolist())
        ref = sorted(sorted(c) for c in nx.connected_components(g))
        expected = np.zeros(n, dtype=np.int64)
        for cid, members in enumerate(ref):
            expected[members] = cid
        assert np.array_equal(components(n, pairs), expected)
        g.add_edges_from(touching.tolist())
        assert planning_groups(n, pairs, touching) == sorted(
            sorted(c) for c in nx.connected_components(g)
        )
