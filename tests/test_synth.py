"""The synthetic archive generator: real format, known statuses, consistent labels, determinism."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from pyproj import Transformer

from spectralearth_build.bands import reference_bands
from spectralearth_build.catalog import scan
from spectralearth_build.cli import main
from spectralearth_build.enmap.discovery import discover_products
from spectralearth_build.enmap.metadata import parse_metadata
from spectralearth_build.enmap.naming import ProductName, ProductNameError
from spectralearth_build.enmap.product import EnmapProduct
from spectralearth_build.grid import PixelGrid
from spectralearth_build.synth import (
    MANIFEST,
    SynthError,
    SynthParams,
    SynthReport,
    make_archive,
    read_manifest,
    resolve_params,
    site_maps,
)
from spectralearth_build.synth.layout import BROKEN_KINDS, plan_layout
from spectralearth_build.synth.spectra import CLASSES


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthReport:
    out = tmp_path_factory.mktemp("synth") / "archive"
    return make_archive(out, "tiny", seed=0, broken=True, packaging="mixed")


@pytest.fixture(scope="module")
def catalog(archive: SynthReport):  # noqa: ANN201
    return scan(archive.out)


@pytest.fixture(scope="module")
def sources(archive: SynthReport) -> dict:
    found, _ = discover_products(archive.out)
    return {s.product_id: s for s in found}


def _folder_products(report: SynthReport, **where: str) -> list:
    out = []
    for p in report.products:
        if p.delivery != "folder" or p.broken:
            continue
        if all(getattr(p, k) == v for k, v in where.items()):
            out.append(p)
    return out


def _files(product_dir: Path, suffix: str) -> Path:
    (match,) = [f for f in product_dir.iterdir() if f.name.upper().endswith(suffix.upper())]
    return match


# ------------------------------------------------------------------------------------------
def test_manifest_round_trip_and_counts(archive: SynthReport) -> None:
    again = read_manifest(archive.out)
    assert again == archive
    statuses = archive.by_status()
    assert statuses["invalid"] == len(BROKEN_KINDS)
    assert statuses["duplicate"] == 2 and statuses["night"] == 1 and statuses["cloudy"] >= 1
    assert statuses["ok"] >= 15
    assert json.loads((Path(archive.out) / MANIFEST).read_text())["seed"] == 0


def test_names_parse_and_labels_do_not(archive: SynthReport) -> None:
    out = Path(archive.out)
    for p in archive.products:
        assert ProductName.parse(p.product_id).stem == p.product_id
        assert ProductName.parse(p.path.split("!")[-1]).stem == p.product_id
    for p in _folder_products(archive):
        for f in (out / p.path).iterdir():
            assert ProductName.parse(f.name.rsplit("-", 1)[0]).stem == p.product_id
    for lab in archive.labels:
        with pytest.raises(ProductNameError):
            ProductName.parse(Path(lab.path).name)


def test_metadata_parses_and_agrees_with_rasters(archive: SynthReport) -> None:
    wl_ref, fwhm_ref = reference_bands()
    out = Path(archive.out)
    for p in _folder_products(archive):
        d = out / p.path
        meta = parse_metadata(_files(d, "-METADATA.XML").read_bytes(), str(d))
        assert meta.band_count == 224
        np.testing.assert_allclose(meta.wavelengths, wl_ref, atol=1e-3)
        np.testing.assert_allclose(meta.fwhm, fwhm_ref, atol=1e-4)
        assert set(meta.gains) == {0.0001} and set(meta.offsets) == {0.0}
        assert f"EPSG:{meta.epsg}" == p.grid.crs
        assert meta.datatake_id == p.datatake and meta.tile_id == p.tile
        assert meta.revision.replace(".", "") == p.processor_version
        assert meta.cloud_cover == pytest.approx(p.cloud_cover)
        assert meta.snow_cover == pytest.approx(p.snow_cover)
        assert (meta.sun_elevation < 0) == (p.role == "night")
        with rasterio.open(_files(d, "-QL_QUALITY_CLOUD.TIF")) as src:
            cloud = src.read(1)
        with rasterio.open(_files(d, "-QL_QUALITY_CLASSES.TIF")) as src:
            valid = src.read(1) != 3
        assert meta.cloud_cover == pytest.approx(100 * cloud[valid].mean(), abs=0.01)
        # corners are the valid swath's: inside the raster, near its edges
        tr = Transformer.from_crs("EPSG:4326", p.grid.crs, always_xy=True)
        xs, ys = tr.transform(*zip(*meta.corners_lonlat))
        minx, miny, maxx, maxy = p.grid.bounds
        assert minx <= min(xs) <= minx + 200 and maxx - 200 <= max(xs) <= maxx
        assert miny <= min(ys) <= miny + 200 and maxy - 200 <= max(ys) <= maxy


def test_grid_lattice_and_zones(archive: SynthReport) -> None:
    grids: dict[str, list[PixelGrid]] = defaultdict(list)
    for p in archive.products:
        a, b, c, d, e, f = p.grid.transform
        assert (a, b, d, e) == (30.0, 0.0, 0.0, -30.0)
        assert c % 30 == 15 and f % 30 == 15
        grids[p.grid.crs].append(p.grid)
    assert {"EPSG:32632", "EPSG:32633", "EPSG:32615"} <= set(grids)
    for crs, gs in grids.items():
        assert all(g.same_lattice(gs[0]) for g in gs), crs
    assert not grids["EPSG:32632"][0].same_lattice(grids["EPSG:32633"][0])
    # each product sits in the zone of its scene centre
    for p in _folder_products(archive):
        d = Path(archive.out) / p.path
        meta = parse_metadata(_files(d, "-METADATA.XML").read_bytes())
        lon = np.mean([c[0] for c in meta.corners_lonlat])
        assert int((lon + 180) // 6) + 1 == meta.epsg % 100


def test_image_layout_valid_swath_and_nodata_bands(archive: SynthReport) -> None:
    (p,) = [q for q in _folder_products(archive, site="us") if q.tile == 1][:1]
    d = Path(archive.out) / p.path
    with rasterio.open(_files(d, "-SPECTRAL_IMAGE.TIF")) as src:
        assert src.count == 224 and src.dtypes[0] == "int16" and src.nodata == -32768
        assert not src.profile.get("tiled", False)
        assert src.compression.name.lower() == "deflate"
        assert src.interleaving.name.lower() == "band"
        assert src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "2"
        img = src.read()
    with rasterio.open(_files(d, "-QL_QUALITY_CLASSES.TIF")) as src:
        classes = src.read(1)
    valid = classes != 3
    assert 0.6 <= valid.mean() <= 0.8
    assert set(np.unique(classes)) <= {1, 2, 3}
    assert (img[:, ~valid] == -32768).all()
    assert (img[129:135] == -32768).all()  # bands 130..135 (1-based)
    others = np.delete(img, np.s_[129:135], axis=0)
    assert (others[:, valid] != -32768).all()
    # the valid swath is a rotated quadrilateral: its rows start at different columns
    rows = np.flatnonzero(valid.any(axis=1))
    first_col = [np.flatnonzero(valid[r])[0] for r in rows[:: max(1, rows.size // 8)]]
    assert max(first_col) - min(first_col) > 0.1 * valid.shape[1]
    with rasterio.open(_files(d, "-QL_PIXELMASK.TIF")) as src:
        assert src.count == 224 and src.dtypes[0] == "uint8"


def test_catalog_statuses_match_manifest(archive: SynthReport, catalog) -> None:  # noqa: ANN001
    got = {r.product_id: (r.status, r.reason) for r in catalog.itertuples()}
    want = {p.product_id: (p.expected_status, p.expected_reason) for p in archive.products}
    assert got == want
    assert {"ok", "duplicate", "night", "cloudy", "invalid"} == set(catalog["status"])
    broken = {p.broken: got[p.product_id] for p in archive.products if p.broken}
    assert broken == {k: ("invalid", reason) for k, reason in BROKEN_KINDS.items()}


def test_footprints_are_rotated_swaths(catalog) -> None:  # noqa: ANN001
    usable = catalog[catalog["status"] != "invalid"]
    ratio = usable["footprint_area_m2"] / (usable["height"] * usable["width"] * 900.0)
    assert ratio.between(0.55, 0.8).all(), ratio.describe()


def test_mixed_packaging_fully_discovered(archive: SynthReport, sources: dict, catalog) -> None:  # noqa: ANN001
    deliveries = {p.delivery for p in archive.products}
    assert {"zip", "tar.gz", "cog", "no-prefix", "lowercase-metadata", "folder"} <= deliveries
    assert set(catalog["product_id"]) == {p.product_id for p in archive.products}
    tarred = [p for p in archive.products if p.delivery == "tar.gz"]
    assert len(tarred) >= 2
    for p in archive.products:
        if p.delivery == "zip" and not p.broken:
            assert sources[p.product_id].containers[0].kind == "zip"
        if p.delivery == "tar.gz":
            assert [c.kind for c in sources[p.product_id].containers] == ["tar", "zip"]
        if p.delivery == "cog":
            assert sources[p.product_id].file_name("SPECTRAL_IMAGE").endswith("_COG.TIF")
        if p.delivery == "lowercase-metadata":
            assert sources[p.product_id].file_name("METADATA").endswith(".xml")
        if p.delivery == "no-prefix":
            assert not sources[p.product_id].file_name("METADATA").startswith("ENMAP01")
        if p.expected_status == "ok":
            assert catalog.set_index("product_id").loc[p.product_id, "status"] == "ok"
    # pixels read through the archive chain equal the manifest's grid
    product = EnmapProduct(sources[tarred[0].product_id])
    assert product.grid == tarred[0].grid
    assert product.read_image(band_indices=np.array([50])).shape[1:] == tarred[0].grid.shape_yx


def test_revisits_coverage_and_datatake_overlap(archive: SynthReport, catalog) -> None:  # noqa: ANN001
    ok = catalog[catalog["status"] == "ok"]
    for site, crs_prefix in (("europe", "EPSG:3263"), ("us", "EPSG:32615")):
        days = sorted(
            {t.date() for t, c in zip(ok["start_time"], ok["crs"]) if c.startswith(crs_prefix)}
        )
        gaps = [(b - a).days for a, b in zip(days, days[1:])]
        assert min(gaps) >= 4, (site, gaps)
    hot = dict(archive.hotspot_dates)
    assert hot["europe"] >= 6 and hot["us"] >= 3
    cov = {(s, k): a for s, k, a in archive.coverage}
    assert cov[("europe", 6)] > 1.0  # km2: room for several 32-px patches with 6 timestamps
    # consecutive tiles of a datatake overlap by about 14 lines
    by_dt = defaultdict(list)
    for p in archive.products:
        if p.expected_status == "ok":
            by_dt[p.datatake].append(p)
    fp = {r.product_id: r.geometry for r in ok.itertuples()}
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32615", always_xy=True)

    def project(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1]))

    checked = 0
    for tiles in by_dt.values():
        tiles.sort(key=lambda p: p.tile)
        for a, b in zip(tiles, tiles[1:]):
            if a.grid.crs != "EPSG:32615":
                continue
            ga, gb = (shapely.transform(fp[q.product_id], project) for q in (a, b))
            rows = ga.intersection(gb).area / (112 * 30.0) / 30.0
            assert 5 <= rows <= 16, rows
            checked += 1
    assert checked >= 2


def test_labels_native_forms(archive: SynthReport) -> None:
    expect = {
        "corine": ("EPSG:3035", 100.0, 48, {c.corine for c in CLASSES}),
        "cdl": ("EPSG:5070", 30.0, None, {c.cdl for c in CLASSES}),
        "nlcd": ("EPSG:5070", 30.0, 0, {c.nlcd for c in CLASSES}),
    }
    for name, (crs, res, nodata, codes) in expect.items():
        with rasterio.open(archive.label(name)) as src:
            assert src.crs.to_string() == crs
            assert src.res == (res, res)
            assert src.dtypes[0] == "uint8" and src.nodata == nodata
            data = src.read(1)
            if res == 30.0:
                assert src.transform.c % 30 == 15 and src.transform.f % 30 == 15
        present = set(np.unique(data).tolist())
        assert present <= codes, (name, present - codes)
        assert len(present) >= 5
    corine_codes = {c.corine for c in CLASSES}
    assert corine_codes <= set(range(1, 45))


def _sample_labels(label: Path, grid: PixelGrid, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    a, _, c, _, e, f = grid.transform
    x = c + a * (cols + 0.5)
    y = f + e * (rows + 0.5)
    with rasterio.open(label) as src:
        tx, ty = Transformer.from_crs(grid.crs, src.crs.to_string(), always_xy=True).transform(x, y)
        r, cidx = rasterio.transform.rowcol(src.transform, tx, ty)
        return src.read(1)[np.asarray(r), np.asarray(cidx)]


@pytest.mark.parametrize(
    ("site", "label", "water", "forest", "agree"),
    [("us", "cdl", {111}, {141, 142}, 0.8), ("europe", "corine", {41}, {23, 24}, 0.6)],
)
def test_spectra_follow_land_cover(
    archive: SynthReport, site: str, label: str, water: set, forest: set, agree: float
) -> None:
    wl, _ = reference_bands()
    nir, red = int(np.argmin(np.abs(wl - 860))), int(np.argmin(np.abs(wl - 665)))
    swir = int(np.argmin(np.abs(wl - 1650)))
    candidates = [
        p
        for p in _folder_products(archive, site=site, expected_status="ok")
        if p.cloud_cover == 0
        and p.snow_cover == 0
        and 120 <= datetime.fromisoformat(p.start_time).timetuple().tm_yday <= 260
    ]
    for p in candidates:
        d = Path(archive.out) / p.path
        with rasterio.open(_files(d, "-SPECTRAL_IMAGE.TIF")) as src:
            img = src.read([red + 1, nir + 1, swir + 1]).astype(np.float64)
        with rasterio.open(_files(d, "-QL_QUALITY_CLASSES.TIF")) as src:
            classes = src.read(1)
        rows, cols = np.nonzero(classes != 3)
        codes = _sample_labels(archive.label(label), p.grid, rows, cols)
        is_water = np.isin(codes, list(water))
        is_forest = np.isin(codes, list(forest))
        if is_water.sum() > 20 and is_forest.sum() > 20:
            break
    else:
        pytest.fail(f"no clear {site} product shows both water and forest")
    r, n, s = (img[i, rows, cols] for i in range(3))
    # water is dark in the NIR, vegetation shows a red edge
    assert np.median(n[is_water]) < 0.3 * np.median(n[is_forest])
    assert np.median(n[is_forest]) > 2.5 * np.median(r[is_forest])
    assert np.median(s[is_water]) < 300
    # the quality layer's water class is the label's water class (up to label resolution)
    assert np.mean(classes[rows[is_water], cols[is_water]] == 2) > agree


def test_special_acquisitions_look_right(archive: SynthReport) -> None:
    out = Path(archive.out)
    wl, _ = reference_bands()
    b560 = int(np.argmin(np.abs(wl - 560)))
    means = {}
    for role in ("night", "cloudy", "regular", "snow"):
        p = next(
            q
            for q in _folder_products(archive, role=role, site="europe")
            if role != "snow" or q.snow_cover > 5
        )
        with rasterio.open(_files(out / p.path, "-SPECTRAL_IMAGE.TIF")) as src:
            band = src.read(b560 + 1)
        means[role] = band[band != -32768].mean()
        if role == "snow":
            with rasterio.open(_files(out / p.path, "-QL_QUALITY_SNOW.TIF")) as src:
                snow = src.read(1).astype(bool)
            assert band[snow].mean() > 6000
    assert abs(means["night"]) < 100
    assert means["cloudy"] > 4000 > means["regular"]


def test_same_seed_gives_identical_bytes(archive: SynthReport, tmp_path: Path) -> None:
    # written by two processes: the bytes do not depend on the number of workers either
    again = make_archive(
        tmp_path / "again", "tiny", seed=0, broken=True, packaging="mixed", workers=2
    )

    def digests(root: Path) -> dict[str, str]:
        # the first archive has been scanned by other tests: scanning must add no file to it
        return {
            str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*"))
            if f.is_file()
        }

    first, second = digests(Path(archive.out)), digests(Path(again.out))
    assert first.keys() == second.keys()
    assert first == second


def test_other_seed_differs_and_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    args = [
        "synth",
        "--out",
        str(tmp_path / "s1"),
        "--seed",
        "1",
        "--tile-px",
        "64",
        "--bands",
        "24",
        "--tiles",
        "1",
        "--revisits",
        "7",
        "--landscape-scale",
        "0.5",
    ]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "products" in res.output and "ok" in res.output and "MB" in res.output
    report = read_manifest(tmp_path / "s1")
    assert report.params.n_bands == 24 and report.params.tile_px == 64
    assert report.params.landscape_scale == 0.5
    p = _folder_products(report)[0]
    d = tmp_path / "s1" / p.path
    meta = parse_metadata(_files(d, "-METADATA.XML").read_bytes())
    assert meta.band_count == 24
    wl_ref, _ = reference_bands()
    assert set(meta.wavelengths) <= set(wl_ref.tolist())
    assert meta.wavelengths[0] == wl_ref[0] and meta.wavelengths[-1] == wl_ref[-1]
    with rasterio.open(_files(d, "-SPECTRAL_IMAGE.TIF")) as src:
        assert src.count == 24
    before = hashlib.sha256(report.label("cdl").read_bytes()).hexdigest()
    # refuses a non-empty folder, replaces a previous archive on request
    res = runner.invoke(main, args)
    assert res.exit_code != 0 and "not empty" in res.output
    res = runner.invoke(main, [*args, "--overwrite", "--seed", "2"])
    assert res.exit_code == 0, res.output
    report2 = read_manifest(tmp_path / "s1")
    assert report2.seed == 2
    assert hashlib.sha256(report2.label("cdl").read_bytes()).hexdigest() != before
    with pytest.raises(SynthError, match="preset"):
        make_archive(tmp_path / "x", "huge")
    with pytest.raises(SynthError, match="n_bands"):
        make_archive(tmp_path / "x", "tiny", n_bands=0)
    with pytest.raises(SynthError, match="landscape_scale"):
        make_archive(tmp_path / "x", "tiny", landscape_scale=0.0)


def test_landscape_scale_shrinks_the_map() -> None:
    """A smaller scale puts more classes into a 360 m window; the default leaves the manifest."""
    maps = {}
    for scale in (1.0, 0.1):
        params = resolve_params("tiny", landscape_scale=scale)
        maps[scale] = site_maps(plan_layout(params, 0), params, 0)
    assert "landscape_scale" not in resolve_params("tiny").to_dict()
    scaled = resolve_params("tiny", landscape_scale=0.1)
    assert SynthParams.from_dict(scaled.to_dict()) == scaled
    rng = np.random.default_rng(0)
    for site, lc in maps[1.0].items():
        xmin, ymin, xmax, ymax = lc.extent
        corners = rng.uniform((xmin, ymin), (xmax - 360, ymax - 360), (200, 2))
        off = np.arange(12) * 30.0 + 15.0
        gx, gy = np.meshgrid(off, off)
        x, y = corners[:, :1, None] + gx, corners[:, 1:, None] + gy  # (200, 12, 12)
        distinct = {
            scale: np.mean([len(np.unique(c)) for c in m[site].class_at(x, y)])
            for scale, m in maps.items()
        }
        assert distinct[0.1] > distinct[1.0] + 0.5, (site, distinct)
