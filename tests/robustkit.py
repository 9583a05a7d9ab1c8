"""Shared data for the robustness tests: one small synthetic archive and its clean build.

The archive is ``synth --preset tiny --broken`` with 32 bands (a tenth of the bytes of 224),
written once per test session under the session's base temp folder (so that every test module
that asks for it reuses the same files); the *good* archive is a copy without the broken
products, and the *reference* is its build without Dask.  Tests add bad products to copies.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from spectralearth_build import open_dataset

N_BANDS = 32
CONFIG: dict[str, Any] = {
    "bands": {"expected_count": N_BANDS, "drop_ranges": [[18, 18]]},  # water vapour: nodata
    "plan": {"patch_px": 32},
    "extract": {"max_unit_patches": 3, "locations_per_shard": 2},
}


def _shared(tmp_path_factory: Any) -> Path:
    return Path(tmp_path_factory.getbasetemp()) / "robust-shared"


@contextmanager
def _locked(root: Path):  # noqa: ANN202
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _once(root: Path, name: str, make: Callable[[Path], None]) -> Path:
    """``root/name`` made by ``make`` the first time it is asked for in a session."""
    path = root / name
    with _locked(root):
        if not (root / f".{name}.done").exists():
            if path.exists():
                shutil.rmtree(path)
            make(path)
            (root / f".{name}.done").write_text("")
    return path


def config_file(tmp_path_factory: Any) -> Path:
    def make(path: Path) -> None:
        path.mkdir()
        (path / "build.yaml").write_text(yaml.safe_dump(CONFIG))

    return _once(_shared(tmp_path_factory), "config", make) / "build.yaml"


def broken_archive(tmp_path_factory: Any) -> Path:
    """The tiny archive with one product per kind of ``synth --broken`` damage."""
    from spectralearth_build.synth import make_archive

    return _once(
        _shared(tmp_path_factory),
        "broken",
        lambda p: make_archive(p, preset="tiny", seed=0, broken=True, n_bands=N_BANDS),
    )


def good_archive(tmp_path_factory: Any) -> Path:
    """The same archive without its broken products."""
    src = broken_archive(tmp_path_factory)

    def make(path: Path) -> None:
        shutil.copytree(src, path)
        for p in json.loads((src / "synth_manifest.json").read_text())["products"]:
            if p["broken"]:
                target = path / p["path"]
                shutil.rmtree(target) if target.is_dir() else target.unlink()

    return _once(_shared(tmp_path_factory), "good", make)


def reference_build(tmp_path_factory: Any) -> Path:
    """``build-dataset`` of the good archive, in this process (no Dask)."""
    from spectralearth_build.build import build_dataset
    from spectralearth_build.config import BuildConfig

    tiles = good_archive(tmp_path_factory)
    cfg = BuildConfig.from_yaml(config_file(tmp_path_factory))
    return _once(
        _shared(tmp_path_factory), "reference", lambda p: build_dataset(tiles, p, cfg, workers=0)
    )


def copy_tree(src: Path, dst: Path) -> Path:
    """A copy of ``src`` (an archive or a build) that a test may damage."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def build_cmd(tiles: Path, out: Path, config: Path, *extra: str) -> list[str]:
    """The real ``build-dataset`` command line, run in a new interpreter."""
    return [
        sys.executable,
        "-c",
        "from spectralearth_build.cli import build_dataset_main as m; m()",
        "--tiles",
        str(tiles),
        "--out",
        str(out),
        "--config",
        str(config),
        "--quiet",
        *extra,
    ]


def run_build(
    tiles: Path, out: Path, config: Path, *extra: str, **kw: Any
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        build_cmd(tiles, out, config, *extra),
        capture_output=True,
        text=True,
        env=env,
        **kw,
    )


def tables(out: Path) -> dict[str, pd.DataFrame]:
    ds = open_dataset(out)
    return {
        "index": pd.DataFrame(ds.index.drop(columns="geometry")),
        "views": ds.views,
        "dropped": pd.read_parquet(out / "dropped_views.parquet"),
    }


