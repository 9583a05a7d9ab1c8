"""benchmarks/train_multi_gpu.py on CPU: one process through torchrun, JSON written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from trainkit import labelled_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return labelled_store(tmp_path_factory)


def test_multi_gpu_script_on_cpu(store, tmp_path):
    cfg = {
        "method": {"name": "moco", "queue_size": 16, "hidden_dim": 32, "out_dim": 8},
        "backbone": {"name": "trainkit:TinySpecRN"},
        "data": {"crop_px": 16, "num_workers": 0},
        "optim": {"name": "sgd", "lr": 0.05},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    out_json = tmp_path / "result.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "train_multi_gpu.py"),
        "--data",
        str(store),
        "--gpus",
        "1",
        "--device",
        "cpu",
        "--runs",
        "--config",
        f"tiny={tmp_path / 'tiny.yaml'}",
        "--batches",
        "4",
        "--steps",
        "4",
        "--warmup",
        "1",
        "--workers",
        "0",
        "--precision",
        "fp32",
        "--pythonpath",
        str(ROOT / "tests"),
        "--out",
        str(tmp_path / "runs"),
        "--json",
        str(out_json),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rep = json.loads(out_json.read_text())
    assert rep["devices"] == ["cpu"] and rep["cpu_cores"] >= 1 and rep["n_gpu"] == 1
    entry = rep["results"]["tiny/b4"]
    one = entry["one_gpu"]
    assert one["ok"] and one["global_batch"] == 4 and len(one["losses"]) == 4
    assert one["samples_per_s"] > 0 and 0 <= one["loader_share"] < 1
    assert entry["scaling_efficiency"] == pytest.approx(1.0)
    assert entry["loss_compare"]["max_abs_diff"] == 0.0
