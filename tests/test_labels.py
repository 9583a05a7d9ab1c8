"""Labels on a tiny synthetic dataset: pairing, the loader contract, splits."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, reproject

from spectralearth_build import open_dataset
from spectralearth_build.build import build_dataset
from spectralearth_build.config import BuildConfig
from spectralearth_build.errors import InputError
from spectralearth_build.labels.presets import corine_clc_of_grid, task_table
from spectralearth_build.labels.spec import parse_label_option
from spectralearth_build.labels.splits import SplitConfig
from spectralearth_build.labels.store import pair_labels

CONFIG = {"plan": {"patch_px": 32}, "extract": {"max_unit_patches": 3, "locations_per_shard": 2}}
SPLITS = SplitConfig(block_m=1000.0)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Any:
    from spectralearth_build.synth import make_archive

    root = tmp_path_factory.mktemp("synth") / "tiles"
    return make_archive(root, preset="tiny", seed=0)


def label_specs(archive) -> list:
    return [parse_label_option(f"{p}={archive.label(p)}") for p in ("corine", "cdl", "nlcd")]


@pytest.fixture(scope="module")
def labelled(archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lab") / "out"
    build_dataset(archive.out, out, BuildConfig.from_dict(CONFIG), workers=0)
    pair_labels(out, label_specs(archive), shard_locations=8, split_config=SPLITS)
    return out


def test_loader_contract(labelled):
    ds = open_dataset(labelled)
    names = {n for i in range(len(ds)) for n in ds[i]["labels"]}
    assert names == {"corine", "cdl", "nlcd"}
    for i in range(len(ds)):
        for mask in ds[i]["labels"].values():
            assert mask.shape == (32, 32) and mask.dtype == np.uint8
    corine = open_dataset(labelled, task="corine")
    assert 0 < len(corine) < len(ds)
    item = corine[0]
    assert item["label"].shape == (19,) and item["label"].dtype == np.float32
    assert set(np.unique(item["label"])) <= {0.0, 1.0} and item["label"].sum() >= 1
    assert "corine" in item["labels"] and item["image"].shape[1:] == (202, 32, 32)
    for task, n in (("cdl", 14), ("nlcd", 15)):
        view = open_dataset(labelled, task=task)
        lab = view[0]["label"]
        assert lab.shape == (32, 32) and lab.dtype == np.int64
        assert lab.min() >= 0 and lab.max() <= n and view.ignore_index == n
        assert len(view.classes) == n
        # the target is the raw mask through the class list, background/unlisted -> n
        raw = view[0]["labels"][task]
        codes = list(task_table(task).codes)
        expect = np.array([codes.index(c) if c in codes else n for c in raw.ravel()])
        np.testing.assert_array_equal(lab.ravel(), expect)
    # views survive pickling (DataLoader workers) and map to the base positions
    again = pickle.loads(pickle.dumps(corine))
    np.testing.assert_array_equal(again[0]["label"], item["label"])
    assert again.n_views_at(0) == corine.n_views_at(0)
    parts = [len(open_dataset(labelled, task="corine", split=s)) for s in ("train", "val", "test")]
    assert sum(parts) <= len(corine)
    with pytest.raises(InputError, match="no task"):
        open_dataset(labelled, task="eurocrops")
    with pytest.raises(InputError, match="needs a task"):
        open_dataset(labelled, split="train")
