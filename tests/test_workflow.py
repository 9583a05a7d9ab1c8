"""The README's workflow, run as written, in order, on a tiny archive.

The commands come from the first ``bash`` block of the README's "Workflow" section. Each one
runs in a scratch folder with the overrides in :data:`TINY` (a tiny archive, a small patch
size); a step the README marks *(planned)* must not exist yet, and every other step must exist
and succeed. When a planned command lands, remove its mark from the README and add its tiny
overrides (e.g. a small model for pretraining) to :data:`TINY`: this test then runs it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

TINY_CONFIG = "plan:\n  patch_px: 32\nextract:\n  max_unit_patches: 4\n"
TINY: dict[tuple[str, str | None], tuple[dict[str, str], list[str]]] = {
    # (program, subcommand): ({argument as written: replacement}, extra arguments)
    ("spectralearth-build", "synth"): ({"demo": "tiny"}, []),
    ("build-dataset", None): ({}, ["--config", "tiny.yaml", "--workers", "0"]),
    ("spectralearth-build", "quicklook"): ({}, ["--n", "6"]),
    # blocks scaled to the tiny archive (960 m patches) as the demo's 5 km are to its 3.8 km
    ("spectralearth-build", "labels"): ({"5": "2"}, ["--workers", "0"]),
    ("spectralearth-build", "export"): ({}, ["--workers", "0"]),
    # a small Spec ViT on 16 px crops for two steps, then a quick probe of it
    ("spectralearth-train", "pretrain"): (
        {
            "configs/pretrain/moco.yaml": str(ROOT / "configs" / "pretrain" / "moco.yaml"),
            "200": "2",
        },
        [
            *("--set", "backbone.name=spec_vit_t", "--set", "backbone.depth=1"),
            *("--set", "backbone.img_size=16", "--set", "data.crop_px=16"),
            *("--set", "method.queue_size=16", "--set", "method.hidden_dim=32"),
            *("--set", "train.batch_size=4", "--set", "data.num_workers=0", "-q"),
        ],
    ),
    ("spectralearth-train", "eval"): (
        {},
        ["--epochs", "2", "--seg-epochs", "2", "--fractions", "1", "--no-plot", "--device", "cpu"],
    ),
}
EXPECTED_STEPS = [
    ("spectralearth-build", "synth"),
    ("build-dataset", None),
    ("spectralearth-build", "labels"),
    ("spectralearth-build", "validate"),
    ("spectralearth-build", "report"),
    ("spectralearth-build", "quicklook"),
    ("spectralearth-build", "info"),
    ("spectralearth-build", "export"),
    ("spectralearth-train", "pretrain"),
    ("spectralearth-train", "eval"),
]
"""The order of the workflow (synth -> build -> labels -> validate -> look -> export -> train)."""
PROGRAMS = {
    "spectralearth-build": [sys.executable, "-m", "spectralearth_build"],
    "build-dataset": [
        sys.executable,
        "-c",
        "from spectralearth_build.cli import build_dataset_main; build_dataset_main()",
    ],
    "spectralearth-train": [sys.executable, "-m", "spectralearth_build.train.cli"],
}
"""This checkout's entry points (the installed scripts may belong to another checkout)."""


def workflow_steps() -> list[tuple[list[str], bool]]:
    """``(argv, planned)`` for each command of the README's workflow block."""
    text = README.read_text()
    section = text.split("\n## Workflow\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README: no bash block in the Workflow section"
    steps, planned = [], False
    for line in block.group(1).splitlines():
        line = line.strip()
        if line.startswith("#"):
            planned = "(planned" in line
        elif line:
            steps.append((shlex.split(line), planned))
    return steps


def key(argv: list[str]) -> tuple[str, str | None]:
    return (argv[0], None if argv[0] == "build-dataset" else argv[1])


def available(step: tuple[str, str | None]) -> bool:
    program, sub = step
    if program == "spectralearth-build":
        import click

        from spectralearth_build.cli import main

        return main.get_command(click.Context(main), sub or "") is not None
    if program == "build-dataset":
        return True
    return shutil.which(program) is not None


def test_readme_workflow_lists_the_steps_in_order():
    assert [key(argv) for argv, _ in workflow_steps()] == EXPECTED_STEPS


def test_readme_workflow_runs_in_order(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    ran = []
    for argv, planned in workflow_steps():
        step = key(argv)
        if planned:
            assert not available(step), f"{step} exists: run it (drop '(planned)' in the README)"
            continue
        assert available(step), f"README workflow: {' '.join(argv)}: no such command"
        subs, extra = TINY.get(step, ({}, []))
        args = [subs.get(a, a) for a in argv[1:]] + extra
        cmd = PROGRAMS.get(argv[0], [argv[0]]) + args
        res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert res.returncode == 0, (
            f"{' '.join(argv)} -> {res.returncode}\n{res.stdout}{res.stderr}"
        )
        ran.append((step, res.stdout))
    assert [s for s, _ in ran][:2] == [("spectralearth-build", "synth"), ("build-dataset", None)]
    dataset = tmp_path / "demo" / "dataset"
    assert (dataset / "_COMPLETE").exists()
    assert (dataset / "report" / "index.html").exists()
    assert (tmp_path / "demo" / "quicklooks" / "contact_sheet.png").exists()
    assert len(list((tmp_path / "demo" / "quicklooks").glob("location-*.png"))) == 6
    info = dict(ran)[("spectralearth-build", "info")]
    report = json.loads((dataset / "report.json").read_text())
    assert f"locations  {report['patches']} (" in info
    assert (tmp_path / "runs" / "moco" / "checkpoints" / "last.pt").exists()
    assert list((tmp_path / "runs" / "moco").rglob("eval_cdl.json"))
    # the eval ran on the default (spatial) scheme: its splits are all non-empty
    sizes = re.search(
        r"task cdl spatial: train (\d+), val (\d+), test (\d+)",
        dict(ran)[("spectralearth-build", "labels")],
    )
    assert sizes and min(int(n) for n in sizes.groups()) > 0


@pytest.mark.parametrize("section", ["Looking at a dataset", "Store format", "Configuration"])
def test_readme_sections_exist(section):
    assert f"\n## {section}\n" in README.read_text()


def test_readme_configuration_table_lists_every_key():
    from spectralearth_build.config import BuildConfig

    keys = {f"{s}.{k}" for s, v in BuildConfig().to_dict().items() for k in v}
    table = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", README.read_text(), re.M))
    assert table == keys
