"""Method losses against references written from the papers (or lightly's tested ones)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from trainkit import TinySpecRN, TinySpecViT

from spectralearth_build.train import distributed as tdist
from spectralearth_build.train.methods import build_method
from spectralearth_build.train.methods.barlow import barlow_twins_loss
from spectralearth_build.train.methods.common import StepRandom, cosine
from spectralearth_build.train.methods.dino import DINO, dino_loss
from spectralearth_build.train.methods.mae import norm_pix_mse, patchify
from spectralearth_build.train.methods.moco import moco_loss


def test_moco_loss_is_infonce():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    k = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    queue = F.normalize(torch.randn(11, 8, generator=g), dim=1)
    t = 0.1
    # MoCo (He et al. 2020), eq. 1: -log exp(q.k+/t) / (exp(q.k+/t) + sum_neg exp(q.k-/t))
    qn, kn, nn_ = q.double().numpy(), k.double().numpy(), queue.double().numpy()
    ref = np.mean(
        [
            -np.log(
                np.exp(qn[i] @ kn[i] / t)
                / (np.exp(qn[i] @ kn[i] / t) + np.exp(nn_ @ qn[i] / t).sum())
            )
            for i in range(5)
        ]
    )
    assert float(moco_loss(q, k, queue, t)) == pytest.approx(ref, rel=1e-5)


def test_moco_queue_takes_newest_keys_in_order():
    m = build_method("moco", TinySpecRN(), 10, queue_size=6, hidden_dim=16, out_dim=4)
    keys = [{"keys": torch.full((2, 4), float(i))} for i in (1, 2)]
    m.after_step(keys, 0)  # 4 keys into slots 0..3
    m.after_step([{"keys": torch.full((4, 4), 3.0)}], 1)  # slots 4, 5, 0, 1
    assert m.queue[:, 0].tolist() == [3, 3, 2, 2, 3, 3]
    assert int(m.queue_ptr) == 2


def test_dino_loss_matches_lightly():
    from lightly.loss import DINOLoss

    g = torch.Generator().manual_seed(1)
    teacher = [torch.randn(6, 32, generator=g) for _ in range(2)]
    student = [torch.randn(6, 32, generator=g) for _ in range(2)]
    center = torch.randn(1, 32, generator=g) * 0.1
    ref = DINOLoss(output_dim=32, teacher_temp=0.05, student_temp=0.1)
    ref.center.copy_(center[None])
    expected = ref(teacher, student, teacher_temp=0.05)
    got = dino_loss(teacher, student, center, 0.05, 0.1)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_dino_schedules_span_the_whole_run():
    m = DINO(TinySpecViT(), total_steps=1000, hidden_dim=16, bottleneck_dim=8, out_dim=16)
    moms = [m.teacher_momentum(s) for s in range(1000)]
    assert moms[0] == pytest.approx(0.996) and moms[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(moms[:-1], moms[1:]))  # still moving at the end
    assert moms[500] < 1.0 and moms[990] < 1.0
    assert m.teacher_temperature(0) == pytest.approx(0.04)
    assert m.teacher_temperature(300) == pytest.approx(0.07)
    assert cosine(0, 10, 1.0, 0.0) == 1.0 and cosine(9, 10, 1.0, 0.0) == pytest.approx(0.0)


def test_barlow_loss_matches_paper_and_lightly():
    from lightly.loss import BarlowTwinsLoss

    g = torch.Generator().manual_seed(2)
    za, zb = torch.randn(16, 6, generator=g), torch.randn(16, 6, generator=g)
    # Barlow Twins, algorithm 1: standardise along the batch, c = a.T b / N
    a = (za - za.mean(0)) / za.std(0, unbiased=False)
    b = (zb - zb.mean(0)) / zb.std(0, unbiased=False)
    c = (a.T @ b / 16).double().numpy()
    off = c - np.diag(np.diag(c))
    ref = ((np.diag(c) - 1) ** 2).sum() + 5e-3 * (off**2).sum()
    got = float(barlow_twins_loss(za, zb, 5e-3))
    assert got == pytest.approx(ref, rel=1e-5)
    assert got == pytest.approx(float(BarlowTwinsLoss(5e-3)(za, zb)), rel=1e-5)


def test_mae_patchify_and_norm_pix_loss():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 8, generator=g)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 4 * 4 * 3)
    # token 1 is rows 0..3, cols 4..7; values ordered (row, col, band)
    np.testing.assert_array_equal(p[0, 1].numpy(), x[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))
    pred = torch.randn(2, 4, 48, generator=g)
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]])
    # MAE (He et al. 2022), norm_pix_loss: per-patch standardised target, MSE on masked patches
    t = p.double().numpy()
    t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, ddof=1, keepdims=True) + 1e-6)
    per = ((pred.double().numpy() - t) ** 2).mean(-1)
    ref = (per * mask.numpy()).sum() / mask.numpy().sum()
    assert float(norm_pix_mse(pred, p, mask)) == pytest.approx(ref, rel=1e-5)


def test_mae_masks_ninety_percent_per_sample():
    m = build_method("mae", TinySpecViT(img_size=16), 10, decoder_dim=16, decoder_heads=2)
    assert m.n_tokens == 16 and m.n_keep() == 2
    x = torch.randn(3, 202, 16, 16)
    loss, _ = m([x], StepRandom(0, 0, 3, 0, 3), 0)
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    assert m.backbone.spectral_adapter[0].weight.grad is not None


def test_gather_batchnorm_is_batchnorm_without_process_group():
    bn = torch.nn.BatchNorm1d(4)
    gbn = tdist._convert_gather_bn(torch.nn.Sequential(torch.nn.BatchNorm1d(4)))[0]
    assert isinstance(gbn, tdist.GatherBatchNorm)
    x = torch.randn(7, 4)
    torch.testing.assert_close(gbn(x), bn(x))
