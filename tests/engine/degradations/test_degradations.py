"""Each degradation moves the statistic it should; composition is ordered and deterministic."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from scipy import ndimage
from skimage import data
from skimage.morphology import disk, white_tophat

from engine.degradations import (
    DEGRADATIONS_FUNCS,
    EXCLUSIVE,
    apply_degradations,
    preset_combinations,
    sample_combination,
)
from engine.degradations._common import LUMA, srgb_to_linear
from engine.vocab import DEGRADATIONS, PHYSICAL_ORDER, SEED24

NAMES = sorted(DEGRADATIONS)
SEED24_SETS = {frozenset(p) for p in SEED24}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """scikit-image's astronaut, downsized to 256 x 256."""
    img = data.astronaut().astype(np.float32) / 255.0
    return img[::2, ::2].copy()


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def gradient_energy(img: np.ndarray) -> float:
    gray = img @ LUMA
    gy, gx = np.gradient(gray)
    return float(np.mean(gx**2 + gy**2))


def linear_luminance(img: np.ndarray) -> float:
    return float(np.mean(srgb_to_linear(img) @ LUMA))


# ---------------------------------------------------------------- contract of every degradation


def test_registry_covers_the_vocabulary():
    assert set(DEGRADATIONS_FUNCS) == set(DEGRADATIONS)


@pytest.mark.parametrize("name", NAMES)
def test_contract_shape_range_params_determinism(name, photo):
    fn = DEGRADATIONS_FUNCS[name]
    out, params = fn(photo, rng(3))
    assert out.shape == photo.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.array_equal(out, photo)
    json.dumps(params)  # JSON-serialisable
    again, params2 = fn(photo, rng(3))
    assert np.array_equal(out, again) and params == params2
    other, _ = fn(photo, rng(4))
    assert not np.array_equal(out, other)


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (5, 300)])
@pytest.mark.parametrize("name", NAMES)
def test_odd_and_tiny_sizes(name, size):
    img = rng(1).uniform(0.1, 0.9, size=size + (3,)).astype(np.float32)
    for seed in range(3):
        out, _ = DEGRADATIONS_FUNCS[name](img, rng(seed))
        assert out.shape == size + (3,) and np.isfinite(out).all()
        assert out.min() >= 0.0 and out.max() <= 1.0


def test_unknown_override_is_rejected(photo):
    with pytest.raises(TypeError, match="sigmaa"):
        DEGRADATIONS_FUNCS["blurry"](photo, rng(), sigmaa=2.0)


# ---------------------------------------------------------------- each moves its statistic


@pytest.mark.parametrize("sigma_255", [5.0, 15.0, 30.0, 50.0])
@pytest.mark.parametrize("chroma", [True, False])
def test_noise_residual_std_matches_sigma(sigma_255, chroma):
    flat = np.full((128, 128, 3), 0.5, dtype=np.float32)
    out, params = DEGRADATIONS_FUNCS["noisy"](flat, rng(), variant="gaussian", sigma_255=sigma_255, chroma=chroma)
    std = float(np.std(out - flat))
    assert abs(std - sigma_255 / 255.0) <= 0.15 * sigma_255 / 255.0
    assert params["sigma_255"] == sigma_255


def test_poisson_gaussian_noise_grows_with_signal():
    dark = np.full((128, 128, 3), 0.1, dtype=np.float32)
    bright = np.full((128, 128, 3), 0.8, dtype=np.float32)
    kw = dict(variant="poisson-gaussian", peak=50.0, read_sigma_255=2.0, chroma=True)
    std_dark = np.std(DEGRADATIONS_FUNCS["noisy"](dark, rng(), **kw)[0] - dark)
    std_bright = np.std(DEGRADATIONS_FUNCS["noisy"](bright, rng(), **kw)[0] - bright)
    expected_bright = np.sqrt(0.8 / 50.0 + (2 / 255) ** 2)
    assert std_bright > 2.0 * std_dark
    assert abs(std_bright - expected_bright) < 0.15 * expected_bright


