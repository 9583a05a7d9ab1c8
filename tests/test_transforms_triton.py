"""The fused normalise-and-augment kernel against the two-product path.

On the CPU the kernel runs through Triton's interpreter (``TRITON_INTERPRET=1`` before Triton is
imported, so in a subprocess), routed through ``DeviceTransform``'s fused path: same draws, same
operators, float32 products. On CUDA (TF32 products in both paths) the fused path is compared
with ``fused=False``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, sys
    import numpy as np
    import torch
    from spectralearth_build.train.transforms import DeviceTransform, recipe

    def case(recipe_name, b, c, h, w, size, dtype):
        g = torch.Generator().manual_seed(b * 100 + c)
        x = torch.randint(0, 6000, (b, 2, c, h, w), generator=g, dtype=torch.int16)
        mask = torch.randint(0, 9, (b, h, w), generator=g)
        mean, std = np.linspace(1500, 2500, c), np.linspace(300, 700, c)
        cfg = dataclasses.replace(recipe(recipe_name), size=size)
        dt = getattr(torch, dtype)
        ref = DeviceTransform(mean, std, cfg, seed=3, device="cpu", dtype=dt)
        fused = DeviceTransform(mean, std, cfg, seed=3, device="cpu", dtype=dt)
        fused.uses_fused = lambda *a: True  # the CPU takes the kernel through the interpreter
        out = {}
        for name, tf in (("ref", ref), ("fused", fused)):
            tf.set_epoch(1)
            one = tf(x[:, 0])
            pair = tf.pair(x)  # two strided views of the (B, 2, C, H, W) batch
            img, m = tf.with_mask(x[:, 1], mask)
            out[name] = {
                "shapes": [list(t.shape) for t in (one, *pair, img)],
                "dtypes": [str(t.dtype) for t in (one, *pair, img)],
                "values": [t.float().flatten().tolist() for t in (one, *pair, img)],
                "mask": m.flatten().tolist(),
            }
        return out

    json.dump([case(*c) for c in json.loads(sys.argv[1])], sys.stdout)
    """
)

CASES = [
    ("moco", 3, 4, 20, 24, 16, "float32"),  # blur, smaller output, non-square input
    ("mae", 2, 3, 33, 33, 40, "float32"),  # no blur, larger output, odd sides
    ("moco", 2, 2, 32, 32, 32, "bfloat16"),
]


@pytest.fixture(scope="module")
def results() -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(CASES)],
        capture_output=True,
        text=True,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_fused_kernel_equals_the_two_product_path(results, index):
    got, want = results[index]["fused"], results[index]["ref"]
    recipe_name, b, c, h, w, size, dtype = CASES[index]
    assert got["shapes"] == want["shapes"] == [[b, c, size, size]] * 4
    assert got["dtypes"] == want["dtypes"] == [f"torch.{dtype}"] * 4
    assert got["mask"] == want["mask"]  # the same draws: the same crops and flips
    tol = 1e-5 if dtype == "float32" else 2e-2  # float32 sums in another order; bf16 rounding
    for a, r in zip(got["values"], want["values"], strict=True):
        a_, r_ = np.asarray(a), np.asarray(r)
        assert np.abs(r_).max() > 0.5  # normalised values, not zeros
        np.testing.assert_allclose(a_, r_, rtol=tol, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name, dtype", [("moco", torch.bfloat16), ("mae", torch.float32)])
def test_cuda_fused_path_equals_the_two_product_path(name, dtype):
    from spectralearth_build.train.transforms import DeviceTransform

    c, p = 202, 128
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 8000, (16, 2, c, p, p), generator=g, dtype=torch.int16).cuda()
    mask = torch.randint(0, 9, (16, p, p), generator=g).cuda()
    mean, std = np.linspace(1500, 2500, c), np.linspace(300, 700, c)
    fused = DeviceTransform(mean, std, name, seed=1, device="cuda", dtype=dtype)
    plain = DeviceTransform(mean, std, name, seed=1, device="cuda", dtype=dtype, fused=False)
    assert fused.uses_fused(x) and not plain.uses_fused(x)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-2  # TF32 products in both, summed differently
    for a, b in zip(fused.pair(x), plain.pair(x), strict=True):
        assert a.dtype == b.dtype == dtype and a.is_contiguous()
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)
    (img, m), (img_ref, m_ref) = fused.with_mask(x[:, 0], mask), plain.with_mask(x[:, 0], mask)
    assert torch.equal(m, m_ref)
    torch.testing.assert_close(img.float(), img_ref.float(), rtol=tol, atol=tol)
