"""The build config of the end-to-end tests and a comparison of two built datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spectralearth_build import open_dataset

BUILD_CONFIG = {
    "plan": {"patch_px": 32},
    "extract": {"max_unit_patches": 3, "locations_per_shard": 2},
}
"""Small patches, many units and shards: every code path of extraction on the tiny archive."""


def assert_same_dataset(a: Path, b: Path, plan: bool = True) -> None:
    """Same pixels, tables, attributes (and, if ``plan``, byte-identical plan files)."""
    da, db = open_dataset(a), open_dataset(b)
    np.testing.assert_array_equal(np.asarray(da.images[:]), np.asarray(db.images[:]))
    pd.testing.assert_frame_equal(
        pd.DataFrame(da.index.drop(columns="geometry")),
        pd.DataFrame(db.index.drop(columns="geometry")),
    )
    assert list(da.index.geometry.to_wkb()) == list(db.index.geometry.to_wkb())
    pd.testing.assert_frame_equal(da.views, db.views)
    pd.testing.assert_frame_equal(
        pd.read_parquet(a / "dropped_views.parquet"), pd.read_parquet(b / "dropped_views.parquet")
    )
    assert da.attrs == db.attrs
    if plan:
        assert (a / "plan.parquet").read_bytes() == (b / "plan.parquet").read_bytes()