@pytest.mark.parametrize("seed", range(4))
def test_blur_lowers_gradient_energy(photo, seed):
    out, _ = DEGRADATIONS_FUNCS["blurry"](photo, rng(seed))
    assert gradient_energy(out) < 0.7 * gradient_energy(photo)


@pytest.mark.parametrize("trajectory", ["straight", "curved"])
@pytest.mark.parametrize("angle", [0.0, 45.0, 90.0, 200.0])
def test_motion_blur_lowers_gradient_energy(photo, trajectory, angle):
    out, params = DEGRADATIONS_FUNCS["motion-blurry"](photo, rng(), angle=angle, trajectory=trajectory)
    assert params["trajectory"] == trajectory
    assert gradient_energy(out) < 0.7 * gradient_energy(photo)


def test_motion_blur_is_directional():
    """A horizontal blur keeps horizontal lines sharp and smears vertical ones."""
    img = np.zeros((64, 64, 3), dtype=np.float32)
    img[30:34, :, :] = 1.0  # horizontal bar
    img[:, 30:34, :] = 1.0  # vertical bar
    out, _ = DEGRADATIONS_FUNCS["motion-blurry"](img, rng(), angle=0.0, trajectory="straight", length=15.0)
    assert out[10, 31, 0] < 0.5  # vertical bar smeared sideways
    assert out[31, 10, 0] > 0.9  # horizontal bar intact


def blockiness(img: np.ndarray) -> float:
    """Mean jump across 8x8 block borders divided by the mean jump inside blocks."""
    gray = img @ LUMA
    dx = np.abs(np.diff(gray, axis=1))
    cols = np.arange(dx.shape[1])
    border = dx[:, cols % 8 == 7].mean()
    inside = dx[:, cols % 8 != 7].mean()
    return float(border / inside)


def test_jpeg_raises_8x8_blockiness(photo):
    smooth = ndimage.gaussian_filter(photo, (1.5, 1.5, 0))
    out, params = DEGRADATIONS_FUNCS["jpeg-compressed"](smooth, rng(), quality=10)
    assert params["quality"] == 10
    assert blockiness(out) > 1.3 * blockiness(smooth)


def test_low_light_lowers_mean_luminance_3x(photo):
    base = linear_luminance(photo)
    out, _ = DEGRADATIONS_FUNCS["low-light"](photo, rng(), exposure=0.3)
    assert base / linear_luminance(out) >= 3.0
    for seed in range(5):
        out, _ = DEGRADATIONS_FUNCS["low-light"](photo, rng(seed))
        assert base / linear_luminance(out) >= 3.0


def test_low_light_adds_sensor_noise():
    flat = np.full((64, 64, 3), 0.5, dtype=np.float32)
    out, _ = DEGRADATIONS_FUNCS["low-light"](flat, rng(), exposure=0.1)
    assert np.std(out) > 1.0 / 255.0


def dark_channel(img: np.ndarray) -> float:
    return float(ndimage.minimum_filter(img.min(axis=2), size=15).mean())


@pytest.mark.parametrize("seed", range(3))
def test_haze_raises_dark_channel_and_lowers_contrast(photo, seed):
    out, params = DEGRADATIONS_FUNCS["hazy"](photo, rng(seed))
    assert dark_channel(out) > dark_channel(photo) + 0.05
    assert np.std(out @ LUMA) < 0.9 * np.std(photo @ LUMA)
    assert 0.5 <= params["beta"] <= 2.5 and 0.7 <= params["airlight"] <= 1.0


def small_bright_energy(img: np.ndarray) -> float:
    """Mean white top-hat: brightness in structures narrower than ~9 px."""
    return float(white_tophat(img @ LUMA, disk(4)).mean())


