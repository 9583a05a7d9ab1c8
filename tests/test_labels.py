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
from spectralearth_build.synth import land_cover_maps

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


def pixel_centres(item: dict, crs: str) -> tuple[np.ndarray, np.ndarray]:
    from spectralearth_build.crs import transformer

    a, _, c, _, e, f = item["transform"]
    p = item["image"].shape[-1]
    cols, rows = np.meshgrid(np.arange(p) + 0.5, np.arange(p) + 0.5)
    x, y = transformer(item["crs"], crs).transform(a * cols + c, e * rows + f)
    return np.asarray(x), np.asarray(y)


def map_agreement(archive, out: Path) -> dict[str, tuple[int, float, float]]:
    """Per label product: (pixels, share of stored codes equal to the map's class at the patch
    pixel centres, share equal to the map's class at the centre of the label pixel holding each
    patch pixel centre), over every pixel of every labelled location."""
    from spectralearth_build.synth.labels import LABEL_SPECS
    from spectralearth_build.synth.spectra import code_table

    maps = land_cover_maps(archive)
    ds = open_dataset(out)
    result = {}
    for ls in LABEL_SPECS:
        lc, table, r = maps[ls.site], code_table(ls.product), ls.res
        x0, y0 = lc.extent[0] + ls.origin_offset, lc.extent[3] - ls.origin_offset
        n = agree = agree_cell = 0
        for i in np.flatnonzero(np.asarray(ds.labels.has(ls.product))):
            item = ds[int(i)]
            mask = item["labels"][ls.product]
            x, y = pixel_centres(item, ls.crs)
            n += mask.size
            agree += (table[lc.class_at(x, y)] == mask).sum()
            cx = x0 + (np.floor((x - x0) / r) + 0.5) * r
            cy = y0 - (np.floor((y0 - y) / r) + 0.5) * r
            agree_cell += (table[lc.class_at(cx, cy)] == mask).sum()
        result[ls.product] = (n, agree / max(n, 1), agree_cell / max(n, 1))
    return result


def test_codes_agree_with_the_land_cover_map(archive, labelled):
    """Stored codes against the class map that made the pixels, on the tiny archive.

    The stored code is the map's class at the centre of the label pixel holding the patch pixel
    centre (pure numpy, no GDAL).  At the pixel centres themselves the tiny archive agrees less
    than a real-sized one (below): its 3.4 km swaths hold the hotspot's town, lake and river,
    whose boundaries the 100 m CORINE raster places 25 m off on average.
    """
    for product, (n, agree, agree_cell) in map_agreement(archive, labelled).items():
        assert n >= 10 * 32 * 32, product
        assert agree_cell >= 0.999, (product, agree_cell)
        assert agree >= 0.97, (product, agree)


def test_codes_agree_with_the_land_cover_map_on_real_sized_tiles(tmp_path_factory):
    """>= 99% of all pixels of all labelled locations agree with the map, for each product.

    Demo-sized swaths (320 px, 9.6 km; 32 bands to keep it small), 64-px patches.
    """
    from spectralearth_build.synth import make_archive

    root = tmp_path_factory.mktemp("synth-demo")
    archive = make_archive(root / "tiles", preset="demo", seed=0, n_bands=32)
    config = {
        "bands": {"expected_count": 32, "drop_ranges": [[18, 18]]},
        "plan": {"patch_px": 64},
        "extract": {"max_unit_patches": 4, "locations_per_shard": 4},
    }
    out = root / "out"
    build_dataset(archive.out, out, BuildConfig.from_dict(config), workers=0)
    pair_labels(out, label_specs(archive), shard_locations=16, split_config=SPLITS)
    for product, (n, agree, agree_cell) in map_agreement(archive, out).items():
        assert n >= 40 * 64 * 64, product
        assert agree_cell >= 0.999, (product, agree_cell)
        assert agree >= 0.99, (product, agree)


