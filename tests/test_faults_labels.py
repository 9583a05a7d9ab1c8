"""Labels and export: bad label inputs, runs killed part-way, a file size limit.

Every case works on a copy of the robustness reference build (:mod:`robustkit`) and its label
rasters.  A bad label input is one ``Error:`` line, exit status 1, before any label is paired:
the dataset is left byte for byte as it was.  A ``labels`` or ``export`` killed (SIGKILL) inside
its work, or stopped by ``RLIMIT_FSIZE``, is rerun with the same command and must give exactly
the files of an undisturbed run.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from robustkit import (
    copy_tree,
    good_archive,
    reference_build,
    run_cli,
    run_killed,
    tmpfs_prefix,
    tree_bytes,
)

from spectralearth_build.cli import main

CORINE = "CLC2018_synthetic_100m_EPSG3035.tif"
CDL = "CDL_2023_synthetic_30m_EPSG5070.tif"
UNIT_MARKERS = "labels/units"
"""Label unit markers hold timings: left out of the comparisons (their presence is checked)."""


@pytest.fixture(scope="module")
def label_dir(tmp_path_factory) -> Path:
    return good_archive(tmp_path_factory) / "labels"


def labels_args(dataset: Path, corine: Path, cdl: Path) -> list[str]:
    return [
        "labels",
        "--dataset",
        str(dataset),
        "--labels",
        f"corine={corine}",
        "--labels",
        f"cdl={cdl}",
        "--shard-locations",
        "4",
        "--block-km",
        "1",
        "--workers",
        "0",
        "--quiet",
    ]


def export_args(dataset: Path, dest: Path) -> list[str]:
    return ["export", "--dataset", str(dataset), "--out", str(dest), "--workers", "0", "--quiet"]


def invoke(args: list[str]):  # noqa: ANN201
    return CliRunner().invoke(main, args)


def dataset_files(out: Path) -> dict:
    """The dataset's files (zarr.json parsed: the same attributes may be written in another
    order by a resumed run), unit markers left out."""
    files = tree_bytes(out, skip=(UNIT_MARKERS,))
    return {k: json.loads(v) if k.endswith("zarr.json") else v for k, v in files.items()}


@pytest.fixture(scope="module")
def paired(tmp_path_factory, label_dir) -> Path:
    """The reference build labelled by an undisturbed ``labels`` run."""
    out = copy_tree(reference_build(tmp_path_factory), tmp_path_factory.mktemp("lab") / "ds")
    res = invoke(labels_args(out, label_dir / CORINE, label_dir / CDL))
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, paired) -> Path:
    dest = tmp_path_factory.mktemp("exp") / "se"
    res = invoke(export_args(paired, dest))
    assert res.exit_code == 0, res.output
    return dest


@pytest.fixture
def dataset(tmp_path_factory, tmp_path) -> Path:
    return copy_tree(reference_build(tmp_path_factory), tmp_path / "ds")


# -- bad label inputs -------------------------------------------------------------------------
def _rewrite(src: Path, dst: Path, **changes) -> Path:
    with rasterio.open(src) as f:
        profile, data = f.profile, f.read()
    profile.update(changes)
    with rasterio.open(dst, "w", **profile) as f:
        f.write(data)
    return dst


def _shift(t, dx: float):  # noqa: ANN001, ANN202
    from affine import Affine

    return Affine(t.a, t.b, t.c + dx, t.d, t.e, t.f)


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) * 2 // 3])
    return dst


BAD_LABELS = {
    "no overlap": (lambda s, d: _rewrite(s, d, transform=_shift_of(s)), ("covers none of the",)),
    "wrong CRS": (lambda s, d: _rewrite(s, d, crs="EPSG:3035"), ("covers none of the",)),
    "no CRS": (lambda s, d: _rewrite(s, d, crs=None), ("label raster has no CRS",)),
    "zero-byte file": (lambda s, d: d.write_bytes(b"") or d, ("not a readable raster",)),
    "truncated GeoTIFF": (_truncated, ("truncated or corrupt", "not a readable raster")),
}
"""How to damage the CDL raster, and what the error says (one of)."""


def _shift_of(src: Path):  # noqa: ANN202
    with rasterio.open(src) as f:
        return _shift(f.transform, 5e6)


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_a_bad_label_input_is_one_error_and_changes_nothing(case, dataset, label_dir, tmp_path):
    make, message = BAD_LABELS[case]
    bad = make(label_dir / CDL, tmp_path / "bad.tif")
    before = tree_bytes(dataset)
    res = invoke(labels_args(dataset, label_dir / CORINE, bad))  # a good label first
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert str(bad) in lines[0] and any(m in lines[0] for m in message), lines[0]
    assert tree_bytes(dataset) == before  # not even the good label was paired


def test_a_label_corrupt_inside_is_one_error_naming_it(dataset, label_dir, tmp_path):
    """Strips overwritten with garbage past a readable last block: found while pairing."""
    bad = shutil.copyfile(label_dir / CDL, tmp_path / "bad.tif")
    with rasterio.open(bad) as f:
        spans = [
            (
                int(f.get_tag_item(f"BLOCK_OFFSET_0_{r}", "TIFF", bidx=1)),
                int(f.get_tag_item(f"BLOCK_SIZE_0_{r}", "TIFF", bidx=1)),
            )
            for r in range(f.height // f.block_shapes[0][0] - 1)
        ]
    rng = np.random.default_rng(0)
    with open(bad, "r+b") as f:
        for off, size in spans:
            f.seek(off)
            f.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    res = invoke(labels_args(dataset, label_dir / CORINE, bad))
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and str(bad) in lines[-1], res.output
    assert "label raster unreadable at rows" in lines[-1] and "Traceback" not in res.output


# -- killed part-way and rerun ----------------------------------------------------------------
LABEL_KILLS = {
    "unit": ("spectralearth_build.labels.store", "run_label_unit", 3, "after"),
    "table": ("spectralearth_build.labels.store", "_write_table", 1, "after"),
    "splits": ("spectralearth_build.labels.tasks", "update_tasks", 1, "before"),
}


@pytest.mark.parametrize("point", list(LABEL_KILLS))
def test_labels_killed_part_way_then_rerun_is_identical(point, dataset, paired, label_dir):
    args = labels_args(dataset, label_dir / CORINE, label_dir / CDL)
    res = run_killed(args, LABEL_KILLS[point])
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    assert not list(dataset.rglob("*.tmp"))  # markers and tables are whole or absent
    for marker in dataset.glob(f"{UNIT_MARKERS}/*/unit-*.json"):
        json.loads(marker.read_text())
    res = invoke(args)
    assert res.exit_code == 0, res.output
    assert dataset_files(dataset) == dataset_files(paired)


def test_export_killed_part_way_then_rerun_is_identical(paired, exported, tmp_path):
    dest = tmp_path / "se"
    point = ("spectralearth_build.labels.export", "_write_tif", 5, "after")  # inside a unit
    res = run_killed(export_args(paired, dest), point)
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    assert (dest / "export.json").exists() and not (dest / "_COMPLETE").exists()
    assert not list(dest.rglob("*.tmp")) and len(list(dest.rglob("*.tif"))) == 5
    res = invoke(export_args(paired, dest))
    assert res.exit_code == 0, res.output
    assert tree_bytes(dest) == tree_bytes(exported)
    # the same folder with other options is refused
    res = invoke([*export_args(paired, dest), "--scheme", "random"])
    assert res.exit_code == 1 and "with other options" in res.output, res.output


# -- a file size limit ------------------------------------------------------------------------
def _limit_file_size(limit: int):  # noqa: ANN202
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


def _one_write_error(res, where: Path, rerun: str) -> str:  # noqa: ANN001
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr.strip()
    assert err.startswith(f"Error: cannot write {where}") and len(err.splitlines()) == 1, err
    assert "File too large" in err and f"free space and {rerun}" in err
    return err


def test_labels_past_a_file_size_limit_then_rerun_is_identical(dataset, paired, label_dir):
    args = labels_args(dataset, label_dir / CORINE, label_dir / CDL)
    res = run_cli(args, preexec_fn=_limit_file_size(5_000))
    _one_write_error(res, dataset, "rerun the same command")  # a label file or the attributes
    assert not list(dataset.rglob("*.tmp"))
    assert (dataset / UNIT_MARKERS / "corine").exists()  # it stopped inside the work
    res = invoke(args)
    assert res.exit_code == 0, res.output
    assert dataset_files(dataset) == dataset_files(paired)


def test_export_past_a_file_size_limit_then_rerun_is_identical(paired, exported, tmp_path):
    dest = tmp_path / "se"
    limit = max(f.stat().st_size for f in (exported / "enmap").rglob("*.tif")) - 1
    res = run_cli(export_args(paired, dest), preexec_fn=_limit_file_size(limit))
    _one_write_error(res, dest / "enmap", "rerun the same export")
    assert not list(dest.rglob("*.tmp")) and not (dest / "_COMPLETE").exists()
    res = invoke(export_args(paired, dest))
    assert res.exit_code == 0, res.output
    assert tree_bytes(dest) == tree_bytes(exported)


# -- a full file system -----------------------------------------------------------------------
EXPORT_FILL_AND_RESUME = """
set -u
mount -t tmpfs -o size=1m tmpfs {mnt}
{export} > {logs}/1.out 2> {logs}/1.err; echo $? > {logs}/1.rc
find {mnt}/se -name '*.tmp' > {logs}/tmp_files
mount -o remount,size=256m {mnt}
{export} > {logs}/2.out 2> {logs}/2.err; echo $? > {logs}/2.rc
cp -a {mnt}/se {dest}
"""


def test_export_to_a_full_file_system_then_rerun_is_identical(paired, exported, tmp_path):
    """A real ENOSPC: the export writes to a 1 MiB tmpfs, fails, and completes once larger."""
    prefix = tmpfs_prefix()
    mnt, logs, dest = tmp_path / "mnt", tmp_path / "logs", tmp_path / "se"
    mnt.mkdir()
    logs.mkdir()
    cmd = [sys.executable, "-c", "from spectralearth_build.cli import main; main()"]
    export = shlex.join([*cmd, *export_args(paired, mnt / "se")])
    script = EXPORT_FILL_AND_RESUME.format(mnt=mnt, export=export, logs=logs, dest=dest)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([*prefix, "bash", "-c", script], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    err = (logs / "1.err").read_text().strip()
    assert (logs / "1.rc").read_text().strip() == "1", err
    assert err.startswith(f"Error: cannot write {mnt / 'se'}/") and len(err.splitlines()) == 1
    assert "No space left on device" in err and "rerun the same export" in err, err
    assert not (logs / "tmp_files").read_text().strip()
    assert (logs / "2.rc").read_text().strip() == "0", (logs / "2.err").read_text()
    assert tree_bytes(dest) == tree_bytes(exported)


LABELS_FILL_AND_RESUME = """
set -eu
mount -t tmpfs -o size=64m tmpfs {mnt}
cp -a {src} {mnt}/ds
dd if=/dev/zero of={mnt}/filler bs=64k 2> /dev/null || true
truncate -s -{spare_kib}K {mnt}/filler
set +e
{labels} > {logs}/1.out 2> {logs}/1.err; echo $? > {logs}/1.rc
find {mnt}/ds -name '*.tmp' > {logs}/tmp_files
rm {mnt}/filler
{labels} > {logs}/2.out 2> {logs}/2.err; echo $? > {logs}/2.rc
cp -a {mnt}/ds {dest}
"""


def test_labels_on_a_full_file_system_then_rerun_is_identical(
    tmp_path_factory, paired, label_dir, tmp_path
):
    """A real ENOSPC: the dataset on a tmpfs filled up but for 40 KiB (the labels need more);
    freeing space (removing the filler) and rerunning completes it identically."""
    prefix = tmpfs_prefix()
    mnt, logs, dest = tmp_path / "mnt", tmp_path / "logs", tmp_path / "ds"
    mnt.mkdir()
    logs.mkdir()
    cmd = [sys.executable, "-c", "from spectralearth_build.cli import main; main()"]
    labels = shlex.join([*cmd, *labels_args(mnt / "ds", label_dir / CORINE, label_dir / CDL)])
    script = LABELS_FILL_AND_RESUME.format(
        src=reference_build(tmp_path_factory),
        spare_kib=40,
        mnt=mnt,
        labels=labels,
        logs=logs,
        dest=dest,
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([*prefix, "bash", "-c", script], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    err = (logs / "1.err").read_text().strip()
    assert (logs / "1.rc").read_text().strip() == "1", err
    assert err.startswith(f"Error: cannot write {mnt / 'ds'}/") and len(err.splitlines()) == 1
    assert "No space left on device" in err and "rerun the same command" in err, err
    assert not (logs / "tmp_files").read_text().strip()
    assert (logs / "2.rc").read_text().strip() == "0", (logs / "2.err").read_text()
    assert dataset_files(dest) == dataset_files(paired)
