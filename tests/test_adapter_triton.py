"""The fused Triton adapter kernels against the Conv3d reference, through Triton's interpreter.

The kernels run on the CPU when ``TRITON_INTERPRET=1`` is set before Triton is imported, so the
comparison runs in a subprocess. It checks outputs, every parameter's gradient and the running
statistics after two training steps, in training and eval mode, for a pixel count that leaves a
partial tile and for a band subset (other layer-2 position counts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import copy, json, sys
    import torch
    sys.path.insert(0, sys.argv[2])
    from trainkit import reference_adapter
    from spectralearth_build.train.models.adapter import adapter_positions

    def case(bands, h, w, train):
        ref = reference_adapter()
        tri = copy.deepcopy(ref)
        tri.impl = "triton"
        x = torch.rand(2, bands, h, w, generator=torch.Generator().manual_seed(3))
        out = {"positions": adapter_positions(bands)}
        for name, model in (("reference", ref), ("triton", tri)):
            model.train(train)
            for _ in range(2):  # two steps: running statistics move twice
                y = model(x)
            weights = torch.linspace(-1, 1, y.numel()).view_as(y)
            (y * weights).sum().backward()
            out[name] = {
                "y": y.detach().flatten().tolist(),
                "grads": {n: p.grad.flatten().tolist() for n, p in model.named_parameters()},
                "state": {k: v.float().flatten().tolist() for k, v in model.state_dict().items()},
            }
        return out

    cases = json.loads(sys.argv[1])
    json.dump([case(*c) for c in cases], sys.stdout)
    """
)


CASES = [(202, 6, 5, True), (202, 6, 5, False), (151, 4, 4, True)]


@pytest.fixture(scope="module")
def results() -> list[dict]:
    """Reference and Triton results for every case, from one interpreter subprocess."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(CASES), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _max_abs(a: list[float]) -> float:
    return max(abs(v) for v in a)


def _max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(u - v) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("i", range(len(CASES)), ids=["202-train", "202-eval", "151-train"])
def test_triton_adapter_equals_reference(results, i):
    bands = CASES[i][0]
    res = results[i]
    ref, tri = res["reference"], res["triton"]
    tol = 1e-4
    assert _max_diff(tri["y"], ref["y"]) <= tol * _max_abs(ref["y"])
    scale = max(_max_abs(g) for g in ref["grads"].values())
    assert scale > 0
    for name, g in ref["grads"].items():  # every parameter, relative to the largest gradient
        assert _max_diff(tri["grads"][name], g) <= tol * scale, name
    for key, v in ref["state"].items():  # running statistics and num_batches_tracked
        assert _max_diff(tri["state"][key], v) <= tol * max(1.0, _max_abs(v)), key
    if bands == 151:
        assert res["positions"][2] != 8  # another layer-2 position count than 202 bands