def test_codes_equal_an_independent_reproject(archive, labelled):
    """Every location against ``rasterio.warp.reproject`` of the whole label raster (nearest):
    labelled locations equal it pixel for pixel, and a location is labelled exactly when the
    whole patch is covered by label pixels that are not nodata."""
    ds = open_dataset(labelled)
    checked = 0
    for product in ("corine", "cdl", "nlcd"):
        with rasterio.open(archive.label(product)) as f:
            src, src_t, src_crs, nodata = f.read(1), f.transform, f.crs, f.nodata
        has = ds.labels.has(product)
        for i in range(len(ds)):
            item = ds[i]
            ref = np.full((32, 32), -1, dtype=np.int16)
            reproject(
                src.astype(np.int16),
                ref,
                src_transform=src_t,
                src_crs=src_crs,
                src_nodata=-2,  # not a code: every label pixel counts as data
                dst_transform=Affine(*item["transform"]),
                dst_crs=item["crs"],
                dst_nodata=-1,
                resampling=Resampling.nearest,
            )
            covered = (ref >= 0).all() and not (nodata is not None and (ref == nodata).any())
            assert bool(has[i]) == covered, (product, i)
            if covered:
                np.testing.assert_array_equal(item["labels"][product], ref.astype(np.uint8))
                checked += 1
    assert checked >= 30
    meta = ds.attrs["labels"]
    assert meta["corine"]["crs"] == "EPSG:3035" and meta["corine"]["encoding"] == "grid"
    assert meta["corine"]["year"] == 2018 and meta["nlcd"]["nodata"] == [0.0]
    n_cdl = int(np.asarray(ds.labels.has("cdl")).sum())
    assert meta["cdl"]["nodata"] == [] and meta["cdl"]["resampling"] == {"nearest": n_cdl}
    assert sum(meta["cdl"]["coverage"][s] for s in ("ok", "outside", "partial", "nodata")) == len(
        ds
    )


def test_spatial_splits_share_no_product_and_no_block(labelled):
    import zarr

    from spectralearth_build.labels.loader import split_array_path
    from spectralearth_build.labels.splits import block_ids, leaks
    from spectralearth_build.labels.tasks import location_centres, location_products

    ds = open_dataset(labelled)
    x, y = location_centres(labelled)
    blocks = block_ids(x, y, SPLITS.block_m)
    products = location_products(labelled)
    for task in ("corine", "cdl", "nlcd"):
        codes = np.asarray(zarr.open_array(str(split_array_path(labelled, task, "spatial")))[:])
        assert (codes[~ds.labels.has(task)] == -1).all()
        assert leaks(codes, products) == {}
        assert leaks(codes, [[b] for b in blocks]) == {}
        meta = ds.attrs["tasks"][task]["splits"]["spatial"]
        assert (
            meta["train"] + meta["val"] + meta["test"] + meta["dropped"]
            == ds.labels.has(task).sum()
        )
        # the tiny archive is small, but big enough for no split to be empty (1 km blocks)
        assert min(meta["train"], meta["val"], meta["test"]) > 0, (task, meta)
        assert "warning" not in meta
        random = np.asarray(zarr.open_array(str(split_array_path(labelled, task, "random")))[:])
        assert (random[ds.labels.has(task)] >= 0).all()


def corine_targets_like_spectralearth(clc: np.ndarray) -> np.ndarray:
    """SpectralEarth's CORINE target from a CLC-code mask: CLC -> 19 classes, multi-hot."""
    from spectralearth_build.labels.presets import _rows

    to19 = {
        int(r["clc_code"]): int(r["bigearthnet19_index"])
        for r in _rows("corine_classes.csv")
        if r["bigearthnet19_index"]
    }
    hot = np.zeros(19, dtype=np.float32)
    for code in np.unique(clc):
        if int(code) in to19:
            hot[to19[int(code)]] = 1
    return hot


