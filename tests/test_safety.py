"""Crafted inputs cannot make a build read or write outside ``--tiles``, ``--out`` and the temp dir.

The build runs as the real command under ``strace -f`` (every process, GDAL's C-level opens
included), with its own working directory, home and temp dir; the test then checks every file
system call: nothing under the decoy folder the crafted names point at is touched, and nothing
is created, written, renamed or removed outside ``--out`` and the temp dir.  The crafted
products (``../`` and absolute member names, archive and file system symlinks, gzip and ZIP
bombs, an oversized METADATA.XML) are each reported with a one-line reason.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from robustkit import build_cmd, clone_product, config_file, good_archive, manifest_products

from spectralearth_build.build import EXIT_INVALID_PRODUCTS
from spectralearth_build.catalog import read_catalog

STRACE = shutil.which("strace")
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")
CHANGE_CALLS = (
    "mkdir",
    "mkdirat",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "rmdir",
    "symlink",
    "symlinkat",
    "link",
    "linkat",
    "truncate",
    "creat",
    "chmod",
    "fchmodat",
)


def _zip_with_names(archive: Path, files: list[tuple[str, Path]]) -> None:
    """A ZIP whose member names are taken verbatim (``../x``, ``/abs/x``)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for name, src in files:
            zf.writestr(zipfile.ZipInfo(name), src.read_bytes())


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


