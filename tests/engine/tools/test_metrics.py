"""PSNR and SSIM wrap scikit-image correctly."""

import numpy as np
import pytest
import torch
from skimage import data

from engine.tools.metrics import MAX_PSNR, batch_psnr, batch_ssim, psnr, ssim


@pytest.fixture(scope="module")
def photo():
    return data.astronaut()[::4, ::4].astype(np.float32) / 255.0


def test_psnr_of_known_error(photo):
    noisy = np.clip(photo + 0.1, 0, 1)
    mse = np.mean((noisy - photo) ** 2)
    assert psnr(photo, noisy) == pytest.approx(10 * np.log10(1 / mse), rel=1e-6)


def test_identical_images():
    img = np.random.default_rng(0).uniform(size=(16, 16, 3))
    assert psnr(img, img) == MAX_PSNR
    assert ssim(img, img) == pytest.approx(1.0)


def test_ssim_falls_with_noise(photo):
    rng = np.random.default_rng(0)
    light = np.clip(photo + rng.normal(0, 0.02, photo.shape), 0, 1)
    heavy = np.clip(photo + rng.normal(0, 0.2, photo.shape), 0, 1)
    assert 1.0 > ssim(photo, light) > ssim(photo, heavy) > 0.0
    assert psnr(photo, light) > psnr(photo, heavy)


def test_tiny_images_and_grayscale():
    a = np.random.default_rng(0).uniform(size=(5, 6, 3))
    assert -1.0 <= ssim(a, a * 0.9) <= 1.0
    g = np.random.default_rng(1).uniform(size=(20, 20))
    assert ssim(g, g) == pytest.approx(1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))


def test_batch_helpers_match_single(photo):
    hq = torch.from_numpy(photo.transpose(2, 0, 1)).unsqueeze(0).repeat(2, 1, 1, 1)
    lq = (hq + 0.05 * torch.randn(hq.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    ps = batch_psnr(lq, hq)
    ss = batch_ssim(lq, hq)
    assert len(ps) == len(ss) == 2
    assert ps[0] == pytest.approx(psnr(lq[0].numpy().transpose(1, 2, 0), photo), abs=1e-4)
    assert ss[1] == pytest.approx(ssim(lq[1].numpy().transpose(1, 2, 0), photo), abs=1e-4)
