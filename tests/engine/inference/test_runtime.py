"""The restoration runtime: tiling against the untiled result, progress, cancellation, bundles.

Test doubles here (``FakeDetector``, ``BlurModel``) follow the detector/restorer protocols and are
shared with the batch and CLI tests; ``tiny_bundle`` is a random-init bundle on disk.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.inference.runtime import MAX_TILE_CPU, MIN_TILE, ModelNotFoundError, Restorer, choose_tile
from engine.inference.tiling import DEFAULT_OVERLAP
from engine.jobs.api import Cancelled, CancelToken, Detection, RestoreOptions
from tests.bundles import build_tiny_bundle


class FakeDetector:
    """Says every photo is ``names`` and returns a fixed condition."""

    def __init__(self, names=("noisy",), dim=4):
        self.names, self.dim, self.override_calls = tuple(names), dim, 0

    def analyze(self, image):
        scores = {n: 0.9 for n in self.names} | {"hazy": 0.1}
        return SimpleNamespace(detection=Detection(self.names, scores), condition=torch.zeros(3, self.dim))

    def condition_for(self, image, names):
        self.override_calls += 1
        return torch.ones(3, self.dim)

    def detect(self, image):
        return self.analyze(image).detection


class BlurModel:
    """A local 'restorer': ``passes`` box blurs of radius ``radius`` (reflect-padded), plus noise
    for steps > 1. Its receptive radius is ``passes * radius``."""

    multiple = 8

    def __init__(self, radius=3, passes=1):
        self.radius, self.passes, self.calls = radius, passes, 0

    def photo_statistics(self, image):
        return None

    def predict(self, lq, condition=None, steps=1, generator=None, stats=None):
        self.calls += 1
        assert lq.shape[-2] % self.multiple == 0 or lq.shape[-2] < 128
        k = 2 * self.radius + 1
        x = lq
        for _ in range(self.passes):
            x = F.avg_pool2d(F.pad(x, [self.radius] * 4, mode="reflect"), k, stride=1)
        if steps > 1:
            x = x + 0.01 * torch.randn(x.shape, generator=generator)
        return x.clamp(0, 1)


def fake_restorer(radius=3, passes=1, names=("noisy",), overlap=DEFAULT_OVERLAP):
    return Restorer.from_parts(FakeDetector(names), BlurModel(radius, passes), "cpu", overlap=overlap)


def photo(h=512, w=512, seed=0):
    """A smooth photo-like test image with edges (float32 in [0, 1])."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.25 * np.sin(x / 23.0)[..., None] * np.cos(y / 31.0)[..., None] * np.array([1, 0.7, 0.4])
    base += (((x // 64 + y // 64) % 2) * 0.2)[..., None]
    return np.clip(base + rng.normal(0, 0.05, (h, w, 3)), 0, 1).astype(np.float32)


def psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A random-init bundle (tiny DA-CLIP + tiny U-Net) saved with the real save functions."""
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


# ------------------------------------------------------------------ tiled versus untiled


@pytest.mark.parametrize("radius,passes", [(3, 1), (4, 3)])
def test_tiled_matches_untiled_within_0_05_db(radius, passes):
    clean = photo()
    noisy = np.clip(clean + np.random.default_rng(1).normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    restorer = fake_restorer(radius, passes)
    untiled = restorer.restore(noisy, RestoreOptions(tile=1024)).image
    assert restorer.model.calls == 1
    tiled = restorer.restore(noisy, RestoreOptions(tile=128)).image
    assert restorer.model.calls == 1 + len(restorer.plan(512, 512, RestoreOptions(tile=128)))
    assert abs(psnr(tiled, clean) - psnr(untiled, clean)) < 0.05
    assert psnr(tiled, untiled) > 45
    if radius * passes <= DEFAULT_OVERLAP // 4:  # context within the zero-weight margin: exact
        np.testing.assert_allclose(tiled, untiled, atol=1e-5)


def test_blending_without_overlap_would_show_seams():
    """The check above can fail: with no overlap a wide blur differs at tile seams."""
    clean = photo()
    restorer = fake_restorer(4, 3, overlap=0)
    untiled = restorer.restore(clean, RestoreOptions(tile=1024)).image
    tiled = restorer.restore(clean, RestoreOptions(tile=128)).image
    assert psnr(tiled, untiled) < 45


def test_tiled_matches_untiled_with_a_real_random_init_model(tiny_bundle):
    restorer = Restorer(tiny_bundle, device="cpu")
    image = photo(200, 328)
    image[:, :160] *= 0.3  # tiles whose colour statistics differ from the photo's (its colour head uses them)
    a = restorer.restore(image, RestoreOptions(tile=512)).image
    b = restorer.restore(image, RestoreOptions(tile=128)).image
    assert a.shape == b.shape == image.shape and a.dtype == np.float32
    assert psnr(a, b) > 45


# ------------------------------------------------------------------ progress, cancel, options


def test_progress_per_tile_and_result_fields():
    restorer = fake_restorer()
    events = []
    result = restorer.restore(photo(300, 400), RestoreOptions(tile=128), progress=events.append)
    tiles = [e for e in events if e.stage == "restore"]
    n = len(restorer.plan(300, 400, RestoreOptions(tile=128)))
    assert [e.done for e in tiles] == list(range(1, n + 1)) and all(e.total == n for e in tiles)
    assert events[0].stage == "detect"
    assert result.detection.degradations == ("noisy",) and result.seconds > 0
    assert result.image.shape == (300, 400, 3)


def test_cancel_stops_within_one_tile():
    restorer = fake_restorer()
    token = CancelToken()

    def progress(event):
        if event.stage == "restore" and event.done == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        restorer.restore(photo(300, 400), RestoreOptions(tile=128), progress=progress, cancel=token)
    assert restorer.model.calls == 2


def test_cancel_before_start_runs_nothing():
    restorer = fake_restorer()
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        restorer.restore(photo(64, 64), cancel=token)
    assert restorer.model.calls == 0


def test_degradations_override_skips_detection():
    restorer = fake_restorer()
    result = restorer.restore(photo(64, 64), RestoreOptions(degradations=("hazy", "noisy")))
    assert result.detection.degradations == ("hazy", "noisy") and result.detection.scores == {}
    assert restorer.detector.override_calls == 1


def test_steps_above_one_are_reproducible_with_a_seed():
    restorer = fake_restorer()
    image = photo(200, 200)
    a = restorer.restore(image, RestoreOptions(steps=4, tile=128, seed=3)).image
    b = restorer.restore(image, RestoreOptions(steps=4, tile=128, seed=3)).image
    c = restorer.restore(image, RestoreOptions(steps=4, tile=128, seed=4)).image
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_rejects_a_bad_image_shape():
    with pytest.raises(ValueError, match="H, W, 3"):
        fake_restorer().restore(np.zeros((10, 10), dtype=np.float32))


def test_tile_from_memory_respects_bounds_and_multiple():
    cpu = torch.device("cpu")
    assert choose_tile(cpu, 16, free_bytes=0) == MIN_TILE
    assert choose_tile(cpu, 16, free_bytes=1 << 50) == MAX_TILE_CPU
    mid = choose_tile(cpu, 48, bytes_per_pixel=10_000, free_bytes=4 << 30)
    assert mid % 48 == 0 and MIN_TILE <= mid <= MAX_TILE_CPU
    assert fake_restorer().tile_size(RestoreOptions(tile=130)) == 128


# ------------------------------------------------------------------ bundles


def test_bundle_loads_with_info_card_and_fingerprint(tiny_bundle):
    restorer = Restorer(tiny_bundle, device="cpu")
    assert restorer.model_info.name == "tiny" and restorer.model_info.path == tiny_bundle
    assert restorer.model_card().startswith("# Tiny test model")
    assert restorer.fingerprint == Restorer(tiny_bundle, device="cpu").fingerprint
    detection = restorer.detect(photo(64, 96))
    assert isinstance(detection, Detection) and len(detection.scores) > 0


def test_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a model bundle"):
        Restorer(tmp_path, device="cpu")


@pytest.mark.slow
def test_bundled_model_tiled_matches_untiled_on_a_sample():
    """The shipped model on the shipped 512x512 sample: tiles of 256 versus one tile."""
    from skimage import data

    from engine.bundle import has_bundled_model
    from engine.io.reader import read_rgb
    from engine.resources import samples_dir

    if not has_bundled_model():
        pytest.skip("no trained model bundled in resources/models/default yet")
    clean = data.astronaut().astype(np.float32) / 255.0
    noisy = read_rgb(samples_dir() / "astronaut.jpg")
    assert noisy.shape == clean.shape == (512, 512, 3)
    restorer = Restorer(device="cpu")
    prepared = restorer.prepare(noisy, RestoreOptions())
    untiled = restorer.restore_prepared(noisy, prepared, RestoreOptions(tile=512))
    tiled = restorer.restore_prepared(noisy, prepared, RestoreOptions(tile=256))
    assert len(restorer.plan(512, 512, RestoreOptions(tile=256))) == 9
    assert abs(psnr(tiled, clean) - psnr(untiled, clean)) < 0.05
    assert psnr(tiled, untiled) > 40


def test_keep_clean_returns_a_photo_without_detections_unchanged():
    img = photo(96, 128)
    clean = Restorer.from_parts(FakeDetector(()), BlurModel(), "cpu")
    events = []
    out = clean.restore(img, RestoreOptions(keep_clean=True), progress=events.append).image
    assert np.array_equal(out, img) and out is not img and clean.model.calls == 0
    assert events[-1].message == "nothing detected: kept as is"
    # off by default (with the guard off too: the guard alone also keeps a photo without detections)
    assert not np.array_equal(clean.restore(img, RestoreOptions(guard=None)).image, img)
    # something detected, or an explicit choice of degradations: restored as usual
    noisy = fake_restorer(names=("noisy",))
    assert not np.array_equal(noisy.restore(img, RestoreOptions(keep_clean=True)).image, img)
    forced = Restorer.from_parts(FakeDetector(()), BlurModel(), "cpu")
    assert not np.array_equal(forced.restore(img, RestoreOptions(keep_clean=True, degradations=("noisy",))).image, img)


def test_strength_mixes_the_restoration_with_the_input():
    img = photo(96, 128)
    before = img.copy()
    restorer = fake_restorer(names=("noisy",))
    full = restorer.restore(img, RestoreOptions()).image
    half = restorer.restore(img, RestoreOptions(strength=0.5)).image
    none = restorer.restore(img, RestoreOptions(strength=0.0)).image
    assert not np.allclose(full, img, atol=1e-3)
    np.testing.assert_allclose(half, img + 0.5 * (full - img), atol=1e-6)
    np.testing.assert_allclose(none, img, atol=1e-6)
    assert np.array_equal(img, before) and half.dtype == np.float32  # the input is only read


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_strength_outside_zero_to_one_is_refused(strength):
    with pytest.raises(ValueError, match="strength must be between 0 and 1"):
        RestoreOptions(strength=strength)