class _Zeros(io.RawIOBase):
    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> dict:
    if STRACE is None or subprocess.run([STRACE, "-o", "/dev/null", "true"]).returncode:
        pytest.skip("strace is not available (or not allowed) here")
    root = tmp_path_factory.mktemp("safety")
    good = good_archive(tmp_path_factory)
    ok = [
        p
        for p in manifest_products(good)
        if p["site"] == "us" and p["expected_status"] == "ok" and p["delivery"] == "folder"
    ]
    tiles, outside, scratch = root / "tiles", root / "outside", root / "scratch"
    tiles.mkdir()
    for p in ok[:2]:  # two good products, so the build has something to do
        shutil.copytree(good / p["path"], tiles / p["path"])
    template = good / ok[0]["path"]
    ids = {}
    # 1. member names that climb out of the archive, and absolute member names; the folders
    #    they name exist outside --tiles (decoys) and must never be opened
    a = clone_product(template, scratch, 50)
    b = clone_product(template, scratch, 51)
    shutil.copytree(a, outside / a.name)
    shutil.copytree(b, outside / b.name)
    files = [(f"../outside/{a.name}/{f.name}", f) for f in sorted(a.iterdir())]
    files += [(f"{outside}/{b.name}/{f.name}", f) for f in sorted(b.iterdir())]
    _zip_with_names(tiles / "crafted_names.ZIP", files)
    ids["climbing names"], ids["absolute names"] = a.name, b.name
    # 2. a tar.gz whose spectral image is a symlink member pointing outside
    c = clone_product(template, scratch, 52)
    shutil.copytree(c, outside / c.name)
    with tarfile.open(tiles / "crafted_links.tar.gz", "w:gz") as tar:
        for f in sorted(c.iterdir()):
            if "SPECTRAL_IMAGE" in f.name:
                link = tarfile.TarInfo(f"{c.name}/{f.name}")
                link.type = tarfile.SYMTYPE
                link.linkname = str(outside / c.name / f.name)
                tar.addfile(link)
            else:
                tar.add(f, f"{c.name}/{f.name}")
    ids["tar symlink"] = c.name
    # 3. file system symlinks leading outside: one file of a product, and a whole product folder
    d = clone_product(template, tiles, 53)
    image = next(f for f in d.iterdir() if "SPECTRAL_IMAGE" in f.name)
    shutil.copytree(d, outside / d.name)
    image.unlink()
    image.symlink_to(outside / d.name / image.name)
    e = clone_product(template, outside, 54)
    (tiles / e.name).symlink_to(e)
    ids["file symlink"], ids["folder symlink"] = d.name, e.name
    # 4. bombs: a tar.gz and a ZIP whose METADATA.XML expands to 256 MiB of zeros, and a
    #    plain METADATA.XML of 65 MiB (sparse)
    f_ = clone_product(template, scratch, 55)
    with (
        open(tiles / "bomb.tar.gz", "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        info = tarfile.TarInfo(f"{f_.name}/{f_.name}-METADATA.XML")
        info.size = 256 * 2**20
        tar.addfile(info, _Zeros(info.size))
    g = clone_product(template, scratch, 56)
    with zipfile.ZipFile(tiles / f"{g.name}.ZIP", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open(f"{g.name}/{g.name}-METADATA.XML", "w", force_zip64=True) as dst:
            for _ in range(256):
                dst.write(bytes(2**20))
    h = clone_product(template, tiles, 57)
    with open(next(h.glob("*-METADATA.XML")), "r+b") as meta:
        meta.truncate(65 * 2**20)
    ids["gzip bomb"], ids["zip bomb"], ids["huge metadata"] = "bomb.tar.gz", g.name, h.name

    # the build, traced, in its own working directory, home and temp dir
    work, home, tmp = root / "cwd", root / "home", root / "tmp"
    for p in (work, home, tmp):
        p.mkdir()
    out = root / "out"
    log = root / "strace.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(home),
        "TMPDIR": str(tmp),
    }
    before = _listing(root, skip=("out", "strace.log", "tmp"))
    cmd = build_cmd(tiles, out, config_file(tmp_path_factory), "--workers", "1")
    res = subprocess.run(
        [STRACE, "-f", "-qq", "-y", "-s", "4096", "-e", "trace=%file", "-o", str(log), *cmd],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    after = _listing(root, skip=("out", "strace.log", "tmp"))
    return {
        "root": root,
        "tiles": tiles,
        "outside": outside,
        "out": out,
        "tmp": tmp,
        "res": res,
        "log": log.read_text(),
        "ids": ids,
        "before": before,
        "after": after,
    }


def _listing(root: Path, skip: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (but the ``skip`` entries) with its size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


_CALL = re.compile(r"^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+|\?)")
_AT = re.compile(r'^(AT_FDCWD|\d+<([^>]*)>),\s*"((?:[^"\\]|\\.)*)"')
_PATH = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _calls(log: str, cwd: Path) -> list[tuple[str, list[str], str]]:
    """``(syscall, absolute paths it names, line)`` of the successful traced calls.

    Paths relative to a directory descriptor (``openat(3</dir>, "name")``, from ``strace -y``)
    or to the working directory are made absolute.
    """
    out = []
    for line in log.splitlines():
        m = _CALL.match(line)
        if not m or m.group(3).startswith("-"):
            continue  # unfinished or failed: nothing happened
        call, args = m.group(1), m.group(2)
        paths = []
        for part in re.split(r",\s*(?=AT_FDCWD|\d+<)", args):
            at = _AT.match(part)
            if at:
                base = str(cwd) if at.group(1) == "AT_FDCWD" else at.group(2)
                name = at.group(3)
                paths.append(name if name.startswith("/") else os.path.join(base, name))
        if not paths:
            paths = [p if p.startswith("/") else os.path.join(cwd, p) for p in _PATH.findall(args)]
        out.append((call, paths, line))
    return out


def test_the_build_completes_and_names_each_crafted_input(crafted):
    res = crafted["res"]
    assert res.returncode == EXIT_INVALID_PRODUCTS, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    report = json.loads((crafted["out"] / "report.json").read_text())
    expect = {
        "tar symlink": "spectral_image missing",
        "file symlink": "symlink outside --tiles",
        "folder symlink": "symlink outside --tiles",
        "gzip bomb": "unreadable archive",
        "zip bomb": "unreadable archive",
        "huge metadata": "metadata too large",
    }
    for case, reason in expect.items():
        pid = crafted["ids"][case]
        hits = [p for p in report["invalid_products"] if pid in p["product"]]
        assert any(p["reason"] == reason for p in hits), (case, hits)
        assert pid in res.stdout
    bombs = [p for p in report["invalid_products"] if "bomb" in p["detail"]]
    assert len(bombs) == 2, report["invalid_products"]
    # climbing and absolute member names are only ever looked up inside their archive
    catalog = read_catalog(crafted["out"] / "catalog.parquet")
    for case in ("climbing names", "absolute names"):
        rows = catalog[catalog["product_id"] == crafted["ids"][case]]
        assert len(rows) == 1 and "crafted_names.ZIP" in rows["location"].item()


def test_nothing_outside_is_read(crafted):
    outside = str(crafted["outside"])
    calls = _calls(crafted["log"], crafted["root"] / "cwd")
    # a read needs an open; resolving a symlink to report it (readlink, lstat) reads nothing
    opens = ("open", "openat", "openat2", "execve")
    touched = [line for c, paths, line in calls for p in paths if outside in p and c in opens]
    # the crafted names themselves may appear inside /vsizip/ paths, never as a real path
    real = [
        line
        for line in touched
        if not re.search(r'"/vsi(zip|tar|gzip|subfile)/', line) and "crafted_names" not in line
    ]
    assert not real, real[:5]
    assert crafted["log"].count("\n") > 1000  # the trace did record the build


def test_nothing_is_written_outside_out_and_the_temp_dir(crafted):
    allowed = (str(crafted["out"]), str(crafted["tmp"]), "/dev/", "/proc/", "/sys/")
    bad, seen = [], 0
    for call, paths, line in _calls(crafted["log"], crafted["root"] / "cwd"):
        writes = call in CHANGE_CALLS or (
            call in ("open", "openat", "openat2") and any(f in line for f in WRITE_FLAGS)
        )
        if writes:
            bad += [line for p in paths if not os.path.normpath(p).startswith(allowed)]
            seen += sum(os.path.normpath(p).startswith(str(crafted["out"])) for p in paths)
    assert seen > 50  # the dataset's own writes were traced and recognised
    assert not bad, bad[:5]
    # and listed: the tiles, the decoys, the working directory and home are as they were
    assert crafted["after"] == crafted["before"]


def test_yaml_configs_are_loaded_safely(tmp_path):
    from click.testing import CliRunner

    from spectralearth_build.cli.build import build_command

    marker = tmp_path / "owned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f'extract: !!python/object/apply:os.system ["touch {marker}"]\n')
    args = ["--tiles", str(tmp_path), "--out", str(tmp_path / "out"), "--config", str(cfg)]
    res = CliRunner().invoke(build_command, args)
    assert res.exit_code == 1 and res.output.startswith("Error: "), res.output
    assert not marker.exists() and not (tmp_path / "out").exists()
