"""Pairing patches of an EnMAP grid (UTM 14N) over the real CDL subset (EPSG:5070, 30 m)."""

from __future__ import annotations

import numpy as np
import rasterio
from labelkit import write_dataset

from spectralearth_build import open_dataset
from spectralearth_build.crs import transformer
from spectralearth_build.grid import PixelGrid
from spectralearth_build.labels.spec import parse_label_option
from spectralearth_build.labels.store import pair_labels

UTM = "EPSG:32614"


def test_real_cdl_codes_at_known_coordinates(reference_dir, tmp_path):
    path = reference_dir / "labels" / "cdl_2021_30m_subset.tif"
    with rasterio.open(path) as f:
        cdl, inv, bounds = f.read(1), ~f.transform, f.bounds
    # an EnMAP-like lattice (origin 15 mod 30 m) over the subset's centre
    cx, cy = transformer("EPSG:5070", UTM).transform(
        (bounds.left + bounds.right) / 2, (bounds.bottom + bounds.top) / 2
    )
    x0, y0 = 30 * round(cx / 30) + 15 - 6000, 30 * round(cy / 30) + 15 + 6000
    grids = [
        PixelGrid(UTM, (30.0, 0.0, x0 + dx, 0.0, -30.0, y0 - dy), (32, 32))
        for dy in range(0, 12000, 3000)
        for dx in range(0, 12000, 3000)
    ]
    # one patch across the subset's western edge, one far outside it
    wx, wy = transformer("EPSG:5070", UTM).transform(bounds.left, (bounds.bottom + bounds.top) / 2)
    grids.append(
        PixelGrid(UTM, (30.0, 0.0, 30 * round(wx / 30) + 15 - 480, 0.0, -30.0, wy), (32, 32))
    )
    grids.append(PixelGrid(UTM, (30.0, 0.0, x0 + 90_015, 0.0, -30.0, y0), (32, 32)))
    out = write_dataset(tmp_path / "ds", grids, [["P0"]] * len(grids))
    report = pair_labels(out, [parse_label_option(f"cdl={path},year=2021")])
    cov = report.labels["cdl"]["coverage"]
    assert cov["ok"] == 16 and cov["partial"] == 1 and cov["outside"] == 1
    assert report.labels["cdl"]["year"] == 2021
    ds = open_dataset(out)
    n = agree = 0
    for i in range(16):
        mask = ds.labels.mask("cdl", i)  # the dataset has no images: read the label alone
        a, _, c, _, e, f = grids[i].transform
        cols, rows = np.meshgrid(np.arange(32) + 0.5, np.arange(32) + 0.5)
        ax, ay = transformer(UTM, "EPSG:5070").transform(a * cols + c, e * rows + f)
        col, row = inv * (np.asarray(ax), np.asarray(ay))
        ref = cdl[np.floor(row).astype(int), np.floor(col).astype(int)]
        n += mask.size
        agree += (ref == mask).sum()
    assert agree / n >= 0.999
    # the patch centres, looked up by hand in the subset
    for i in (0, 5, 15):
        g = grids[i]
        px, py = g.transform[2] + 16.5 * 30, g.transform[5] - 16.5 * 30
        ax, ay = transformer(UTM, "EPSG:5070").transform(px, py)
        with rasterio.open(path) as f:
            known = next(f.sample([(ax, ay)]))[0]
        assert ds.labels.mask("cdl", i)[16, 16] == known
    view = open_dataset(out, task="cdl")
    assert len(view) == 16
    lab = view.label_at(0)
    assert lab.dtype == np.int64 and set(np.unique(lab)) <= set(range(15))
    assert ((lab == 0) == (ds.labels.mask("cdl", 0) == 1)).all()  # corn is class 0