@pytest.mark.parametrize("name", ["rainy", "snowy"])
@pytest.mark.parametrize("seed", range(4))
def test_rain_and_snow_add_thin_bright_structures(name, seed):
    ramp = np.linspace(0.2, 0.6, 256, dtype=np.float32)
    smooth = np.repeat(np.repeat(ramp[None, :, None], 256, axis=0), 3, axis=2)  # no structure of its own
    out, _ = DEGRADATIONS_FUNCS[name](smooth, rng(seed))
    assert small_bright_energy(smooth) < 1e-4
    assert small_bright_energy(out) > 0.0015
    added = (out - smooth) @ LUMA
    assert (added > 0.15).mean() > 0.002  # some pixels get clearly brighter


def test_raindrops_change_only_drop_regions(photo):
    out, params = DEGRADATIONS_FUNCS["raindrop"](photo, rng(2))
    changed = np.abs(out - photo).max(axis=2) > 1e-6
    assert 0.002 < changed.mean() < 0.8
    assert params["coverage"] > 0


def test_shadow_adds_a_soft_darker_region():
    flat = np.full((128, 160, 3), 0.6, dtype=np.float32)
    for seed in range(5):
        out, params = DEGRADATIONS_FUNCS["shadowed"](flat, rng(seed))
        factor = params["factor"]
        ratio = out[..., 0] / flat[..., 0]
        assert ratio.max() <= 1.0 + 1e-6
        assert (ratio < 1 - 0.8 * (1 - factor)).mean() > 0.01  # a clearly darker region exists
        assert abs(ratio.min() - factor) < 0.05
        # soft edge: intermediate values exist and no pixel step is anywhere near the full drop
        assert ((ratio > factor + 0.05) & (ratio < 0.95)).mean() > 0.002
        gy, gx = np.gradient(ratio)
        assert np.hypot(gx, gy).max() < 0.5 * (1 - factor)


def test_uncompleted_whitens_exactly_the_masked_region(photo):
    img = photo * 0.9  # nothing is white before
    for seed in range(4):
        out, params = DEGRADATIONS_FUNCS["uncompleted"](img, rng(seed))
        mask = (out == 1.0).all(axis=2)
        assert np.array_equal(out[~mask], img[~mask])
        assert 0.04 <= mask.mean() <= 0.30
        assert abs(mask.mean() - params["coverage"]) < 1e-3


# ---------------------------------------------------------------- composition


def test_apply_is_deterministic(photo):
    names = ("hazy", "noisy", "jpeg-compressed")
    a, pa = apply_degradations(photo, names, 7)
    b, pb = apply_degradations(photo, names, 7)
    c, _ = apply_degradations(photo, names, 8)
    assert np.array_equal(a, b) and pa == pb
    assert not np.array_equal(a, c)
    json.dumps(pa)


def test_apply_uses_physical_order(photo):
    calls = []

    def recorder(name):
        def fn(image, rng, **kw):
            calls.append(name)
            return DEGRADATIONS_FUNCS[name](image, rng, **kw)

        return fn

    registry = {n: recorder(n) for n in DEGRADATIONS_FUNCS}
    _, params = apply_degradations(photo, ["uncompleted", "jpeg-compressed", "noisy", "hazy"], 0, registry=registry)
    assert calls == ["hazy", "noisy", "jpeg-compressed", "uncompleted"]
    assert [p["name"] for p in params] == calls


def test_jpeg_after_noise_equals_sequential_application(photo):
    out, _ = apply_degradations(photo, ["jpeg-compressed", "noisy"], 5)
    r = rng(5)
    step1, _ = DEGRADATIONS_FUNCS["noisy"](photo, r)
    expected, _ = DEGRADATIONS_FUNCS["jpeg-compressed"](step1, r)
    assert np.array_equal(out, expected)


def test_uncompleted_stays_white_after_other_degradations(photo):
    out, params = apply_degradations(photo * 0.9, ["uncompleted", "noisy", "hazy"], 1)
    assert params[-1]["name"] == "uncompleted"
    assert abs((out == 1.0).all(axis=2).mean() - params[-1]["coverage"]) < 0.02


