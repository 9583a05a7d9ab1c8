"""Torch datasets over a built store: per-view reads, seeded samples, workers, band subsets."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from spectralearth_build import open_dataset
from spectralearth_build.errors import InputError
from spectralearth_build.train.data import (
    NODATA,
    AllViews,
    EpochSampler,
    LabelTask,
    ShardViewReader,
    SingleView,
    TemporalPair,
    make_loader,
    select_bands,
    set_epoch,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """A tiny built store with paired labels: 32-px patches, 1 to 3 timestamps, 2 per shard."""
    from spectralearth_build.build import build_dataset
    from spectralearth_build.config import BuildConfig
    from spectralearth_build.labels.spec import parse_label_option
    from spectralearth_build.labels.splits import SplitConfig
    from spectralearth_build.labels.store import pair_labels
    from spectralearth_build.synth import make_archive

    root = tmp_path_factory.mktemp("train-store")
    archive = make_archive(root / "tiles", preset="tiny", seed=0)
    cfg = BuildConfig.from_dict(
        {"plan": {"patch_px": 32}, "extract": {"max_unit_patches": 3, "locations_per_shard": 2}}
    )
    build_dataset(root / "tiles", root / "out", cfg, workers=0)
    specs = [parse_label_option(f"{p}={archive.label(p)}") for p in ("corine", "cdl", "nlcd")]
    pair_labels(root / "out", specs, shard_locations=8, split_config=SplitConfig(block_m=1000.0))
    return root / "out"


def test_store_has_single_and_multi_view_locations(store):
    n = open_dataset(store).index["n_views"]
    assert (n == 1).any() and (n >= 3).any()


def test_single_view_reads_one_of_the_locations_views(store):
    ds = open_dataset(store)
    sv = SingleView(store, seed=3)
    seen = set()
    for epoch in range(4):
        for j in range(len(sv)):
            s = sv[(j, epoch)]
            assert s["image"].dtype == torch.int16
            assert 0 <= s["t"] < ds.n_views_at(j)
            np.testing.assert_array_equal(s["image"].numpy(), ds.read_views(j, [s["t"]])[0])
            seen.add((j, s["t"]))
    # every timestamp of a 3-view location is drawn at some point over 4 epochs x 40 locations
    assert len(seen) > len(sv)


def test_views_are_read_straight_from_the_shards_one_inner_chunk_each(store, monkeypatch):
    ds = open_dataset(store)
    tp = TemporalPair(store, seed=2)
    reader = tp.reader
    assert ds.format_version >= 2 and reader is not None
    one_view = reader.chunks[2] * reader.chunks[3] * reader.chunks[4] * 2
    for j in range(len(tp)):
        n = ds.n_views_at(j)
        np.testing.assert_array_equal(tp.read(j, range(n)), ds.read_views(j, range(n)))
    before = reader.decoded_bytes
    pairs = [tp[j] for j in range(len(tp))]
    distinct = sum(len(set(p["t"].tolist())) for p in pairs)
    assert reader.decoded_bytes - before == distinct * one_view
    # the same samples through zarr (the path for layouts the reader does not know)
    monkeypatch.setattr(ShardViewReader, "supports", staticmethod(lambda images: False))
    via_zarr = TemporalPair(store, seed=2)
    assert via_zarr.reader is None
    for j, p in enumerate(pairs):
        q = via_zarr[j]
        assert p["t"].tolist() == q["t"].tolist()
        np.testing.assert_array_equal(p["image"].numpy(), q["image"].numpy())


def test_temporal_pair_never_pairs_a_view_with_itself(store):
    ds = open_dataset(store)
    tp = TemporalPair(store, seed=0)
    pairs = set()
    for epoch in range(6):
        for j in range(len(tp)):
            s = tp[(j, epoch)]
            t0, t1 = s["t"].tolist()
            img = s["image"].numpy()
            assert img.shape[0] == 2 and img.dtype == np.int16
            if ds.n_views_at(j) >= 2:
                assert t0 != t1
                assert not np.array_equal(img[0], img[1])
                pairs.add((j, t0, t1))
            else:
                assert t0 == t1 == 0
                np.testing.assert_array_equal(img[0], img[1])
            np.testing.assert_array_equal(img, ds.read_views(j, [t0, t1]))
    # both orders and, for 3-view locations, all pairs turn up
    n3 = [j for j in range(len(tp)) if ds.n_views_at(j) == 3]
    assert {(t0, t1) for j, t0, t1 in pairs if j in n3} == {
        (a, b) for a in range(3) for b in range(3) if a != b
    }


def test_all_views_pads_to_t_with_a_validity_mask(store):
    ds = open_dataset(store)
    av = AllViews(store)
    t_max = int(ds.attrs["t_max"])
    for j in range(len(av)):
        s = av[j]
        n = ds.n_views_at(j)
        assert s["image"].shape[0] == t_max
        assert s["valid"].tolist() == [True] * n + [False] * (t_max - n)
        np.testing.assert_array_equal(s["image"][:n].numpy(), ds.read_views(j, range(n)))
        assert (s["image"][n:] == NODATA).all()
    short = AllViews(store, max_views=2, seed=1)
    j = next(j for j in range(len(av)) if ds.n_views_at(j) == 3)
    s = short[j]
    ts = s["t"].tolist()
    assert s["valid"].all() and len(ts) == 2 and ts == sorted(ts)
    np.testing.assert_array_equal(s["image"].numpy(), ds.read_views(j, ts))


def test_band_subsets_by_index_and_by_wavelength(store):
    ds = open_dataset(store)
    wl = ds.wavelengths
    full = SingleView(store, seed=5)
    by_wl = SingleView(store, seed=5, wavelength_ranges=[(400, 700), (1500, 1700)])
    sel = np.flatnonzero(((wl >= 400) & (wl <= 700)) | ((wl >= 1500) & (wl <= 1700)))
    assert 0 < len(sel) < len(wl)
    np.testing.assert_array_equal(by_wl.band_index, sel)
    np.testing.assert_allclose(by_wl.wavelengths, wl[sel])
    np.testing.assert_allclose(by_wl.band_mean, ds.band_mean[sel])
    np.testing.assert_allclose(by_wl.band_std, ds.band_std[sel])
    by_idx = SingleView(store, seed=5, bands=[7, 2, 3])
    for j in (0, 11, 27):
        ref = full[j]["image"].numpy()
        np.testing.assert_array_equal(by_wl[j]["image"].numpy(), ref[sel])
        np.testing.assert_array_equal(by_idx[j]["image"].numpy(), ref[[7, 2, 3]])


def test_bad_band_selections_are_one_line_errors(store):
    wl = open_dataset(store).wavelengths
    with pytest.raises(InputError, match="no band selected"):
        select_bands(wl, wavelength_ranges=[(10, 20)])
    with pytest.raises(InputError, match="within 0"):
        select_bands(wl, bands=[0, len(wl)])
    with pytest.raises(InputError, match="not both"):
        select_bands(wl, bands=[0], wavelength_ranges=[(400, 500)])
    with pytest.raises(InputError, match="lower end"):
        select_bands(wl, wavelength_ranges=[(900, 500)])
    with pytest.raises(InputError, match="location positions"):
        SingleView(store, locations=[0, 10_000])


def test_locations_subset_and_epochs(store):
    sv = SingleView(store, locations=[5, 9, 12], seed=2)
    ds = open_dataset(store)
    assert len(sv) == 3
    s = sv[1]
    np.testing.assert_array_equal(s["image"].numpy(), ds.read_views(9, [s["t"]])[0])
    # int keys follow the dataset's epoch, tuple keys carry their own
    sv.set_epoch(4)
    assert [sv[j]["t"] for j in range(3)] == [sv[(j, 4)]["t"] for j in range(3)]


def test_pickled_dataset_carries_no_store_and_reopens(store):
    sv = SingleView(store)
    a = sv[0]["image"]
    clone = pickle.loads(pickle.dumps(sv))
    assert clone._ds is None
    np.testing.assert_array_equal(clone[0]["image"].numpy(), a.numpy())


def test_label_tasks_give_the_task_targets_with_one_view(store):
    ds = open_dataset(store)
    corine = open_dataset(store, task="corine")
    lt = LabelTask(store, "corine")
    assert len(lt) == len(corine) > 0 and len(lt.classes) == 19
    for j in range(len(lt)):
        s = lt[j]
        ref = corine[j]
        assert s["label"].dtype == torch.float32 and s["label"].shape == (19,)
        np.testing.assert_array_equal(s["label"].numpy(), ref["label"])
        assert s["t"] == 0
        np.testing.assert_array_equal(s["image"].numpy(), ref["image"][0])
    cdl = LabelTask(store, "cdl", view="random", seed=4, wavelength_ranges=[(400, 900)])
    assert cdl.ignore_index == 14
    pos = open_dataset(store, task="cdl").positions
    ts = set()
    for epoch in range(3):
        for j in range(len(cdl)):
            s = cdl[(j, epoch)]
            lab = s["label"]
            assert lab.dtype == torch.int64 and lab.shape == (32, 32)
            assert 0 <= int(lab.min()) and int(lab.max()) <= 14
            view = ds.read_views(int(pos[j]), [s["t"]])[0][cdl.band_index]
            np.testing.assert_array_equal(s["image"].numpy(), view)
            ts.add(s["t"])
    assert len(ts) > 1  # random views move through time
    batch = next(iter(make_loader(cdl, 2, num_workers=0)))
    assert batch["label"].shape == (2, 32, 32) and batch["image"].dtype == torch.int16


def test_label_task_splits_partition_the_task(store):
    parts = {s: LabelTask(store, "nlcd", s, scheme="random") for s in ("train", "val", "test")}
    all_pos = np.sort(np.concatenate([p.locations for p in parts.values()]))
    assert len(np.unique(all_pos)) == len(all_pos) == len(LabelTask(store, "nlcd").locations)
    with pytest.raises(InputError, match="view"):
        LabelTask(store, "nlcd", view="last")
    with pytest.raises(InputError, match="no task"):
        LabelTask(store, "eurocrops")


def _epochs(loader, n_epochs: int) -> list[list[tuple]]:
    out = []
    for epoch in range(n_epochs):
        set_epoch(loader, epoch)
        rows = []
        for batch in loader:
            for k in range(len(batch["index"])):
                t = batch["t"][k]
                rows.append(
                    (
                        int(batch["index"][k]),
                        tuple(np.atleast_1d(t.numpy()).tolist()),
                        batch["image"][k].numpy().tobytes(),
                    )
                )
        out.append(rows)
    return out


@pytest.mark.parametrize("cls", [SingleView, TemporalPair])
def test_same_samples_for_the_same_seed_whatever_the_workers(store, cls):
    ds = cls(store, seed=11, bands=list(range(0, 202, 20)))
    runs = {}
    for workers in (0, 2):
        loader = make_loader(ds, 4, seed=7, num_workers=workers, shard_aware=True, drop_last=False)
        assert loader.persistent_workers == (workers > 0)
        runs[workers] = _epochs(loader, 2)
    assert runs[0] == runs[2]
    e0, e1 = runs[0]
    assert len(e0) == len(ds) and sorted(r[0] for r in e0) == list(range(len(ds)))
    assert [r[0] for r in e0] != [r[0] for r in e1]  # a new order each epoch
    assert [r[1] for r in sorted(e0)] != [r[1] for r in sorted(e1)]  # and new timestamps


def test_shard_aware_order_visits_shards_one_after_another(store):
    ds = SingleView(store)
    shards = ds.shard_ids
    sampler = EpochSampler(ds, shard_aware=True, seed=1)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = np.array([j for j, e in sampler])
        assert all(e == epoch for _, e in sampler)
        assert sorted(order.tolist()) == list(range(len(ds)))
        seq = shards[order]
        runs = seq[np.r_[True, seq[1:] != seq[:-1]]]
        assert len(runs) == len(np.unique(shards))  # each shard is one contiguous run
        orders.append(order.tolist())
    assert orders[0] != orders[1] != orders[2]


def test_replicas_split_the_epoch(store):
    ds = SingleView(store)
    parts = [EpochSampler(ds, seed=3, num_replicas=3, rank=r) for r in range(3)]
    got = [[j for j, _ in p] for p in parts]
    assert all(len(g) == len(parts[0]) == -(-len(ds) // 3) for g in got)
    assert set().union(*map(set, got)) == set(range(len(ds)))


def test_training_path_imports_no_gdal_rasterio_or_geopandas(store):
    code = textwrap.dedent(
        f"""
        import sys
        import torch
        from spectralearth_build.dataset import open_dataset
        from spectralearth_build.train import data, transforms
        ds = open_dataset({str(store)!r})
        tp = data.TemporalPair({str(store)!r})
        batch = next(iter(data.make_loader(tp, 4)))
        tr = transforms.DeviceTransform.from_dataset(tp, "moco", device="cpu")
        v0, v1 = tr.pair(batch["image"])
        item = data.LabelTask({str(store)!r}, "cdl")[0]
        bad = sorted(m for m in ("rasterio", "osgeo", "geopandas") if m in sys.modules)
        print("loaded:", bad)
        sys.exit(1 if bad else 0)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stdout + res.stderr
