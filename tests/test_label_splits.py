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
                if node.level:  # relative: only the error types and the lookup tables
                    assert node.module in ("errors", "presets"), (name, node.module)
                    continue
                mods = [node.module or ""]
            else:
                continue
            for m in mods:
                assert m.split(".")[0] in allowed, (name, m)