def test_export_reads_like_spectralearth(labelled, tmp_path):
    from spectralearth_build.labels.export import export_spectralearth

    dest = tmp_path / "se"
    report = export_spectralearth(labelled, dest, scheme="random", locations_per_unit=7)
    ds = open_dataset(labelled)
    assert report.images == len(ds.views)
    ids = pd.read_csv(dest / "ids.csv", dtype={"location": str, "tile": str})
    by_name = {f"{r.location}/{r.tile}.tif": r for r in ids.itertuples(index=False)}
    pos_of = {int(p): i for i, p in enumerate(ds.index["patch_id"])}
    for task in ("corine", "cdl", "nlcd"):
        seen = []
        for split in ("train", "val", "test"):
            view = open_dataset(labelled, task=task, split=split, scheme="random")
            lines = (dest / "splits" / f"enmap_{task}" / f"{split}.txt").read_text().split()
            assert len(lines) == sum(view.n_views_at(i) for i in range(len(view)))
            for line in lines:  # the way SpectralEarth's datasets read a sample
                with rasterio.open(dest / "enmap" / line) as f:
                    image, crs, transform, tags = f.read(), f.crs, f.transform, f.tags()
                with rasterio.open(dest / task / line) as f:
                    mask = f.read(1)
                    assert f.crs == crs and f.transform == transform
                r = by_name[line]
                item = ds[pos_of[int(r.patch_id)]]
                np.testing.assert_array_equal(image, item["image"][int(r.t)])
                assert tags["PRODUCT"] == r.product == item["products"][int(r.t)]
                assert crs.to_string() == item["crs"]
                assert tuple(transform)[:6] == pytest.approx(item["transform"])
                raw = item["labels"][task]
                if task == "corine":  # stored grid codes, exported CLC codes
                    assert mask.min() >= 111 and mask.max() <= 523
                    np.testing.assert_array_equal(mask, corine_clc_of_grid()[raw])
                    sample = next(
                        i for i in range(len(view)) if view.index["patch_id"][i] == r.patch_id
                    )
                    np.testing.assert_array_equal(
                        corine_targets_like_spectralearth(mask), view.label_at(sample)
                    )
                else:
                    np.testing.assert_array_equal(mask, raw)
                seen.append(int(r.patch_id))
        # every labelled location of the task, all its timestamps, and nothing else
        assert sorted(set(seen)) == sorted(open_dataset(labelled, task=task).index["patch_id"])


def _strip_labels(src: Path, dst: Path) -> Path:
    import shutil

    import zarr

    shutil.copytree(src, dst)
    shutil.rmtree(dst / "labels")
    for sub in ("labels", "splits"):
        shutil.rmtree(dst / "data.zarr" / sub)
    group = zarr.open_group(str(dst / "data.zarr"), mode="r+")
    attrs = dict(group.attrs)
    for key in ("labels", "tasks"):
        attrs.pop(key)
    group.attrs.clear()
    group.attrs.update(attrs)
    return dst


def _labelled_line(labelled, name: str) -> str:
    """The summary line the labels command prints for ``name``, from the labelled store."""
    ds = open_dataset(labelled)
    n = int(np.asarray(ds.labels.has(name)).sum())
    assert 0 < n < len(ds)
    return f"label {name}: {n} of {len(ds)} locations labelled"