def test_empty_combination_returns_the_image(photo):
    out, params = apply_degradations(photo, (), 0)
    assert params == [] and np.array_equal(out, photo)


def test_overrides_reach_the_degradation(photo):
    _, params = apply_degradations(photo, ["noisy"], 0, overrides={"noisy": {"variant": "gaussian", "sigma_255": 9}})
    assert params[0]["sigma_255"] == 9


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 1)])
def test_grayscale_stays_grayscale(shape):
    img = rng().uniform(0, 1, size=shape).astype(np.float32)
    out, _ = apply_degradations(img, ("hazy", "noisy", "jpeg-compressed"), 0)
    assert out.shape == shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1


def test_rgba_alpha_passes_through(photo):
    alpha = rng().uniform(0, 1, size=photo.shape[:2]).astype(np.float32)
    rgba = np.concatenate([photo, alpha[..., None]], axis=2)
    out, _ = apply_degradations(rgba, ("rainy", "blurry", "uncompleted"), 0)
    assert out.shape == rgba.shape
    assert np.array_equal(out[..., 3], alpha)
    assert not np.array_equal(out[..., :3], photo)


def test_uint8_input_is_rescaled(photo):
    img8 = (photo * 255).astype(np.uint8)
    out, _ = apply_degradations(img8, ("blurry",), 0)
    assert out.dtype == np.float32 and 0 < out.mean() < 1


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        apply_degradations(np.zeros((8, 8, 2), np.float32), ("noisy",), 0)


# ---------------------------------------------------------------- combinations


def _exclusive_free(combo) -> bool:
    return not any(pair <= set(combo) for pair in EXCLUSIVE)


def test_seed24_preset():
    combos = preset_combinations("seed24")
    assert len(set(combos)) == 24
    assert {frozenset(c) for c in combos} == {frozenset(p) for p in SEED24}
    r = rng()
    drawn = Counter(sample_combination(r, "seed24") for _ in range(2400))
    assert set(drawn) == set(combos)
    assert min(drawn.values()) > 50


def test_all_preset_has_36_combinations():
    combos = preset_combinations("all")
    assert len(set(combos)) == 36
    assert () in combos and all((n,) in combos for n in DEGRADATIONS)


@pytest.mark.parametrize("preset", ["mixed", "train", "seed24", "all"])
def test_sampled_combinations_are_valid_and_ordered(preset):
    r = rng()
    for _ in range(500):
        combo = sample_combination(r, preset)
        # the DA-CLIP study pairs motion-blurry with blurry; otherwise exclusive pairs never meet
        assert len(combo) <= 3 and (_exclusive_free(combo) or frozenset(combo) in SEED24_SETS)
        assert list(combo) == sorted(combo, key=PHYSICAL_ORDER.index)
        assert len(set(combo)) == len(combo)


def test_mixed_preset_distribution():
    r = rng()
    draws = [sample_combination(r, "mixed") for _ in range(4000)]
    assert all(_exclusive_free(c) for c in draws)
    sizes = Counter(len(c) for c in draws)
    assert set(sizes) == {0, 1, 2, 3}
    assert (sizes[0] + sizes[1] + sizes[2]) / 4000 > 0.75


def test_train_preset_distribution():
    r = rng()
    draws = [sample_combination(r, "train") for _ in range(4000)]
    sizes = Counter(len(c) for c in draws)
    assert 0.07 < sizes[0] / 4000 < 0.13
    assert 0.26 < sizes[1] / 4000 < 0.34
    assert 0.45 < sizes[2] / 4000 < 0.55
    assert 0.07 < sizes[3] / 4000 < 0.13
    seed = {frozenset(p) for p in SEED24}
    pairs = [c for c in draws if len(c) == 2]
    assert sum(frozenset(c) in seed for c in pairs) / len(pairs) > 0.55


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match="preset"):
        sample_combination(rng(), "bogus")
