"""Pretraining end to end on a tiny built store: falling losses, exact resume, DDP on CPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from trainkit import labelled_store

from spectralearth_build.config import ConfigError
from spectralearth_build.train.cli import main
from spectralearth_build.train.pretrain import PretrainConfig, load_checkpoint, pretrain

ROOT = Path(__file__).resolve().parents[1]
VIT = {"name": "trainkit:TinySpecViT"}
RN = {"name": "trainkit:TinySpecRN"}
METHODS = {
    "moco": ({"name": "moco", "queue_size": 16, "hidden_dim": 64, "out_dim": 16}, RN),
    "dino": ({"name": "dino", "hidden_dim": 64, "bottleneck_dim": 16, "out_dim": 256}, VIT),
    "mae": ({"name": "mae", "decoder_dim": 32, "decoder_heads": 2}, VIT),
    "barlow": ({"name": "barlow", "proj_dims": [64, 64]}, RN),
}


def tiny_config(method: str, steps: int, batch: int = 8, **train) -> dict:
    mk, bb = METHODS[method]
    return {
        "method": dict(mk),
        "backbone": dict(bb),
        "data": {"crop_px": 16, "scale": [0.5, 1.0], "blur_prob": 0.5},
        "optim": {"name": "adamw", "lr": 3e-3, "schedule": "constant"},
        "train": {
            "batch_size": batch,
            "max_steps": steps,
            "log_every": 1,
            "checkpoint_every": 100,
            **train,
        },
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return labelled_store(tmp_path_factory)


def read_log(run: Path) -> list[dict]:
    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_loss_falls(method, store, tmp_path):
    steps = 24 if method == "dino" else 16
    cfg = PretrainConfig.from_dict(tiny_config(method, steps))
    res = pretrain(cfg, store, tmp_path / "run")
    losses = np.array(res.losses)
    assert len(losses) == steps and np.isfinite(losses).all()
    # MoCo's first step sees a queue of random vectors and DINO's first steps a collapsed
    # initial head (every sample on one prototype), both easy: compare from the peak onwards
    start = int(np.argmax(losses[: steps // 2])) if method in ("moco", "dino") else 0
    head, tail = losses[start : start + 4].mean(), losses[-4:].mean()
    assert tail < head, (method, losses.round(3).tolist())
    rows = read_log(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
    assert float(rows[0]["samples_per_s"]) > 0
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["step"] == steps and ckpt["config"] == cfg.to_dict()


@pytest.mark.parametrize("method", ["moco", "dino"])
def test_resume_is_bit_identical(method, store, tmp_path):
    cfg = PretrainConfig.from_dict(tiny_config(method, 6, checkpoint_every=3))
    full = pretrain(cfg, store, tmp_path / "full")
    part = pretrain(cfg, store, tmp_path / "part", stop_at=3)
    assert part.steps == 3
    rest = pretrain(cfg, store, tmp_path / "part", resume=True)
    assert rest.start_step == 3 and rest.steps == 6
    assert full.losses == part.losses + rest.losses
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert a["method"].keys() == b["method"].keys()
    for k in a["method"]:  # parameters, teacher / key encoder, queue, centre, BN statistics
        assert torch.equal(a["method"][k], b["method"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i][n], sb[i][n]) for i in sa for n in sa[i])
    assert read_log(tmp_path / "full") == [
        {**r, **{k: f[k] for k in ("samples_per_s", "elapsed_s", "data_share")}}
        for r, f in zip(read_log(tmp_path / "part"), read_log(tmp_path / "full"))
    ]


def test_ring_and_torch_loaders_give_the_same_losses(store, tmp_path):
    runs = {}
    for loader, workers in (("torch", 0), ("ring", 2)):
        cfg = tiny_config("moco", 3)
        cfg["data"].update(loader=loader, num_workers=workers)
        runs[loader] = pretrain(PretrainConfig.from_dict(cfg), store, tmp_path / loader)
        summary = json.loads((tmp_path / loader / "summary.json").read_text())
        assert summary["loader"] == loader
    assert runs["ring"].losses == runs["torch"].losses and len(runs["ring"].losses) == 3
    cfg = tiny_config("moco", 3)  # a run stopped with one loader resumes with the other
    cfg["data"].update(loader="ring", num_workers=2)
    part = pretrain(PretrainConfig.from_dict(cfg), store, tmp_path / "mixed", stop_at=2)
    cfg["data"].update(loader="torch")
    rest = pretrain(PretrainConfig.from_dict(cfg), store, tmp_path / "mixed", resume=True)
    assert part.losses + rest.losses == runs["torch"].losses
    cfg = tiny_config("moco", 1)
    assert PretrainConfig.from_dict(cfg).data.loader == "auto"  # the default: torch on CPU
    pretrain(PretrainConfig.from_dict(cfg), store, tmp_path / "auto")
    assert json.loads((tmp_path / "auto" / "summary.json").read_text())["loader"] == "torch"


@pytest.mark.parametrize("value", ["fast", 1, None])
def test_a_bad_data_loader_is_a_config_error(value, tmp_path):
    cfg = tiny_config("mae", 1)
    cfg["data"]["loader"] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"data\.loader must be one of auto, ring, torch"):
        PretrainConfig.from_yaml(path)
    path.write_text(yaml.safe_dump(tiny_config("mae", 1)))
    res = CliRunner().invoke(
        main, ["pretrain", "--config", str(path), "--data", str(tmp_path), "--set", "data.loader=x"]
    )
    assert res.exit_code == 1 and res.output.startswith("Error:") and "data.loader" in res.output


def _torchrun(args: list[str], nproc: int, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--standalone",
        "-m",
        "spectralearth_build.train.cli",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("method", ["moco", "dino", pytest.param("barlow", marks=pytest.mark.slow)])
def test_two_process_ddp_matches_one_process(method, store, tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    # SGD: Adam's division by sqrt(v) turns float-rounding differences of near-zero gradients
    # into visible weight differences within a few steps
    cfg = tiny_config(method, 3)
    cfg["optim"] = {"name": "sgd", "lr": 0.05, "schedule": "constant"}
    cfg_path.write_text(yaml.safe_dump(cfg))
    single = pretrain(
        PretrainConfig.from_yaml(cfg_path, {"train.batch_size": 8}), store, tmp_path / "one"
    )
    proc = _torchrun(
        [
            "pretrain",
            "--config",
            str(cfg_path),
            "--data",
            str(store),
            "--out",
            str(tmp_path / "two"),
            "--batch-size",
            "4",
            "-q",
        ],
        2,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = [float(r["loss"]) for r in read_log(tmp_path / "two")]
    np.testing.assert_allclose(two, single.losses, rtol=1e-4, atol=1e-5)
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert b["world_size"] == 2 and a["global_batch"] == b["global_batch"] == 8
    for k in a["method"]:  # weights, gathered MoCo queue, DINO centre, global-batch BN stats
        torch.testing.assert_close(
            b["method"][k], a["method"][k], rtol=1e-3, atol=1e-4, msg=lambda m, k=k: f"{k}: {m}"
        )


def test_cli_pretrain_and_errors(store, tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config("mae", 2)))
    runner = CliRunner()
    run = [
        "pretrain",
        "--config",
        str(cfg_path),
        "--data",
        str(store),
        "--out",
        str(tmp_path / "run"),
    ]
    res = runner.invoke(main, [*run, "--max-steps", "2", "-q"])
    assert res.exit_code == 0, res.output
    assert "steps 0->2 of 2" in res.output and (tmp_path / "run" / "summary.json").exists()
    res = runner.invoke(main, [*run, "--batch-size", "4096"])
    assert res.exit_code == 1 and "Error:" in res.output and "global batch" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"method": {"name": "simclr"}}))
    res = runner.invoke(main, ["pretrain", "--config", str(bad), "--data", str(store)])
    assert res.exit_code == 1 and "method.name" in res.output
    res = runner.invoke(main, [*run, "--max-steps", "3", "--resume"])
    assert res.exit_code == 1 and "another config" in res.output
