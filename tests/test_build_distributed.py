"""``build-dataset --scheduler`` on a real ``dask scheduler`` + ``dask worker`` on localhost."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from buildkit import assert_same_dataset

from spectralearth_build import open_dataset


def dask_cli() -> list[str]:
    exe = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
    return [exe] if exe else [sys.executable, "-m", "distributed.cli.dask_spec"]


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and one single-threaded worker process; yields the scheduler file."""
    sched_file = tmp_path / "scheduler.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    base = dask_cli()
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    *base,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(sched_file),
                ],
                stdout=open(logs / "scheduler.log", "w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        for _ in range(600):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            assert procs[0].poll() is None, (logs / "scheduler.log").read_text()
            time.sleep(0.05)
        procs.append(
            subprocess.Popen(
                [
                    *base,
                    "worker",
                    "--scheduler-file",
                    str(sched_file),
                    "--nworkers",
                    "1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                ],
                stdout=open(logs / "worker.log", "w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        from distributed import Client

        with Client(scheduler_file=str(sched_file), timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
        yield sched_file
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_build_on_an_existing_cluster_equals_the_local_build(
    cluster, run_build, reference, tmp_path
):
    out = tmp_path / "remote"
    res = run_build("--out", out, "--scheduler", cluster)
    assert res.exit_code == 0, res.output  # the archive has no broken products
    assert len(open_dataset(out)) > 0
    assert_same_dataset(out, reference)  # the build of the same archive and config without Dask

    # the same cluster by address instead of scheduler file
    import json

    from spectralearth_build.cluster import dask_client

    address = json.loads(Path(cluster).read_text())["address"]
    with dask_client(scheduler=address) as client:
        assert client.scheduler.address == address
        assert len(client.scheduler_info()["workers"]) == 1


def test_local_cluster_workers_stop_their_heartbeats_before_it_closes():
    """A heartbeat in flight while the local cluster's scheduler stops logs a worker traceback;
    the client stops every worker's heartbeat first (a renamed callback would fail here, where
    the teardown ignores worker errors)."""
    from spectralearth_build.cluster import _stop_heartbeat, dask_client

    def beating(dask_worker):
        return dask_worker.periodic_callbacks["heartbeat"].is_running()

    with dask_client(2) as client:
        assert list(client.run(beating).values()) == [True, True]
        client.run(_stop_heartbeat)
        assert list(client.run(beating).values()) == [False, False]
