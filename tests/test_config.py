"""Every key of every config section is checked before any work.

The cases come from the config dataclasses themselves: each field of ``bands``, ``scan``,
``plan`` and ``extract`` must have an entry in :data:`BAD` (a key added without bad values
fails here), and each bad value, written to a YAML file, must make the real ``build-dataset``
print one ``Error:`` line naming the key and exit 1 without creating ``--out`` (the build
manifest is the first thing a build writes, before the scan).  One run under ``strace`` shows
that no file under ``--tiles`` is even opened for a bad value of each section.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from robustkit import good_archive

from spectralearth_build.bands import BandSelection
from spectralearth_build.build import build_dataset
from spectralearth_build.cli.build import build_command
from spectralearth_build.config import BuildConfig, ExtractConfig, PlanConfig, ScanConfig
from spectralearth_build.errors import ConfigError

SECTIONS = {
    "bands": BandSelection,
    "scan": ScanConfig,
    "plan": PlanConfig,
    "extract": ExtractConfig,
}

BAD: dict[str, list] = {
    "bands.expected_count": [0, -1, True, "many", 2.5],
    "bands.drop_ranges": [[[300, 310]], [[10, 5]], [[-1, 3]], [[5]], "all", [[0, 223]]],
    "scan.max_cloud_cover": [-1.0, 100.5, "half", math.nan],
    "scan.min_sun_elevation": [-91.0, 90.5, True],
    "scan.footprint_simplify_px": [-0.5, math.inf],
    "scan.verify_pixels": ["no", 1],
    "plan.patch_px": [0, -32, 1, 33, 127, 32.5, "big", True],
    "plan.pixel_size_m": [0.0, -30.0, math.nan],
    "plan.min_gap_days": [-1.0],
    "plan.beam_width": [0, -1, 2.5],
    "plan.max_tuple_size": [1, 0],
    "plan.max_overlap_fraction": [-0.1, 1.0, 1.5],
    "plan.include_single": ["yes", 0],
    "plan.candidate_stride_px": [0, -8],
    "plan.complete_views": ["true"],
    "plan.resample_margin_px": [-1.0],
    "plan.resample_pad_px": [-1, 1.5],
    "extract.max_cloud_fraction": [-0.01, 1.01],
    "extract.max_snow_fraction": [-1.0, 2.0],
    "extract.resampling": ["magic", 3],
    "extract.locations_per_shard": [-1, 2.5],
    "extract.shard_max_mib": [0, -1],
    "extract.compressor": ["lz77", None],
    "extract.compression_level": [10, -1, "high"],
    "extract.max_unit_tiles": [0],
    "extract.max_unit_patches": [0, -5],
}
"""Bad values per ``section.key``, as they would appear in a YAML file."""

CASES = [
    pytest.param(f"{section}.{f.name}", value, id=f"{section}.{f.name}={value!r}")
    for section, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
    for value in BAD.get(f"{section}.{f.name}", [pytest.fail])
]


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    return good_archive(tmp_path_factory)


def config_with(tmp_path: Path, key: str, value) -> Path:  # noqa: ANN001
    section, name = key.split(".")
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump({section: {name: value}}))
    return path


def test_every_key_has_bad_values():
    keys = {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert not keys - set(BAD), f"config keys without bad values in BAD: {sorted(keys - set(BAD))}"
    assert not set(BAD) - keys, f"BAD names keys the config lacks: {sorted(set(BAD) - keys)}"


def test_the_defaults_and_the_shipped_config_are_valid():
    BuildConfig().validate()
    BuildConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")


@pytest.mark.parametrize(("key", "value"), CASES)
def test_a_bad_value_is_an_error_before_any_work(key, value, tiles, tmp_path):
    assert value is not pytest.fail, f"no bad values listed for {key}"
    cfg, out = config_with(tmp_path, key, value), tmp_path / "out"
    res = CliRunner().invoke(
        build_command,
        ["--tiles", str(tiles), "--out", str(out), "--config", str(cfg), "--workers", "0"],
    )
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert key in lines[0] and str(cfg) in lines[0], lines[0]
    assert "Traceback" not in res.output
    assert not out.exists()  # not even the build manifest, which precedes the scan


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("plan: 5\n", "'plan' must be a mapping"),
        ("bands: [1, 2]\n", "'bands' must be a mapping"),
        ("bands:\n  expected: 224\n", "unknown key(s) in 'bands'"),
        ("extract:\n  compressor: zstd\n  compression_level: 23\n", "extract.compression_level"),
    ],
)
def test_a_bad_section_is_an_error(text, message, tmp_path):
    cfg = tmp_path / "build.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        BuildConfig.from_yaml(cfg)


def test_the_library_checks_a_config_made_in_python_before_any_work(tiles, tmp_path):
    for section, key in (("plan", "patch_px"), ("scan", "max_cloud_cover"), ("bands", None)):
        if section == "bands":
            config = dataclasses.replace(BuildConfig(), bands=BandSelection(4, ((0, 3),)))
        else:
            config = BuildConfig().replace(**{section: {key: -1}})
        with pytest.raises(ConfigError, match=f"{section}."):
            build_dataset(tiles, tmp_path / "out", config, workers=0)
        assert not (tmp_path / "out").exists()


STRACE = shutil.which("strace")
STRACED = """
import sys
from spectralearth_build.cli import build_dataset_main

for cfg in sys.argv[3:]:
    sys.argv[1:] = ["--tiles", sys.argv[1], "--out", sys.argv[2], "--config", cfg,
                    "--workers", "0"]
    try:
        build_dataset_main()
    except SystemExit as exc:
        print("exit", exc.code, flush=True)
"""


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_no_product_is_opened_for_a_bad_value(tiles, tmp_path):
    """Under strace, a bad value of each section: nothing inside ``--tiles`` is opened."""
    cfgs = []
    for k, key in enumerate(("bands.expected_count", "scan.max_cloud_cover", "plan.patch_px")):
        (tmp_path / str(k)).mkdir()
        cfgs.append(str(config_with(tmp_path / str(k), key, 0 if "px" in key else -1)))
    (tmp_path / "x").mkdir()
    cfgs.append(str(config_with(tmp_path / "x", "extract.max_unit_tiles", 0)))
    trace = tmp_path / "trace"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = tmp_path / "out"
    cmd = [STRACE, "-f", "-qq", "-e", "trace=%file", "-o", str(trace), sys.executable, "-c"]
    res = subprocess.run(
        [*cmd, STRACED, str(tiles), str(out), *cfgs], capture_output=True, text=True, env=env
    )
    assert res.stdout.split().count("exit") == len(cfgs), res.stdout + res.stderr
    assert res.stdout.split()[1::2] == ["1"] * len(cfgs), res.stdout
    assert res.stderr.count("Error: ") == len(cfgs), res.stderr
    touched = [ln for ln in trace.read_text().splitlines() if f"{tiles}/" in ln]
    assert not touched, touched[:5]
    assert not out.exists()
