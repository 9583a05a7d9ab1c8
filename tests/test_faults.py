"""Faults survived: a worker killed during extraction, the build killed and resumed, a full disk.

Every case ends with the dataset compared with the clean reference build of the same archive
(:mod:`robustkit`): resuming or retrying must give exactly the same dataset.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from distributed.diagnostics.plugin import WorkerPlugin
from robustkit import (
    assert_same_dataset,
    build_cmd,
    config_file,
    good_archive,
    reference_build,
    run_build,
    run_killed_build,
    tmpfs_prefix,
)

from spectralearth_build import open_dataset
from spectralearth_build.build import build_dataset
from spectralearth_build.config import BuildConfig
from spectralearth_build.errors import IncompleteDatasetError


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    return good_archive(tmp_path_factory)


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory) -> Path:
    return config_file(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return reference_build(tmp_path_factory)


class HoldExtraction(WorkerPlugin):
    """Worker plugin: the first extraction task to start records its worker's pid and waits.

    It lets the test kill that worker by pid while the task is executing there; a worker
    started later (the nanny's replacement) does not wait again.
    """

    name = "hold-extraction"

    def __init__(self, folder: str):
        self.folder = folder

    def setup(self, worker) -> None:  # noqa: ANN001
        self.worker = worker

    def transition(self, key, start, finish, **kwargs) -> None:  # noqa: ANN001
        if finish != "executing" or not str(key).startswith("extract-"):
            return
        flag = Path(self.folder, "held")
        try:
            fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, json.dumps({"pid": os.getpid(), "key": str(key)}).encode())
        os.close(fd)
        time.sleep(120)  # killed before this ends


def test_a_worker_killed_during_extraction_is_replaced(tiles, cfg_path, reference, tmp_path):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(HoldExtraction(str(tmp_path)))
        out = tmp_path / "out"
        killed: dict = {}

        def killer() -> None:
            flag = tmp_path / "held"
            while not (flag.exists() and flag.stat().st_size):
                time.sleep(0.01)
            held = json.loads(flag.read_text())
            killed.update(held, processing=dict(client.processing()))
            os.kill(held["pid"], signal.SIGKILL)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        report = build_dataset(
            tiles, out, BuildConfig.from_yaml(cfg_path), scheduler=cluster.scheduler_address
        )
        thread.join(timeout=60)
    assert killed, "no extraction task was held"
    assert any(killed["key"] in keys for keys in killed["processing"].values())
    assert report.units_resumed == 0 and not report.invalid_products
    assert_same_dataset(out, reference)


KILL_POINTS = {
    "scan": ("spectralearth_build.catalog", "scan_source", 10, "before"),
    "plan": ("spectralearth_build.geometry", "plan_patches", 1, "after"),
    "extraction": ("spectralearth_build.extract.execute", "write_block", 5, "after"),
    "finalize": ("spectralearth_build.extract.tables", "finalize", 1, "after"),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_build_killed_at_any_stage_resumes_identically(
    point, tiles, cfg_path, reference, tmp_path
):
    out = tmp_path / "out"
    res = run_killed_build(tiles, out, cfg_path, KILL_POINTS[point], "--workers", "0")
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert (out / "build.json").exists() and not (out / "_COMPLETE").exists()
    with pytest.raises(IncompleteDatasetError):
        open_dataset(out)
    if point == "extraction":
        assert not list((out / "units").glob(".*.tmp"))  # markers are whole or absent
    report = build_dataset(tiles, out, BuildConfig.from_yaml(cfg_path), workers=0, resume=True)
    assert not report.invalid_products
    assert_same_dataset(out, reference)


def _limit_file_size(limit: int):  # noqa: ANN202
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


@pytest.mark.parametrize(
    ("limit", "names"),
    [(120_000, "data.zarr/images/c/"), (20_000, "catalog.parquet")],
    ids=["shard", "table"],
)
def test_a_file_size_limit_is_a_clear_error_and_resume_completes(
    limit, names, tiles, cfg_path, reference, tmp_path
):
    out = tmp_path / "out"
    res = run_build(tiles, out, cfg_path, "--workers", "0", preexec_fn=_limit_file_size(limit))
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr.strip()
    assert err.startswith("Error: cannot write ") and len(err.splitlines()) == 1, err
    assert "File too large" in err and "--resume" in err and str(out) in err
    assert names in err
    assert not (out / "_COMPLETE").exists()
    units = out / "units"
    if units.exists():
        assert not list(units.glob(".*.tmp"))
        for marker in units.glob("unit-*.json"):
            json.loads(marker.read_text())  # every marker is whole
    report = build_dataset(tiles, out, BuildConfig.from_yaml(cfg_path), workers=0, resume=True)
    assert not report.invalid_products
    assert_same_dataset(out, reference)


@pytest.mark.slow
def test_soak_workers_killed_at_random_until_the_build_completes(tmp_path_factory, tmp_path):
    """The demo archive built while a random worker is killed every 0.5-3 s of uptime."""
    import random

    import dask
    import yaml
    from distributed import Client, LocalCluster

    from spectralearth_build.synth import make_archive

    tiles = tmp_path_factory.mktemp("demo") / "tiles"
    make_archive(tiles, preset="demo", seed=1, n_bands=32)
    cfg_file = tmp_path / "build.yaml"
    cfg = {
        "bands": {"expected_count": 32, "drop_ranges": [[18, 18]]},
        "plan": {"patch_px": 64},
        "extract": {"max_unit_patches": 4, "locations_per_shard": 2},
    }
    cfg_file.write_text(yaml.safe_dump(cfg))
    config = BuildConfig.from_yaml(cfg_file)
    clean = tmp_path / "clean"
    build_dataset(tiles, clean, config, workers=0)

    out = tmp_path / "soak"
    rng = random.Random(0)
    kills = attempts = 0
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 50}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        done = threading.Event()

        def killer() -> None:
            # kill only once both workers are up again (a restart takes seconds), so that the
            # build always makes some progress between two kills
            nonlocal kills
            while not done.is_set():
                try:
                    pids = client.run(os.getpid)
                except Exception:  # a worker is restarting: try again later
                    pids = {}
                if len(pids) < 2:
                    done.wait(0.2)
                    continue
                if done.wait(rng.uniform(0.5, 3.0)):
                    return
                os.kill(rng.choice(sorted(pids.values())), signal.SIGKILL)
                kills += 1

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            while True:
                attempts += 1
                try:
                    build_dataset(tiles, out, config, scheduler=cluster.scheduler_address)
                    break
                except Exception:  # noqa: BLE001 - a task lost too often: resume the build
                    assert attempts < 20
        finally:
            done.set()
            thread.join(timeout=30)
    assert kills >= 3
    assert_same_dataset(out, clean)


FILL_AND_RESUME = """
set -u
mount -t tmpfs -o size={size} tmpfs {mnt}
{build} > {logs}/1.out 2> {logs}/1.err; echo $? > {logs}/1.rc
find {mnt}/out -name '*.tmp' > {logs}/tmp_files
cat {mnt}/out/units/unit-*.json > {logs}/markers 2>/dev/null
mount -o remount,size=256m {mnt}
{build} --resume > {logs}/2.out 2> {logs}/2.err; echo $? > {logs}/2.rc
cp -a {mnt}/out {dest}
"""


def test_a_full_file_system_is_a_clear_error_and_resume_completes(
    tiles, cfg_path, reference, tmp_path
):
    """A real ENOSPC: the build writes to a 1 MiB tmpfs, fails, and resumes once it is larger."""
    prefix = tmpfs_prefix()
    mnt, logs, dest = tmp_path / "mnt", tmp_path / "logs", tmp_path / "out"
    mnt.mkdir()
    logs.mkdir()
    build = shlex.join(build_cmd(tiles, mnt / "out", cfg_path, "--workers", "0"))
    script = FILL_AND_RESUME.format(size="1m", mnt=mnt, build=build, logs=logs, dest=dest)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([*prefix, "bash", "-c", script], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    err = (logs / "1.err").read_text().strip()
    assert (logs / "1.rc").read_text().strip() == "1", err
    assert err.startswith("Error: cannot write ") and len(err.splitlines()) == 1, err
    assert "No space left on device" in err and "--resume" in err and str(mnt / "out") in err
    assert not (logs / "tmp_files").read_text().strip()  # no temporary file left behind
    markers = (logs / "markers").read_text()
    for text in markers.replace("}{", "}\n{").splitlines():  # every marker is whole
        json.loads(text)
    assert (logs / "2.rc").read_text().strip() == "0", (logs / "2.err").read_text()
    assert_same_dataset(dest, reference)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_writing_to_a_full_device_is_a_clear_error_and_resume_completes(
    tiles, cfg_path, reference, tmp_path
):
    """ENOSPC from the kernel anywhere (no mount needed): the catalog's and then the plan's
    temporary file are links to ``/dev/full``.  Each failed write names the table and removes
    its temporary file (the link), so each rerun gets one step further and the last completes.
    """
    from click.testing import CliRunner

    from spectralearth_build.cli.build import build_command
    from spectralearth_build.extract import store as st

    out = tmp_path / "out"
    config = BuildConfig.from_yaml(cfg_path)
    st.check_or_write_manifest(out, st.build_manifest(config, tiles), resume=False)
    for name in ("catalog.parquet", "plan.parquet"):
        (out / f"{name}.tmp").symlink_to("/dev/full")
    args = ["--tiles", str(tiles), "--out", str(out), "--config", str(cfg_path), "--workers", "0"]
    for name in ("catalog.parquet", "plan.parquet"):
        res = CliRunner().invoke(build_command, [*args, "--quiet"])
        assert res.exit_code == 1, res.output
        err = res.output.strip().splitlines()[-1]
        assert err == (
            f"Error: cannot write {out / name}: No space left on device (file system full or a "
            "file size limit reached); free space and rerun with --resume"
        ), res.output
        assert not (out / name).exists() and not (out / f"{name}.tmp").exists()
        assert not (out / "_COMPLETE").exists()
    res = CliRunner().invoke(build_command, [*args, "--quiet", "--resume"])
    assert res.exit_code == 0, res.output
    assert_same_dataset(out, reference)
