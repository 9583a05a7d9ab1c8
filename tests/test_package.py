"""Package-level guarantees: light import, CLI wiring, config loading."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from spectralearth_build.bands import BandSelection
from spectralearth_build.cli import main
from spectralearth_build.config import BuildConfig, ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_import_does_not_pull_heavy_modules():
    code = (
        "import sys, spectralearth_build, spectralearth_build.catalog, spectralearth_build.cli;"
        "print(','.join(m for m in ('torch', 'dask', 'zarr', 'distributed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_lists_commands():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    for cmd in ("synth", "scan", "plan", "build"):
        assert cmd in res.output


def test_default_yaml_equals_built_in_defaults():
    assert BuildConfig.from_yaml(ROOT / "configs" / "default.yaml") == BuildConfig()


def test_config_round_trip_and_errors(tmp_path: Path):
    cfg = BuildConfig().replace(plan={"patch_px": 32}, bands=BandSelection(10, ((2, 3),)))
    assert BuildConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.bands.count == 8
    with pytest.raises(ConfigError, match="unknown config section"):
        BuildConfig.from_dict({"plans": {}})
    with pytest.raises(ConfigError, match="'plan.patch_px' = 'big'"):
        BuildConfig.from_dict({"plan": {"patch_px": "big"}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("bands: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        BuildConfig.from_yaml(bad)
