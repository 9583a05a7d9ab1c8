"""Pairing beyond the presets' native files: tiles, finer labels (mode), continuous maps,
nodata holes, CORINE delivered as CLC codes, and option parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from labelkit import write_dataset
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

from spectralearth_build import open_dataset
from spectralearth_build.errors import InputError
from spectralearth_build.grid import PixelGrid
from spectralearth_build.labels.presets import corine_clc_of_grid
from spectralearth_build.labels.spec import parse_label_option
from spectralearth_build.labels.store import pair_labels

UTM = "EPSG:32632"
X0, Y0 = 500_015.0, 5_400_015.0


def write_tif(path: Path, data: np.ndarray, crs: str, transform: Affine, nodata=None) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[0],
        width=data.shape[1],
        count=1,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as f:
        f.write(data, 1)
    return path


def grids(n: int = 6, step: float = 1500.0) -> list[PixelGrid]:
    return [
        PixelGrid(UTM, (30.0, 0.0, X0 + step * (k % 3), 0.0, -30.0, Y0 - step * (k // 3)), (32, 32))
        for k in range(n)
    ]


def warped(path: Path, grid: PixelGrid, resampling: Resampling, dtype=np.int32) -> np.ndarray:
    with rasterio.open(path) as f:
        src = f.read(1).astype(dtype)
        dst = np.zeros(grid.shape_yx, dtype=dtype)
        reproject(
            src,
            dst,
            src_transform=f.transform,
            src_crs=f.crs,
            src_nodata=f.nodata,
            dst_transform=Affine(*grid.transform),
            dst_crs=grid.crs,
            resampling=resampling,
        )
    return dst


def test_folder_of_tiles_equals_one_file(reference_dir, tmp_path):
    path = reference_dir / "labels" / "cdl_2021_30m_subset.tif"
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    with rasterio.open(path) as f:
        for r in (0, 500):
            for c in (0, 500):
                win = Window(c, r, 500, 500)
                write_tif(
                    tiles / f"t{r}_{c}.tif",
                    f.read(1, window=win),
                    f.crs.to_string(),
                    f.window_transform(win),
                )
        bounds = f.bounds
    from spectralearth_build.crs import transformer

    cx, cy = transformer("EPSG:5070", "EPSG:32614").transform(
        (bounds.left + bounds.right) / 2, (bounds.bottom + bounds.top) / 2
    )
    x0, y0 = 30 * round(cx / 30) + 15 - 2000, 30 * round(cy / 30) + 15 + 2000
    gs = [
        PixelGrid("EPSG:32614", (30.0, 0.0, x0 + 700 * k, 0.0, -30.0, y0 - 700 * k), (32, 32))
        for k in range(6)
    ]  # a diagonal across the four tiles' common corner
    one = write_dataset(tmp_path / "one", gs, [["P"]] * 6)
    many = write_dataset(tmp_path / "many", gs, [["P"]] * 6)
    pair_labels(one, [parse_label_option(f"cdl={path}")])
    report = pair_labels(many, [parse_label_option(f"cdl={tiles}")])
    assert report.labels["cdl"]["files"] == 4 and report.labels["cdl"]["coverage"]["ok"] == 6
    a, b = open_dataset(one).labels.array("cdl")[:], open_dataset(many).labels.array("cdl")[:]
    np.testing.assert_array_equal(a, b)


def test_finer_label_uses_mode_and_matches_gdal(tmp_path):
    rng = np.random.default_rng(0)
    codes = np.repeat(np.repeat(rng.integers(1, 6, (40, 40)), 15, 0), 15, 1).astype(np.uint8)
    codes = codes ^ (rng.random(codes.shape) < 0.2).astype(np.uint8)  # speckle
    path = write_tif(
        tmp_path / "crops10m.tif", codes, UTM, Affine(10, 0, X0 - 1000, 0, -10, Y0 + 1000)
    )
    out = write_dataset(tmp_path / "ds", grids(4, step=1200.0), [["P"]] * 4)
    report = pair_labels(out, [parse_label_option(f"crops={path},year=2022")])
    meta = report.labels["crops"]
    assert meta["resampling"] == {"mode": 4} and meta["year"] == 2022 and meta["preset"] is None
    ds = open_dataset(out)
    for i, g in enumerate(grids(4, step=1200.0)):
        np.testing.assert_array_equal(ds.labels.mask("crops", i), warped(path, g, Resampling.mode))
    task = ds.attrs["tasks"]["crops"]
    assert task["kind"] == "segmentation" and task["classes"] == [str(c) for c in task["codes"]]
    assert set(task["codes"]) <= set(range(8))
    view = open_dataset(out, task="crops")
    assert view.label_at(0).dtype == np.int64


def test_continuous_label_bilinear_and_nodata_hole(tmp_path):
    from spectralearth_build.crs import transformer

    # a smooth biomass field at 100 m in EPSG:3035 with a nodata hole
    ex, ey = transformer(UTM, "EPSG:3035").transform(X0, Y0)
    t = Affine(100, 0, 100 * round(ex / 100) - 2000, 0, -100, 100 * round(ey / 100) + 2000)
    yy, xx = np.mgrid[0:80, 0:80]
    agb = (50 + 30 * np.sin(xx / 9.0) * np.cos(yy / 7.0)).astype(np.float32)
    agb[45:60, 20:35] = -9999  # under the fifth patch
    path = write_tif(tmp_path / "agb_2020.tif", agb, "EPSG:3035", t, nodata=-9999)
    gs = grids(6)
    out = write_dataset(tmp_path / "ds", gs, [[f"P{k}"] for k in range(6)])
    report = pair_labels(out, [parse_label_option(f"agb={path},kind=continuous")])
    cov = report.labels["agb"]["coverage"]
    ds = open_dataset(out)
    has = ds.labels.has("agb")
    for i, g in enumerate(gs):
        ref = warped(path, g, Resampling.bilinear, np.float32)
        if has[i]:
            np.testing.assert_allclose(ds.labels.mask("agb", i), ref, rtol=1e-5)
        else:  # the label pixels under the patch (its bounding box) reach into the hole
            x0, y0, x1, y1 = g.bounds
            cx, cy = transformer(UTM, "EPSG:3035").transform([x0, x1, x1, x0], [y0, y0, y1, y1])
            cols, rows = ~t * (np.asarray(cx), np.asarray(cy))
            r0, r1 = int(np.floor(rows.min())), int(np.ceil(rows.max()))
            c0, c1 = int(np.floor(cols.min())), int(np.ceil(cols.max()))
            assert (agb[r0:r1, c0:c1] == -9999).any()
    assert cov["nodata"] >= 1 and cov["ok"] >= 4
    assert report.labels["agb"]["year"] == 2020 and report.labels["agb"]["resampling"] == {
        "bilinear": cov["ok"]
    }
    view = open_dataset(out, task="agb")
    assert view.meta["kind"] == "regression" and view.label_at(0).dtype == np.float32


def test_corine_as_clc_codes_gives_the_same_targets(tmp_path):
    from spectralearth_build.crs import transformer

    rng = np.random.default_rng(1)
    ex, ey = transformer(UTM, "EPSG:3035").transform(X0, Y0)
    t = Affine(100, 0, 100 * round(ex / 100) - 2000, 0, -100, 100 * round(ey / 100) + 2000)
    grid_codes = np.repeat(np.repeat(rng.integers(1, 45, (16, 16)), 5, 0), 5, 1).astype(np.uint8)
    a = write_tif(tmp_path / "CLC2018_grid.tif", grid_codes, "EPSG:3035", t, nodata=48)
    clc = corine_clc_of_grid()[grid_codes].astype(np.uint16)
    b = write_tif(tmp_path / "CLC2018_clc.tif", clc, "EPSG:3035", t, nodata=999)
    gs = grids(6)
    out = write_dataset(tmp_path / "ds", gs, [["P"]] * 6)
    pair_labels(
        out, [parse_label_option(f"corine={a}"), parse_label_option(f"clc={b},preset=corine")]
    )
    ds = open_dataset(out)
    assert ds.attrs["labels"]["corine"]["encoding"] == "grid"
    assert ds.attrs["labels"]["clc"]["encoding"] == "clc"
    assert ds.attrs["labels"]["clc"]["nodata"] == [48.0, 999.0]
    va, vb = open_dataset(out, task="corine"), open_dataset(out, task="clc")
    assert len(va) == len(vb) == 6
    for i in range(6):
        np.testing.assert_array_equal(va.label_at(i), vb.label_at(i))
        assert va.label_at(i).sum() >= 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("corine", "expected NAME=PATH"),
        ("agb=x.tif,kind=numeric", "kind 'numeric'"),
        ("lc=x.tif,resampling=bilinear", "would invent classes"),
        ("lc=x.tif,nodata=abc", "not a number"),
        ("lc=x.tif,kind=continuous,colour=red", "unknown option"),
        ("9lc=x.tif", "label names"),
        ("lc=x.tif,preset=modis", "unknown preset"),
        ("lc=x.tif,year=18", "four-digit year"),
    ],
)
def test_label_option_errors(text, message):
    with pytest.raises(InputError, match=message):
        parse_label_option(text)


def test_label_option_parsing():
    s = parse_label_option("eurocrops=/data/EC_2021,v2.tif")
    assert s.path == "/data/EC_2021,v2.tif" and s.year == 2021 and s.kind == "categorical"
    s = parse_label_option("nlcd=/d/nlcd.tif,year=2019,resampling=mode")
    assert s.preset == "nlcd" and s.year == 2019 and s.resampling == "mode"
    assert s.product == "USGS National Land Cover Database"
