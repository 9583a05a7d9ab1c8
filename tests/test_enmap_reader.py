"""EnMAP L2A names, METADATA.XML, discovery in folders/archives and valid-data footprints."""

from __future__ import annotations

import io
import shutil
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.features
from productkit import STEM
from productkit import make_meta as _meta
from productkit import write_product as _write_product
from productkit import zip_folder as _zip_folder
from rasterio.transform import from_origin
from shapely.geometry import box

from spectralearth_build.bands import BandSelection
from spectralearth_build.enmap.discovery import discover_products
from spectralearth_build.enmap.footprint import valid_footprint
from spectralearth_build.enmap.metadata import (
    MetadataError,
    ProductMetadata,
    metadata_to_xml,
    parse_metadata,
    projection_to_epsg,
)
from spectralearth_build.enmap.naming import ProductName, ProductNameError
from spectralearth_build.enmap.product import EnmapProduct, ProductError
from spectralearth_build.grid import Window

REF_STEM = "ENMAP01-____L2A-DT0000326721_20170626T102020Z_001_V000204_20200406T201930Z"


# -- names ---------------------------------------------------------------------------------------
def test_parse_full_name():
    n = ProductName.parse(f"{STEM}-SPECTRAL_IMAGE.TIF")
    assert n.datatake == 1049
    assert n.start_time == datetime(2022, 6, 12, 10, 57, 35, tzinfo=timezone.utc)
    assert n.tile == 1
    assert n.processor_version == "010111"
    assert n.version_dotted == "01.01.11"
    assert n.processing_time == datetime(2022, 6, 13, 10, 20, 34, tzinfo=timezone.utc)
    assert n.stem == STEM


def test_parse_variants():
    short = STEM.removeprefix("ENMAP01-____L2A-")
    assert ProductName.parse(f"{short}-METADATA.xml").stem == STEM
    assert ProductName.parse(f"{STEM}.ZIP").stem == STEM
    assert ProductName.suffix_of(f"{STEM}-SPECTRAL_IMAGE_COG.TIF") == "SPECTRAL_IMAGE_COG"
    pre = ProductName.parse(f"{REF_STEM}-METADATA.XML")
    assert pre.datatake == 326721 and pre.datatake_digits == 10
    nine = ProductName.parse(
        "ENMAP01-____L2A-DT000326721_20170626T102020Z_001_V000204_20200406T201930Z"
    )
    assert nine.datatake_digits == 9 and nine.stem.startswith("ENMAP01-____L2A-DT000326721_")
    with pytest.raises(ProductNameError, match="not an EnMAP L2A product name"):
        ProductName.parse("S2A_MSIL2A_20220612T105735.SAFE")


def test_versions_order_and_acquisition_key():
    old = ProductName.parse(STEM.replace("V010111", "V010100"))
    new = ProductName.parse(STEM)
    assert old.acquisition_key == new.acquisition_key
    assert old.processor_version < new.processor_version


# -- metadata ------------------------------------------------------------------------------------
def test_real_metadata_parses(ref_metadata_path: Path):
    meta = parse_metadata(ref_metadata_path.read_bytes(), str(ref_metadata_path))
    assert meta.band_count == 218
    assert len(meta.wavelengths) == len(meta.fwhm) == len(meta.gains) == 218
    assert meta.wavelengths[0] == pytest.approx(423.03)
    assert meta.wavelengths[-1] == pytest.approx(2438.6)
    assert meta.fwhm[0] == pytest.approx(6.93)
    assert set(meta.gains) == {0.0001} and set(meta.offsets) == {0.0}
    assert meta.epsg == 32632
    assert meta.datatake_id == 326721 and meta.tile_id == 1 and meta.number_of_tiles == 3
    assert meta.revision == "00.02.04"
    assert meta.sun_elevation == pytest.approx(63.038384)
    assert meta.start_time == datetime(2017, 6, 26, 10, 20, 20, 999936, tzinfo=timezone.utc)
    assert meta.stop_time > meta.start_time
    assert meta.cloud_cover == 0 and meta.snow_cover == 0
    # corners: UL, UR, LR, LL, with the closing duplicate and the centre dropped
    assert len(meta.corners_lonlat) == 4
    assert meta.corners_lonlat[0] == pytest.approx((10.7960234, 47.7875252))
    assert meta.corners_lonlat[2] == pytest.approx((11.0813528, 47.4554646))
    # wavelengths are in file order and not sorted by construction: still all in the EnMAP range
    assert 400 < min(meta.wavelengths) and max(meta.wavelengths) < 2500


