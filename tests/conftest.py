"""Shared fixtures: paths to the real reference files beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

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