def test_cli_labels_on_dask_same_result_and_resumes(archive, labelled, tmp_path):
    import shutil

    from click.testing import CliRunner

    from spectralearth_build.cli import main

    out = _strip_labels(labelled, tmp_path / "ds")
    args = ["labels", "--dataset", str(out), "--shard-locations", "8", "--block-km", "1"]
    for p in ("corine", "cdl", "nlcd"):
        args += ["--labels", f"{p}={archive.label(p)}"]
    res = CliRunner().invoke(main, [*args, "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert _labelled_line(labelled, "corine") in res.output
    assert "task cdl spatial: train" in res.output
    a, b = open_dataset(labelled), open_dataset(out)
    for name in ("corine", "cdl", "nlcd"):
        np.testing.assert_array_equal(a.labels.array(name)[:], b.labels.array(name)[:])
        pd.testing.assert_frame_equal(
            pd.read_parquet(labelled / "labels" / f"{name}.parquet"),
            pd.read_parquet(out / "labels" / f"{name}.parquet"),
        )
    assert a.attrs["tasks"] == b.attrs["tasks"]
    # a pairing killed half-way: the table and two unit markers gone, the label incomplete
    units = out / "labels" / "units" / "cdl"
    n_units = len(list(units.glob("unit-*.json")))
    assert n_units >= 3
    for m in sorted(units.glob("unit-*.json"))[:2]:
        m.unlink()
    (units / "_COMPLETE").unlink()
    (out / "labels" / "cdl.parquet").unlink()
    res = CliRunner().invoke(main, [*args, "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert "label corine: already paired" in res.output
    assert f"label cdl: {n_units - 2} of {n_units} units done earlier" in res.output
    np.testing.assert_array_equal(
        a.labels.array("cdl")[:], open_dataset(out).labels.array("cdl")[:]
    )
    # the same NAME from another raster is refused without --replace
    other = ["labels", "--dataset", str(out), "--labels", f"cdl={archive.label('nlcd')}"]
    res = CliRunner().invoke(main, [*other, "--workers", "0"])
    assert res.exit_code == 1 and "use --replace" in res.output
    res = CliRunner().invoke(main, ["labels", "--dataset", str(out), "--labels", "x=nowhere.tif"])
    assert res.exit_code == 1 and "no such file" in res.output
    shutil.rmtree(out)


def test_build_dataset_with_labels(archive, labelled, tmp_path):
    import yaml
    from click.testing import CliRunner

    from spectralearth_build.cli.build import build_command

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    args = ["--tiles", str(archive.out), "--out", str(out), "--config", str(cfg)]
    args += ["--workers", "0", "--labels", f"corine={archive.label('corine')}"]
    res = CliRunner().invoke(build_command, args)
    assert res.exit_code == 0, res.output
    assert _labelled_line(labelled, "corine") in res.output
    outside = open_dataset(labelled).attrs["labels"]["corine"]["coverage"]["outside"]
    assert outside > 0 and f"no label: {outside} outside" in res.output
    np.testing.assert_array_equal(
        open_dataset(out).labels.array("corine")[:],
        open_dataset(labelled).labels.array("corine")[:],
    )
    res = CliRunner().invoke(build_command, [*args[:-2], "--labels", "cdl=/no/such.tif"])
    assert res.exit_code == 1 and "no such file" in res.output


def test_build_dataset_pairs_labels_on_the_build_client(archive, labelled, tmp_path):
    """``build-dataset --scheduler ADDR --labels``: one client, the pairing's tasks on ADDR."""
    from collections import Counter

    import yaml
    from click.testing import CliRunner
    from dask.utils import key_split
    from distributed import LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin

    from spectralearth_build.cli.build import build_command

    class Seen(SchedulerPlugin):
        def __init__(self) -> None:
            self.clients: set[str] = set()
            self.tasks: Counter[str] = Counter()

        def add_client(self, scheduler: Any, client: str) -> None:
            self.clients.add(client)

        def transition(self, key: Any, start: str, finish: str, *args: Any, **kw: Any) -> None:
            if finish == "processing":
                self.tasks[key_split(key)] += 1

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    seen = Seen()
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        cluster.scheduler.add_plugin(seen)
        args = ["--tiles", str(archive.out), "--out", str(out), "--config", str(cfg), "-q"]
        args += ["--scheduler", cluster.scheduler_address]
        args += ["--labels", f"cdl={archive.label('cdl')}"]
        res = CliRunner().invoke(build_command, args)
    assert res.exit_code == 0, res.output
    assert len(seen.clients) == 1, seen.clients
    assert seen.tasks["run_label_unit"] >= 1, seen.tasks
    assert sum(seen.tasks.values()) > seen.tasks["run_label_unit"]  # and the build's own tasks
    np.testing.assert_array_equal(
        open_dataset(out).labels.array("cdl")[:], open_dataset(labelled).labels.array("cdl")[:]
    )