def test_metadata_round_trip():
    meta = _meta()
    xml = metadata_to_xml(meta, (10.85, 47.05), [f"{STEM}-METADATA.XML"], 1259, 1216)
    back = parse_metadata(xml, "x")
    assert back == meta
    assert ProductMetadata.from_dict(meta.to_dict()) == meta


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s[: len(s) // 2], "not well-formed"),
        (lambda s: b"", "empty"),
        (
            lambda s: s.replace(b"<sunElevationAngle>", b"<sunElevationAngleX>").replace(
                b"</sunElevationAngle>", b"</sunElevationAngleX>"
            ),
            "sunElevationAngle/center",
        ),
        (
            lambda s: s.replace(b"<startTime>", b"<startTime>not a time").replace(
                b"not a time2022", b"not a time"
            ),
            "malformed time",
        ),
        (
            lambda s: s.replace(b"<cloudCover>3.5", b"<cloudCover>lots"),
            "cloudCover> is not a number",
        ),
        (lambda s: s.replace(b"level_X", b"level_Y"), "expected <level_X>"),
    ],
)
def test_malformed_metadata_names_file_and_element(mutate, match):
    xml = metadata_to_xml(_meta(), (10.85, 47.05), [], 10, 10)
    with pytest.raises(MetadataError, match=match) as info:
        parse_metadata(mutate(xml), "/data/P/METADATA.XML")
    assert "/data/P/METADATA.XML" in str(info.value)


def test_projection_to_epsg():
    assert projection_to_epsg("UTM_Zone32_North") == 32632
    assert projection_to_epsg("UTM_Zone19_South") == 32719
    with pytest.raises(ValueError, match="unknown map projection"):
        projection_to_epsg("LAEA_Europe")


# -- band selection ------------------------------------------------------------------------------
def test_default_band_selection_is_202():
    sel = BandSelection()
    kept = sel.kept_indices
    assert sel.count == 202
    assert 125 in kept and 126 not in kept and 140 not in kept and 141 in kept
    assert 159 in kept and 160 not in kept and 166 not in kept and 167 in kept
    # bands 130..135 (1-based), all nodata in real products, are dropped
    assert not set(range(129, 135)) & set(kept.tolist())
    with pytest.raises(ValueError, match="outside"):
        BandSelection(100, ((90, 120),))


# -- footprints ----------------------------------------------------------------------------------
def test_footprint_of_real_quality_raster(ref_classes_path: Path):
    with rasterio.open(ref_classes_path) as src:
        classes = src.read(1)
        transform = src.transform
        bounds = box(*src.bounds)
    valid = classes != 3
    fp = valid_footprint(valid, transform, 1.5)
    assert fp is not None and fp.is_valid
    frac = fp.area / bounds.area
    assert 0.65 < frac < 0.72, frac  # about 70% of the raster, a little less than the valid pixels
    assert fp.area <= valid.sum() * 900
    # a rotated quadrilateral: few vertices, nearly equal to its minimum rotated rectangle,
    # whose sides are not axis-parallel
    assert len(fp.exterior.coords) - 1 <= 16
    rect = fp.minimum_rotated_rectangle
    assert fp.area / rect.area > 0.95
    (x0, y0), (x1, y1) = list(rect.exterior.coords)[:2]
    angle = np.degrees(np.arctan2(y1 - y0, x1 - x0)) % 90
    assert 5 < angle < 85
    # never larger than the real valid area: rasterise the footprint and compare pixel by pixel
    inside = rasterio.features.geometry_mask([fp], classes.shape, transform, invert=True)
    assert not (inside & ~valid).any()


def test_footprint_stays_inside_irregular_masks():
    rng = np.random.default_rng(3)
    t = from_origin(500015.0, 5000015.0, 30, 30)
    for _ in range(5):
        yy, xx = np.mgrid[0:200, 0:220]
        cx, cy = rng.uniform(80, 140, 2)
        ang = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
        v = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        mask = (np.abs(u) < rng.uniform(30, 80)) & (np.abs(v) < rng.uniform(30, 80))
        mask &= rng.random(mask.shape) > 0.002  # scattered holes of single pixels
        fp = valid_footprint(mask, t, 1.5)
        assert fp is not None
        inside = rasterio.features.geometry_mask(
            [fp], mask.shape, t, invert=True, all_touched=False
        )
        # pixel centres inside the footprint are valid pixels
        assert not (inside & ~mask).any()