def assert_same_dataset(a: Path, b: Path) -> None:
    """Same pixels, tables, attributes and plan."""
    da, db = open_dataset(a), open_dataset(b)
    np.testing.assert_array_equal(np.asarray(da.images[:]), np.asarray(db.images[:]))
    ta, tb = tables(a), tables(b)
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], obj=name)
    assert list(da.index.geometry.to_wkb()) == list(db.index.geometry.to_wkb())
    assert da.attrs == db.attrs
    assert (a / "plan.parquet").read_bytes() == (b / "plan.parquet").read_bytes()


def view_pixels(out: Path) -> dict[tuple[int, str], np.ndarray]:
    """Every stored view by ``(patch_id, product)``."""
    ds = open_dataset(out)
    arr = np.asarray(ds.images[:])
    return {
        (int(r.patch_id), str(r.product)): arr[int(r.slot), int(r.t)]
        for r in ds.views.itertuples(index=False)
    }


def manifest_products(archive: Path) -> list[dict[str, Any]]:
    return json.loads((archive / "synth_manifest.json").read_text())["products"]  # type: ignore[no-any-return]


KILL_AT = """
import importlib, os, signal, sys
mod, attr, nth, when, entry = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
del sys.argv[1:6]
module = importlib.import_module(mod)
real = getattr(module, attr)
calls = [0]


def hooked(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    if calls[0] == nth and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result


setattr(module, attr, hooked)
from spectralearth_build import cli

getattr(cli, entry)()
"""
"""A CLI entry point (``cli.<entry>``) that kills itself (SIGKILL) at the ``nth`` call of
``module.attr``, ``before`` or ``after`` it runs."""


def run_killed(
    args: list[str], point: tuple[str, str, int, str], entry: str = "main"
) -> subprocess.CompletedProcess[str]:
    """Run ``cli.<entry>`` with ``args`` in a new interpreter, killed at ``point``."""
    cmd = [sys.executable, "-c", KILL_AT, point[0], point[1], str(point[2]), point[3], entry]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env)


def run_killed_build(
    tiles: Path, out: Path, config: Path, point: tuple[str, str, int, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_killed(build_cmd(tiles, out, config, *extra)[3:], point, "build_dataset_main")


def run_cli(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """``spectralearth-build ARGS`` in a new interpreter."""
    cmd = [sys.executable, "-c", "from spectralearth_build.cli import main; main()", *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)


def tree_bytes(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (those under a ``skip`` folder left out)."""
    return {
        str(f.relative_to(root)): f.read_bytes()
        for f in sorted(root.rglob("*"))
        if f.is_file() and not any(str(f.relative_to(root)).startswith(s) for s in skip)
    }


def clone_product(folder: Path, dest_root: Path, number: int) -> Path:
    """A copy of a product folder under a new product id (datatake ``DT00000990NN``)."""
    stem = folder.name
    new = re.sub(r"DT\d{10}", f"DT{9900 + number:010d}", stem)
    out = dest_root / new
    out.mkdir(parents=True)
    for f in folder.iterdir():
        data = f.read_bytes()
        if f.suffix.upper() == ".XML":
            data = data.replace(stem.encode(), new.encode())
        (out / f.name.replace(stem, new)).write_bytes(data)
    return out


PROBE = (
    "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d; rc=$?; umount $d; rmdir $d; exit $rc"
)


def tmpfs_prefix() -> list[str]:
    """``unshare`` into new user and mount namespaces (so an unprivileged user can mount a tmpfs).

    Skips with the reason when this machine or container does not allow it.
    """
    import pytest

    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare: cannot mount a small file system to fill")
    prefix = [unshare, "--user", "--map-root-user", "--mount"]
    probe = subprocess.run(
        [*prefix, "sh", "-c", PROBE],
        capture_output=True,
        text=True,
    )
    if probe.returncode:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.strip()}")
    return prefix
