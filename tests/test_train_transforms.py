"""Batched device transforms: normalisation, crops, flips, blur, seeding, pairs, masks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from spectralearth_build.errors import InputError
from spectralearth_build.train.transforms import (
    RECIPES,
    AugmentConfig,
    AugmentParams,
    DeviceTransform,
    apply_params,
    sample_params,
)

C, P = 5, 24


def batch(b: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4000, (b, C, P, P), generator=g, dtype=torch.int16)


def stats() -> tuple[np.ndarray, np.ndarray]:
    return np.linspace(1000, 2000, C), np.linspace(500, 900, C)


def fixed(b: int, box=(0, 0, P, P), hflip=False, vflip=False, sigma=0.0) -> AugmentParams:
    return AugmentParams(
        boxes=torch.tensor([box] * b, dtype=torch.float64),
        hflip=torch.full((b,), hflip),
        vflip=torch.full((b,), vflip),
        sigma=torch.full((b,), sigma, dtype=torch.float64),
    )


def test_normalise_only_uses_the_band_statistics():
    mean, std = stats()
    x = batch()
    out = DeviceTransform(mean, std, None, device="cpu")(x)
    ref = (x.double().numpy() - mean[:, None, None]) / std[:, None, None]
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_whole_image_box_is_the_identity_and_corner_swaps_are_flips():
    x = batch().float()
    cfg = AugmentConfig()
    ident, _ = apply_params(x, fixed(len(x)), cfg)
    torch.testing.assert_close(ident, x, rtol=1e-5, atol=1e-2)
    h, _ = apply_params(x, fixed(len(x), hflip=True), cfg)
    torch.testing.assert_close(h, x.flip(-1), rtol=1e-5, atol=1e-2)
    v, _ = apply_params(x, fixed(len(x), vflip=True), cfg)
    torch.testing.assert_close(v, x.flip(-2), rtol=1e-5, atol=1e-2)
    crop, _ = apply_params(x, fixed(len(x), box=(4, 6, P // 2, P // 2)), AugmentConfig(size=P // 2))
    torch.testing.assert_close(crop, x[:, :, 4 : 4 + P // 2, 6 : 6 + P // 2], rtol=1e-5, atol=1e-2)


def test_crop_draws_follow_the_scale_and_ratio_ranges():
    cfg = AugmentConfig(crop_scale=(0.08, 1.0))
    p = sample_params(cfg, 2000, 128, 128, torch.Generator().manual_seed(0))
    y0, x0, h, w = p.boxes.unbind(1)
    assert (y0 >= 0).all() and (x0 >= 0).all()
    assert (y0 + h <= 128).all() and (x0 + w <= 128).all()
    area = h * w / 128**2
    assert area.min() >= 0.06 and area.max() <= 1.0
    assert area.min() < 0.15 and area.max() > 0.9  # the whole range is used
    ratio = w / h
    assert ratio.min() >= 0.7 and ratio.max() <= 1.4
    for flag in (p.hflip, p.vflip):
        assert 0.4 < flag.double().mean() < 0.6
    blurred = p.sigma > 0
    assert 0.4 < blurred.double().mean() < 0.6
    assert p.sigma[blurred].min() >= 0.1 and p.sigma[blurred].max() <= 2.0
    mae = sample_params(RECIPES["mae"], 500, 128, 128, torch.Generator().manual_seed(0))
    assert (mae.sigma == 0).all()
    assert (mae.boxes[:, 2] * mae.boxes[:, 3] / 128**2).min() >= 0.38


def test_per_sample_parameters_and_seeded_reproducibility():
    mean, std = stats()
    x = batch(8)
    a = DeviceTransform(mean, std, "moco", seed=1, device="cpu")
    b = DeviceTransform(mean, std, "moco", seed=1, device="cpu")
    out_a, out_b = a(x), b(x)
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    # the same image, repeated, comes out differently per sample
    same = x[:1].expand(8, -1, -1, -1)
    outs = a(same)
    assert len({outs[k].numpy().tobytes() for k in range(8)}) == 8
    # a new call draws anew; set_epoch replays an epoch's draws
    assert not torch.equal(a(x), out_a)
    a.set_epoch(0)
    torch.testing.assert_close(a(x), out_a, rtol=0, atol=0)
    a.set_epoch(1)
    assert not torch.equal(a(x), out_a)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    torch.testing.assert_close(a(x, generator=g1), b(x, generator=g2), rtol=0, atol=0)


def test_pair_augments_the_two_views_independently():
    mean, std = stats()
    x = batch(4)
    tr = DeviceTransform(mean, std, AugmentConfig(blur=0.0), seed=0, device="cpu")
    v0, v1 = tr.pair(torch.stack([x, x], dim=1))
    assert v0.shape == v1.shape == (4, C, P, P)
    assert all(not torch.allclose(v0[k], v1[k]) for k in range(4))
    # one view given: it is augmented twice, like a pair of identical views
    tr.set_epoch(0)
    w0, w1 = tr.pair(x)
    torch.testing.assert_close(w0, v0, rtol=0, atol=0)
    torch.testing.assert_close(w1, v1, rtol=0, atol=0)
    with pytest.raises(InputError, match="2 views"):
        tr.pair(torch.stack([x, x, x], dim=1))


def test_blur_smooths_and_keeps_a_constant_image():
    cfg = AugmentConfig(blur=1.0)
    x = batch(3).float()
    out, _ = apply_params(x, fixed(3, sigma=1.5), cfg)
    assert out.std() < 0.6 * x.std()
    torch.testing.assert_close(out.mean(), x.mean(), rtol=1e-2, atol=0)
    flat = torch.full((2, C, P, P), 7.0)
    out, _ = apply_params(flat, fixed(2, sigma=2.0), cfg)
    torch.testing.assert_close(out, flat)


def test_masks_follow_the_image_geometry_with_nearest_labels():
    g = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 5, (16, P, P), generator=g)
    mask[:, :, : P // 2] = 255  # an ignore index on the left half
    image = mask[:, None].to(torch.int16)  # one band that holds the labels
    # flips only: the image band and the mask must move together exactly
    flips = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), blur=0.0)
    tr = DeviceTransform(np.zeros(1), np.ones(1), flips, seed=3, device="cpu")
    img, m = tr.with_mask(image, mask)
    assert m.dtype == mask.dtype and m.shape == mask.shape
    torch.testing.assert_close(img[:, 0].round().long(), m, rtol=0, atol=0)
    assert not torch.equal(m, mask)  # some sample was flipped
    # crops: nearest labels, never a value that was not there
    tr = DeviceTransform(np.zeros(1), np.ones(1), "moco", seed=3, device="cpu")
    img, m = tr.with_mask(image, mask)
    assert set(m.unique().tolist()) <= set(mask.unique().tolist())
    assert img.shape == (16, 1, P, P)


def test_bad_configs_are_one_line_errors():
    with pytest.raises(InputError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.5, 1.5))
    with pytest.raises(InputError, match="probability"):
        AugmentConfig(hflip=2.0)
    with pytest.raises(InputError, match="odd"):
        AugmentConfig(blur_kernel=4)
    with pytest.raises(InputError, match="unknown augmentation recipe"):
        DeviceTransform(np.ones(3), np.ones(3), "simclr", device="cpu")
    with pytest.raises(InputError, match="positive"):
        DeviceTransform(np.ones(3), np.zeros(3), device="cpu")
    assert AugmentConfig.from_dict(RECIPES["mae"].to_dict()) == RECIPES["mae"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_result():
    mean, std = stats()
    x = batch(8)
    cpu = DeviceTransform(mean, std, "moco", seed=4, device="cpu")(x)
    gpu = DeviceTransform(mean, std, "moco", seed=4, device="cuda")(x)
    # the resampling products run in TF32 on CUDA (relative error ~1e-3 of values ~1)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-2, atol=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_augmentation_and_step_draws_never_make_the_host_wait():
    """Draws made on the CPU reach the GPU without a stream synchronisation."""
    from spectralearth_build.train.methods.common import StepRandom

    mean, std = stats()
    x = batch(8).cuda()
    tr = DeviceTransform(mean, std, "moco", seed=4, device="cuda")
    want = tr.pair(x)
    tr.set_epoch(0)
    torch.cuda.synchronize()
    try:
        with warnings.catch_warnings():  # "a prototype feature"
            warnings.simplefilter("ignore", UserWarning)
            torch.cuda.set_sync_debug_mode("error")
        with pytest.raises(RuntimeError, match="synchroniz"):  # the mode does catch a sync
            torch.ones(3).to("cuda")
        got = tr.pair(x)
        noise = StepRandom(0, 1, 8, 0, 8, "cuda").uniform("mae-mask", 16)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    assert noise.is_cuda and torch.equal(
        noise.cpu(), StepRandom(0, 1, 8, 0, 8).uniform("mae-mask", 16)
    )


@pytest.mark.parametrize("size", [P, P // 2])
def test_separable_operators_equal_kornia_crop_resize_and_blur(size):
    """The two-product augmentation equals kornia's crop_and_resize + gaussian_blur2d."""
    pytest.importorskip("kornia")
    from spectralearth_build.train.transforms import kornia_reference

    cfg = AugmentConfig(size=size, blur=0.7, crop_scale=(0.2, 1.0))
    x = torch.randn(12, C, P, P, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    params = sample_params(cfg, 12, P, P, torch.Generator().manual_seed(2))
    assert params.hflip.any() and params.vflip.any() and (params.sigma > 0).any()
    # the label mask: nearest input pixel, as kornia's nearest warp
    mask = torch.randint(0, 9, (12, P, P), generator=torch.Generator().manual_seed(3))
    ours, m = apply_params(x, params, cfg, mask)
    ref, ref_m = kornia_reference(x, params, cfg, mask)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    assert ref_m is not None and torch.equal(m, ref_m)


def test_band_rows_layout_and_output_dtype_give_the_same_views():
    """normalize's (B, H, C, W) memory takes the copy-free products; results do not change."""
    mean, std = stats()
    x = batch(6)
    tr = DeviceTransform(mean, std, "moco", seed=2, device="cpu")
    xn = tr.normalize(x)
    assert xn.transpose(1, 2).is_contiguous()  # memory (B, H, C, W)
    params = sample_params(tr.config, 6, P, P, torch.Generator().manual_seed(5))
    fast, _ = apply_params(xn, params, tr.config)
    plain, _ = apply_params(xn.contiguous(), params, tr.config)
    assert fast.is_contiguous() and fast.dtype == torch.float32
    torch.testing.assert_close(fast, plain, rtol=1e-6, atol=1e-6)
    half, _ = apply_params(xn, params, tr.config, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and torch.equal(half, fast.to(torch.bfloat16))
    # a pair batch: each view sliced out of the normalised (B, 2, ...) batch
    pair = DeviceTransform(mean, std, "moco", seed=2, device="cpu", dtype=torch.bfloat16)
    v0, v1 = pair.pair(torch.stack([x, x], dim=1))
    tr.set_epoch(0)
    w0, w1 = tr.pair(x)
    assert v0.dtype == torch.bfloat16
    torch.testing.assert_close(v0.float(), w0, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(v1.float(), w1, rtol=1e-2, atol=1e-2)
