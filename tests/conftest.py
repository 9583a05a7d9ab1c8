"""Shared fixtures: paths to the real reference files beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
from buildkit import BUILD_CONFIG

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
ENMAP_REF = REFERENCE / "enmap"
REF_STEM = "ENMAP01-____L2A-DT0000326721_20170626T102020Z_001_V000204_20200406T201930Z"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not ENMAP_REF.is_dir():
        pytest.fail(
            f"reference files not found at {REFERENCE} (shared/ must sit beside the checkout)"
        )
    return REFERENCE


@pytest.fixture(scope="session")
def ref_metadata_path(reference_dir: Path) -> Path:
    return reference_dir / "enmap" / f"{REF_STEM}-METADATA.XML"


@pytest.fixture(scope="session")
def ref_classes_path(reference_dir: Path) -> Path:
    return reference_dir / "enmap" / f"{REF_STEM}-QL_QUALITY_CLASSES.TIF"


# -- the tiny synthetic archive and its reference build, made once per test session -------------


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make_archive(preset="tiny", seed=0)``: 2 sites, UTM 32/33, revisits (read-only)."""
    from spectralearth_build.synth import make_archive

    root = tmp_path_factory.mktemp("synth") / "tiles"
    make_archive(root, preset="tiny", seed=0)
    return root


@pytest.fixture(scope="session")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:data:`BUILD_CONFIG` as a YAML file."""
    import yaml

    path = tmp_path_factory.mktemp("cfg") / "build.yaml"
    path.write_text(yaml.safe_dump(BUILD_CONFIG))
    return path


@pytest.fixture(scope="session")
def reference(
    tiny_archive: Path, config_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny archive built in this process without Dask (read-only)."""
    from spectralearth_build.build import build_dataset
    from spectralearth_build.config import BuildConfig

    out = tmp_path_factory.mktemp("ref") / "out"
    build_dataset(tiny_archive, out, BuildConfig.from_yaml(config_file), workers=0)
    return out


@pytest.fixture(scope="session")
def run_build(tiny_archive: Path, config_file: Path):  # noqa: ANN201
    """``run_build(*args)``: ``build-dataset`` through click's CliRunner.

    ``--tiles`` (the tiny archive), ``--config`` (:data:`BUILD_CONFIG`) and ``--workers 0`` are
    added unless given (``--workers`` also not with ``--scheduler``); returns click's Result.
    """
    from click.testing import CliRunner

    from spectralearth_build.cli.build import build_command

    def run(*args: object):  # noqa: ANN202
        argv = [str(a) for a in args]
        defaults = {"--tiles": tiny_archive, "--config": config_file, "--workers": 0}
        for flag, value in defaults.items():
            if flag in argv or (flag == "--workers" and "--scheduler" in argv):
                continue
            argv += [flag, str(value)]
        return CliRunner().invoke(build_command, argv)

    return run
