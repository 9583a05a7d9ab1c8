"""The bad-input matrix: the real ``build-dataset`` on the tiny archive plus bad products.

One archive holds every bad product (each on its own datatake, overlapping good products, so
that a bad product taken for a good one would change the plan and the pixels) and is built once
by the real command, without the right to bypass file permissions.  Each case then checks its
product in the summary and ``report.json``; one test checks that the dataset equals the clean
reference build.  A product that fails only during extraction gets its own build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from robustkit import (
    assert_same_dataset,
    broken_archive,
    clone_product,
    config_file,
    copy_tree,
    good_archive,
    manifest_products,
    reference_build,
    run_build,
    view_pixels,
)

from spectralearth_build import open_dataset
from spectralearth_build.build import EXIT_INVALID_PRODUCTS
from spectralearth_build.catalog import read_catalog


# -- making bad products ----------------------------------------------------------------------
def file_of(folder: Path, suffix: str) -> Path:
    return next(f for f in folder.iterdir() if f.name.endswith(f"-{suffix}.TIF"))


def zip_product(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{folder.name}/{f.name}")
    return archive


def rewrite_raster(path: Path, fill: int, shape: tuple[int, int] | None = None) -> None:
    with rasterio.open(path) as src:
        profile = src.profile
    if shape is not None:
        profile.update(height=shape[0], width=shape[1])
    data = np.full((profile["count"], profile["height"], profile["width"]), fill, profile["dtype"])
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def drop_xml_element(folder: Path, tag: str, count: int = 1) -> None:
    xml = next(folder.glob("*-METADATA.XML"))
    text = xml.read_text()
    for _ in range(count):
        text = re.sub(rf"<{tag}\b[^>]*>.*?</{tag}>", "", text, count=1, flags=re.S)
    xml.write_text(text)


def corrupt_band(image: Path, band: int) -> None:
    """Overwrite the compressed strips of one band (GeoTIFF, band interleaved) with garbage."""
    spans = []
    with rasterio.open(image) as src:
        for row in range(0, src.height):
            off = src.get_tag_item(f"BLOCK_OFFSET_0_{row}", "TIFF", bidx=band)
            if off is None:
                break
            size = src.get_tag_item(f"BLOCK_SIZE_0_{row}", "TIFF", bidx=band)
            spans.append((int(off), int(size)))
    assert spans, "no strip offsets"
    rng = np.random.default_rng(0)
    with open(image, "r+b") as f:
        for off, size in spans:
            f.seek(off)
            f.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())


def pax_tar(member: Path, archive: Path, inner: str) -> None:
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.add(member, arcname=inner)


# -- the archive ------------------------------------------------------------------------------
SYNTH_BROKEN = {
    "zero-byte image": "zero-byte file",
    "truncated image": "truncated or corrupt image",
    "malformed metadata": "metadata malformed",
    "wrong band count": "wrong band count",
    "no CRS": "no CRS",
    "missing metadata": "metadata missing",
    "zero-byte zip": "unreadable archive",
}
MADE = {
    "corrupt image": "spectral_image unreadable",
    "corrupt zip": "unreadable archive",
    "corrupt tar.gz": "unreadable archive",
    "metadata missing fields": "metadata malformed",
    "wavelengths disagree with bands": "wrong band count",
    "all nodata": "no valid pixels",
    "all nodata, classes say land": "no valid pixels",
    "quality layer size": "quality layer size mismatch",
    "unreadable permissions": "spectral_image unreadable",
}
DUPLICATES = ("two folders", "folder and zip")


def _as_unprivileged() -> list[str]:
    """A command prefix without the right to bypass file permissions (when run as root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot test unreadable files")
    return [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict:
    """The archive with every bad product, its build and what went where."""
    root = tmp_path_factory.mktemp("matrix")
    good, broken = good_archive(tmp_path_factory), broken_archive(tmp_path_factory)
    tiles = copy_tree(good, root / "tiles")
    products = manifest_products(broken)
    where: dict[str, str] = {}
    for p in products:
        if p["broken"]:
            src = broken / p["path"]
            (shutil.copytree if src.is_dir() else shutil.copyfile)(src, tiles / p["path"])
            where[p["broken"]] = p["product_id"]
    us_ok = [
        p
        for p in products
        if p["site"] == "us" and p["expected_status"] == "ok" and p["delivery"] == "folder"
    ]
    template = tiles / us_ok[0]["path"]
    scratch = root / "scratch"
    for n, case in enumerate(MADE):
        if case in ("corrupt zip", "corrupt tar.gz"):
            folder = clone_product(template, scratch, n)
            z = zip_product(folder, scratch / f"{folder.name}.ZIP")
            if case == "corrupt zip":
                data = z.read_bytes()
                (tiles / z.name).write_bytes(data[: len(data) // 2])
            else:
                pax_tar(z, scratch / "d.tar.gz", z.name)
                data = (scratch / "d.tar.gz").read_bytes()
                (tiles / "delivery_corrupt.tar.gz").write_bytes(data[: len(data) // 2])
            where[case] = folder.name if case == "corrupt zip" else "delivery_corrupt.tar.gz"
            continue
        folder = clone_product(template, tiles, n)
        where[case] = folder.name
        if case == "corrupt image":
            image = file_of(folder, "SPECTRAL_IMAGE")
            data = bytearray(image.read_bytes())
            data[:64] = bytes(64)
            image.write_bytes(bytes(data))
        elif case == "metadata missing fields":
            drop_xml_element(folder, "startTime")
        elif case == "wavelengths disagree with bands":
            drop_xml_element(folder, "bandID", count=3)
        elif case == "all nodata":
            rewrite_raster(file_of(folder, "SPECTRAL_IMAGE"), -32768)
            rewrite_raster(file_of(folder, "QL_QUALITY_CLASSES"), 3)  # background everywhere
        elif case == "all nodata, classes say land":  # the image lost its pixels, not its mask
            rewrite_raster(file_of(folder, "SPECTRAL_IMAGE"), -32768)
        elif case == "quality layer size":
            with rasterio.open(file_of(folder, "QL_QUALITY_CLOUD")) as src:
                h, w = src.shape
            rewrite_raster(file_of(folder, "QL_QUALITY_CLOUD"), 0, (h - 7, w))
        elif case == "unreadable permissions":
            file_of(folder, "SPECTRAL_IMAGE").chmod(0)
    # the same product twice: in another folder, and as a ZIP beside its folder
    used = set(open_dataset(reference_build(tmp_path_factory)).views["product"])
    with_views = [p for p in us_ok[1:] if p["product_id"] in used]
    dup_a, dup_b = tiles / with_views[0]["path"], tiles / with_views[1]["path"]
    shutil.copytree(dup_a, tiles / "again" / dup_a.name)
    zip_product(dup_b, tiles / f"{dup_b.name}.ZIP")
    where["two folders"], where["folder and zip"] = dup_a.name, dup_b.name
    # a good product moved into a PAX tar.gz with a name longer than 100 characters
    moved = tiles / with_views[2]["path"]
    z = zip_product(moved, scratch / f"{moved.name}.ZIP")
    long_inner = f"{'a_rather_long_delivery_folder_name/' * 3}{z.name}"
    pax_tar(z, tiles / "delivery_pax.tar.gz", long_inner)
    shutil.rmtree(moved)
    where["pax"] = moved.name

    out = root / "out"
    res = subprocess.run(
        [*_as_unprivileged(), *_build_args(tiles, out, config_file(tmp_path_factory))],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    return {"tiles": tiles, "out": out, "res": res, "where": where}


def _build_args(tiles: Path, out: Path, config: Path) -> list[str]:
    from robustkit import build_cmd

    return build_cmd(tiles, out, config, "--workers", "0")


def test_the_build_completes_with_problems(matrix):
    res = matrix["res"]
    assert res.returncode == EXIT_INVALID_PRODUCTS, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert (matrix["out"] / "_COMPLETE").exists()


def test_good_products_are_intact(matrix, tmp_path_factory):
    assert_same_dataset(matrix["out"], reference_build(tmp_path_factory))


@pytest.mark.parametrize("case", sorted(SYNTH_BROKEN) + sorted(MADE))
def test_bad_product_is_named_with_its_reason(case, matrix):
    reason = {**SYNTH_BROKEN, **MADE}[case]
    pid = matrix["where"][case]
    report = json.loads((matrix["out"] / "report.json").read_text())
    entries = [p for p in report["invalid_products"] if pid in p["product"]]
    # one entry; a cut tar.gz may also name the ZIP it breaks off in (same reason)
    assert len(entries) == 1 or case == "corrupt tar.gz", (pid, report["invalid_products"])
    for e in entries:
        assert e["reason"].startswith(reason) and "\n" not in e["reason"] + e["detail"], e
    lines = [ln for ln in matrix["res"].stdout.splitlines() if pid in ln]
    assert len(lines) == len(entries) >= 1, matrix["res"].stdout
    assert all(reason in ln for ln in lines), lines


@pytest.mark.parametrize("case", DUPLICATES)
def test_the_same_product_twice_is_read_once(case, matrix):
    pid = matrix["where"][case]
    catalog = read_catalog(matrix["out"] / "catalog.parquet")
    rows = catalog[catalog["product_id"] == pid]
    assert sorted(rows["status"]) == ["duplicate", "ok"]
    assert rows.loc[rows["status"] == "duplicate", "reason"].item() == "same product found twice"
    assert "same product found twice" in matrix["res"].stdout


def test_a_pax_tar_gz_with_long_names_is_read(matrix):
    pid = matrix["where"]["pax"]
    catalog = read_catalog(matrix["out"] / "catalog.parquet")
    row = catalog[catalog["product_id"] == pid]
    assert list(row["status"]) == ["ok"] and "delivery_pax.tar.gz" in row["location"].item()
    assert pid in set(open_dataset(matrix["out"]).views["product"])


def test_a_product_failing_during_extraction_is_reported(tmp_path_factory, tmp_path):
    """A read error in a later band: the unit goes on with the other products."""
    ref = reference_build(tmp_path_factory)
    views = open_dataset(ref).views
    victim = views["product"].value_counts().index[0]  # the product with the most views
    tiles = copy_tree(good_archive(tmp_path_factory), tmp_path / "tiles")
    corrupt_band(file_of(tiles / victim, "SPECTRAL_IMAGE"), band=20)
    out = tmp_path / "out"
    res = run_build(tiles, out, config_file(tmp_path_factory), "--workers", "0")
    assert res.returncode == EXIT_INVALID_PRODUCTS, res.stdout + res.stderr
    report = json.loads((out / "report.json").read_text())
    assert [p["product"] for p in report["invalid_products"]] == [victim]
    assert report["invalid_products"][0]["reason"] == "read failed during extraction"
    assert victim in res.stdout
    got, want = view_pixels(out), view_pixels(ref)
    assert set(got) == {k for k in want if k[1] != victim}
    for key, image in got.items():
        np.testing.assert_array_equal(image, want[key])
    dropped = open_dataset(out).path / "dropped_views.parquet"
    import pandas as pd

    d = pd.read_parquet(dropped)
    assert (d.loc[d["product"] == victim, "reason"] == "source read failed").sum() == (
        views["product"] == victim
    ).sum()
