"""Renderers: every degradation drawn by each renderer, seeded; the trainers' mix; the held-out one stays out."""

from __future__ import annotations

import numpy as np
import pytest

from engine.degradations import apply_degradations
from engine.degradations.renderers import RENDERER_NAMES, TRAIN_RENDERERS, registry, renderer
from engine.vocab import DEGRADATIONS


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    yy, xx = np.mgrid[0:160, 0:192] / 160.0
    base = np.stack([0.5 + 0.3 * np.sin(7 * xx), 0.5 + 0.3 * np.cos(5 * yy), 0.3 + 0.4 * xx * yy], -1)
    checker = ((np.arange(160)[:, None] // 4 + np.arange(192)[None] // 4) % 2)[..., None] * 0.2
    return np.clip(base * 0.8 + checker, 0, 1).astype(np.float32)


@pytest.mark.parametrize("name", RENDERER_NAMES)
def test_every_renderer_draws_every_degradation_seeded(name, image):
    reg = registry(name)
    assert set(renderer(name)) == set(DEGRADATIONS)
    for degradation in DEGRADATIONS:
        a, params = apply_degradations(image, [degradation], 5, registry=reg)
        b, _ = apply_degradations(image, [degradation], 5, registry=reg)
        assert a.shape == image.shape and a.dtype == np.float32
        assert 0.0 <= a.min() and a.max() <= 1.0
        assert np.array_equal(a, b), f"{name}/{degradation} is not deterministic for a seed"
        assert np.abs(a - image).mean() > 1e-3, f"{name}/{degradation} left the image unchanged"
        assert params[0]["renderer"] == name


def test_albumentations_raindrops_are_always_there():
    import skimage.data

    from engine.tools.metrics import psnr

    photo = skimage.data.astronaut()[:256, :256].astype(np.float32) / 255.0
    reg = registry("albumentations")
    changes = [psnr(apply_degradations(photo, ["raindrop"], s, registry=reg)[0], photo) for s in range(24)]
    assert max(changes) < 40.0, "a raindrop draw left the photo visibly unchanged (a label on a clean image)"


def test_the_training_mix_uses_both_renderers_and_never_the_held_out_one(image):
    assert "heldout" not in TRAIN_RENDERERS and len(TRAIN_RENDERERS) >= 2
    reg = registry("train")
    used = {apply_degradations(image, ["noisy"], seed, registry=reg)[1][0]["renderer"] for seed in range(12)}
    assert used == set(TRAIN_RENDERERS)


def test_unknown_renderer_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown renderer 'nope'"):
        registry("nope")


def test_trainers_default_to_the_training_renderers():
    from engine.training.daclip import DaClipRecipe
    from engine.training.region_pool import PoolSpec

    assert tuple(DaClipRecipe().renderers) == TRAIN_RENDERERS
    assert PoolSpec().renderers == TRAIN_RENDERERS
