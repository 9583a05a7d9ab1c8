"""The Dockerfile, read statically (no Docker daemon in the test environment)."""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            head, _, rest = line.partition(" ")
            out.append((head.upper(), rest.strip()))
    return out


def test_dockerfile_installs_the_package_as_a_non_root_build_dataset_image():
    ins = instructions()
    kinds = [k for k, _ in ins]
    assert kinds[0] == "FROM"
    args = [a for k, a in ins if k == "ARG"]
    assert any(a.startswith("EXTRAS=") for a in args)
    install = next(a for k, a in ins if k == "RUN" and "pip install" in a)
    assert '".${EXTRAS:+[${EXTRAS}]}"' in install  # "." or ".[train]" etc.
    users = [a for k, a in ins if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert kinds.index("USER") > kinds.index("RUN")  # installs as root, runs as the user
    assert json.loads(next(a for k, a in ins if k == "ENTRYPOINT")) == ["build-dataset"]
    # what COPY needs is in the build context after .dockerignore
    ignore = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and ln[0] != "#"]
    for _, a in (i for i in ins if i[0] == "COPY"):
        for src in a.split()[:-1]:
            assert (ROOT / src).exists(), src
            kept = False
            for pat in ignore:
                neg = pat.startswith("!")
                if fnmatch.fnmatch(src, pat.lstrip("!")):
                    kept = neg
            assert kept, f"{src} is excluded by .dockerignore"
    # the package declares the extra the build argument names
    assert "train = [" in (ROOT / "pyproject.toml").read_text()


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed")
def test_dockerfile_passes_hadolint():
    res = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