def test_footprint_none_for_empty_mask():
    assert valid_footprint(np.zeros((10, 10), bool), (30, 0, 15, 0, -30, 315)) is None


# -- discovery and product reading ---------------------------------------------------------------
def test_discovery_finds_every_delivery_form(tmp_path: Path):
    stems = [STEM.replace("DT0000001049", f"DT00000010{i:02d}") for i in range(6)]
    stage = tmp_path / "stage"
    root = tmp_path / "archive"
    root.mkdir()
    # 0: product folder; 1: flat files beside other files; 2: ZIP; 3+4: tar.gz of two ZIPs;
    # 5: no prefix, lower-case metadata, COG image, in a folder named like the product
    _write_product(root / stems[0], stems[0])
    _write_product(root / "flat", stems[1])
    _write_product(stage / stems[2], stems[2])
    _zip_folder(stage / stems[2], root / f"{stems[2]}.ZIP")
    with tarfile.open(root / "delivery.tar.gz", "w:gz") as tar:
        for s in stems[3:5]:
            _write_product(stage / s, s)
            data = _zip_folder(stage / s, stage / f"{s}.ZIP")
            info = tarfile.TarInfo(f"{s}.ZIP")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    _write_product(root / "misc" / stems[5], stems[5], prefix=False, lower_meta=True, cog=True)
    (root / "flat" / "README.txt").write_text("not a product")
    (root / "broken.ZIP").write_bytes(b"")

    sources, problems = discover_products(root)
    assert sorted(s.product_id for s in sources) == sorted(stems)
    assert [p.path for p in problems] == [str(root / "broken.ZIP")]
    assert "unreadable zip archive" in problems[0].reason
    by_id = {s.product_id: s for s in sources}
    assert by_id[stems[3]].gdal_path("SPECTRAL_IMAGE").startswith("/vsizip//vsitar/")
    assert by_id[stems[2]].gdal_path("METADATA").startswith("/vsizip/")
    assert by_id[stems[5]].file_name("SPECTRAL_IMAGE").endswith("SPECTRAL_IMAGE_COG.TIF")

    sel = BandSelection()
    for s in sources:
        product = EnmapProduct(s)
        assert product.metadata.band_count == 224
        grid = product.check(sel)
        assert grid.crs == "EPSG:32632" and grid.shape_yx == (40, 40)
        img = product.read_image(band_indices=sel.kept_indices[:3])
        assert img.shape == (3, 40, 40) and img.dtype == np.int16
        sub, wl = product.read_selected(sel, Window(5, 6, 10, 12))
        assert sub.shape == (202, 10, 12) and wl.shape == (202,)
        np.testing.assert_array_equal(wl, product.wavelengths[sel.kept_indices])
        assert not ((wl > 1340) & (wl < 1450)).any()  # the water-vapour band is dropped
        valid = product.valid_mask()
        assert valid.any() and not valid.all()
        np.testing.assert_array_equal(
            product.read_image(band_indices=np.array([0]))[0] != -32768, valid
        )
        fp = product.footprint()
        assert 0 < fp.area < 40 * 40 * 900


def test_product_errors_name_product_and_reason(tmp_path: Path):
    good = tmp_path / STEM
    _write_product(good, STEM)
    sel = BandSelection()

    wrong = tmp_path / "wrong" / STEM
    _write_product(wrong, STEM, bands=200)
    with pytest.raises(ProductError, match="wrong band count") as info:
        EnmapProduct(discover_products(wrong)[0][0]).check(sel)
    assert str(wrong) in str(info.value)

    zero = tmp_path / "zero" / STEM
    shutil.copytree(good, zero)
    (zero / f"{STEM}-SPECTRAL_IMAGE.TIF").write_bytes(b"")
    with pytest.raises(ProductError, match="zero-byte file"):
        EnmapProduct(discover_products(zero)[0][0]).check(sel)

    trunc = tmp_path / "trunc" / STEM
    shutil.copytree(good, trunc)
    img = trunc / f"{STEM}-SPECTRAL_IMAGE.TIF"
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProductError, match="truncated|unreadable"):
        EnmapProduct(discover_products(trunc)[0][0]).check(sel)

    nometa = tmp_path / "nometa" / STEM
    shutil.copytree(good, nometa)
    (nometa / f"{STEM}-METADATA.XML").unlink()
    with pytest.raises(ProductError, match="metadata missing"):
        _ = EnmapProduct(discover_products(nometa)[0][0]).metadata
