"""Split schemes on made-up location tables (pure numpy): leak-free and close to the targets."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from spectralearth_build.labels.splits import (
    SplitConfig,
    block_ids,
    leaks,
    random_split,
    spatial_split,
    split_warning,
)


def tiles_and_locations(seed: int, n_tiles: int = 120, per_tile: int = 40):
    """Overlapping 30 km tiles over a 600 km region, locations inside them, 5 classes."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 600_000, (n_tiles, 2))
    xs, ys, prods, hist = [], [], [], []
    for k, (cx, cy) in enumerate(centres):
        pts = rng.uniform(-15_000, 15_000, (per_tile, 2)) + (cx, cy)
        for px, py in pts:
            near = np.flatnonzero(np.abs(centres - (px, py)).max(axis=1) < 15_000)
            xs.append(px)
            ys.append(py)
            prods.append([f"P{j}" for j in near])
            h = np.zeros(5)
            h[int(px // 120_000) % 5] = 1
            h[rng.integers(5)] = 1
            hist.append(h)
        del k
    return np.array(xs), np.array(ys), prods, np.array(hist)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), block_km=st.sampled_from([10.0, 20.0, 50.0]))
def test_spatial_split_never_leaks(seed, block_km):
    x, y, prods, hist = tiles_and_locations(seed, n_tiles=60, per_tile=15)
    cfg = SplitConfig(block_m=block_km * 1000, seed=seed)
    codes = spatial_split(x, y, prods, hist, cfg)
    assert leaks(codes, prods) == {}
    assert leaks(codes, [[b] for b in block_ids(x, y, cfg.block_m)]) == {}
    assert set(np.unique(codes)) <= {-1, 0, 1, 2}


def test_spatial_split_sizes_and_balance():
    x, y, prods, hist = tiles_and_locations(0)
    codes = spatial_split(x, y, prods, hist, SplitConfig(block_m=50_000))
    kept = codes >= 0
    assert kept.mean() > 0.5  # locations near split borders are left out, most are kept
    frac = np.bincount(codes[kept], minlength=3) / kept.sum()
    np.testing.assert_allclose(frac, [0.75, 0.10, 0.15], atol=0.03)
    whole = hist[kept].mean(axis=0)
    for s in range(3):
        assert np.abs(hist[codes == s].mean(axis=0) - whole).max() < 0.1
    # deterministic for a seed
    np.testing.assert_array_equal(
        codes, spatial_split(x, y, prods, hist, SplitConfig(block_m=50_000))
    )


def small_archive(seed: int, n_groups: int, width_m: float):
    """``n_groups`` sites 100 km apart, each a few tiles and 2..12 locations.

    A site is ``width_m`` wide (several blocks of 10 km when wider than that) and every one of
    its locations is cut from the site's first tile (and maybe others), so the sites are the
    independent groups; sizes are uneven (one large site, small others).
    """
    rng = np.random.default_rng(seed)
    xs, ys, prods, hist = [], [], [], []
    for g in range(n_groups):
        n = int(rng.integers(8, 13)) if g == 0 else int(rng.integers(2, 5))
        tiles = [f"S{g}T{k}" for k in range(int(rng.integers(1, 4)))]
        for _ in range(n):
            xs.append(g * 100_000 + rng.uniform(1_000, width_m - 1_000))
            ys.append(rng.uniform(1_000, 9_000))
            prods.append(sorted({tiles[0], *rng.choice(tiles, size=int(rng.integers(1, 3)))}))
            h = np.zeros(3)
            h[rng.integers(3)] = 1
            hist.append(h)
    return np.array(xs), np.array(ys), prods, np.array(hist)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_groups=st.integers(3, 5),
    width_m=st.sampled_from([10_000.0, 40_000.0]),
)
def test_spatial_split_of_a_small_archive_fills_every_split(seed, n_groups, width_m):
    """With 3 or more independent groups no split is empty (sites of one or several blocks)."""
    x, y, prods, hist = small_archive(seed, n_groups, width_m)
    cfg = SplitConfig(block_m=10_000, seed=seed)
    codes = spatial_split(x, y, prods, hist, cfg)
    assert leaks(codes, prods) == {}
    assert leaks(codes, [[b] for b in block_ids(x, y, cfg.block_m)]) == {}
    assert all((codes == s).any() for s in range(3)), np.bincount(codes + 1)
    assert split_warning(codes, x, y, prods, cfg) is None


def test_spatial_split_too_small_says_so():
    x, y, prods, hist = small_archive(0, 2, 10_000)
    cfg = SplitConfig(block_m=10_000)
    codes = spatial_split(x, y, prods, hist, cfg)
    assert leaks(codes, prods) == {}
    assert not all((codes == s).any() for s in range(3))  # two blocks: one split stays empty
    warning = split_warning(codes, x, y, prods, cfg)
    assert warning is not None
    assert f"({len(x)} locations in 2 blocks of 10 km from" in warning
    assert "2 independent group(s)" in warning and "empty" in warning


def test_random_split_fractions_and_seed():
    codes = random_split(1000, SplitConfig())
    assert np.bincount(codes).tolist() == [750, 100, 150]
    np.testing.assert_array_equal(codes, random_split(1000, SplitConfig()))
    assert not np.array_equal(codes, random_split(1000, SplitConfig(seed=1)))


def test_label_loader_imports_no_gdal():
    """The modules ``open_dataset``/``ds[i]`` run for labels import only numpy, pandas, zarr."""
    import ast
    from pathlib import Path

    import spectralearth_build.labels as pkg

    allowed = {
        "numpy",
        "pandas",
        "zarr",
        "__future__",
        "csv",
        "dataclasses",
        "functools",
        "importlib",
        "pathlib",
        "typing",
    }
    for name in ("loader.py", "presets.py"):
        tree = ast.parse((Path(pkg.__file__).parent / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: error types, lookup tables, store names
                    assert node.module in ("errors", "presets", "formats"), (name, node.module)
                    continue
                mods = [node.module or ""]
            else:
                continue
            for m in mods:
                assert m.split(".")[0] in allowed, (name, m)
