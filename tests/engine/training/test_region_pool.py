"""The detector's region pool: views like detection's, crops on the JPEG grid, seeded, refreshed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.degradations.renderers import registry
from engine.training.region_pool import (
    GRID,
    HIGHLIGHT_MAX_GAIN,
    HIGHLIGHT_SHARE,
    JITTER_LOG_RANGES,
    PoolSpec,
    Region,
    RegionPool,
    clip_highlights,
    cut_region,
    jitter_photo,
    make_region,
    region_views,
)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((300 + 40 * i, 420, 3)) * 255).astype(np.uint8) for i in range(3)]


SPEC = PoolSpec(size=32, n_crops=3, region_min=48, region_max=96, renderers=("project",))


def test_regions_respect_the_sizes(photos):
    rng = np.random.default_rng(1)
    for _ in range(20):
        r = cut_region(photos[0], SPEC, rng)
        assert r.dtype == np.float32 and r.min() >= 0 and r.max() <= 1
        assert min(r.shape[:2]) >= SPEC.region_min
        assert max(r.shape[:2]) <= SPEC.region_max * 4 / 3 + 1


def test_views_are_the_global_view_then_native_crops_on_the_grid():
    h, w = 80, 112
    # a region whose pixel values encode their own coordinates
    yy, xx = np.mgrid[0:h, 0:w]
    lq = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)
    region = Region(lq=lq, hq=lq.copy(), names=("noisy",))
    lqv, hqv = region_views(region, SPEC, np.random.default_rng(3))
    assert lqv.shape == (4, 3, 32, 32) and torch.equal(lqv, hqv)
    for v in lqv[1:]:
        ys, xs = (v[0] * 255).round(), (v[1] * 255).round()
        x0 = min(float(xs[0, 0]), float(xs[0, -1]))  # the crop may be flipped
        assert float(ys[0, 0]) % GRID == 0 and x0 % GRID == 0
        assert float(xs.max() - xs.min()) == 31  # a native crop: no resizing
    assert float((lqv[0, 1] * 255).max()) > 100  # the global view spans the whole width


def test_the_pool_is_seeded_and_refresh_replaces_regions(photos):
    a = RegionPool(None, SPEC, 6, seed=4, photos=photos)
    b = RegionPool(None, SPEC, 6, seed=4, photos=photos)
    assert all(np.array_equal(x.lq, y.lq) and x.names == y.names for x, y in zip(a.regions, b.regions, strict=True))
    batch = a.batch(5)
    assert batch["lq"].shape == (5 * 4, 3, 32, 32) and batch["n_views"] == 4 and len(batch["names"]) == 5
    before = [r.lq for r in a.regions]
    a.refresh(12)
    assert any(not np.array_equal(x, r.lq) for x, r in zip(before, a.regions, strict=True))


def test_parallel_fill_matches_the_serial_one(photos):
    serial = RegionPool(None, SPEC, 10, seed=2, photos=photos, processes=1)
    parallel = RegionPool(None, SPEC, 10, seed=2, photos=photos, processes=2)
    assert all(np.array_equal(x.lq, y.lq) for x, y in zip(serial.regions, parallel.regions, strict=True))


def test_photo_jitter_recolours_within_its_ranges_and_is_seeded():
    rng = np.random.default_rng(5)
    region = rng.uniform(0.2, 0.8, (40, 50, 3)).astype(np.float32)
    assert np.array_equal(jitter_photo(region, 0.0, np.random.default_rng(1)), region)  # strength 0: unchanged
    a = jitter_photo(region, 1.0, np.random.default_rng(1))
    assert np.array_equal(a, jitter_photo(region, 1.0, np.random.default_rng(1)))
    assert a.dtype == np.float32 and a.shape == region.shape and 0.0 <= a.min() and a.max() <= 1.0
    outs = [jitter_photo(region, 1.0, np.random.default_rng(s)) for s in range(30)]
    assert max(float(np.abs(o - region).mean()) for o in outs) > 0.02  # it changes the photo ...
    # ... but only mildly: the mean brightness moves by less than the largest gamma allows, far from low light's
    ratio = [float(o.mean() / region.mean()) for o in outs]
    assert min(ratio) > np.exp(-2 * JITTER_LOG_RANGES["exposure_gamma"]) and max(ratio) < 1.5


def test_jitter_changes_the_clean_regions_only_when_asked(photos):
    plain = RegionPool(None, SPEC, 4, seed=4, photos=photos)
    again = RegionPool(None, dataclasses.replace(SPEC, photo_jitter=0.0), 4, seed=4, photos=photos)
    jittered = RegionPool(None, dataclasses.replace(SPEC, photo_jitter=1.0), 4, seed=4, photos=photos)
    assert all(np.array_equal(x.hq, y.hq) for x, y in zip(plain.regions, again.regions, strict=True))
    assert any(not np.array_equal(x.hq, y.hq) for x, y in zip(plain.regions, jittered.regions, strict=True))
    with pytest.raises(ValueError, match="photo_jitter"):
        PoolSpec(photo_jitter=1.5)


def test_photo_turns_turn_the_clean_region_before_it_is_degraded(photos):
    """The clean region is the unturned cut turned by the next draw's multiple of 90 degrees."""
    spec = dataclasses.replace(SPEC, photo_turns=True)
    turns = set()
    for seed in range(8):
        mirror = np.random.default_rng(seed)
        mirror.integers(1)  # make_region's choice of photo
        cut = cut_region(photos[0], spec, mirror)
        k = int(mirror.integers(4))
        turns.add(k)
        region = make_region(photos[:1], spec, np.random.default_rng(seed), registry(spec.renderers))
        assert np.array_equal(region.hq, (np.rot90(cut, k) * 255.0 + 0.5).astype(np.uint8))
    assert turns - {0}  # some regions were turned, so the check above can fail


def test_clip_highlights_drive_a_share_of_the_region_to_white_and_never_darken():
    rng = np.random.default_rng(3)
    region = rng.uniform(0.05, 0.7, (60, 80, 3)).astype(np.float32)
    for seed in range(10):
        out = clip_highlights(region, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.shape == region.shape and out.max() <= 1.0
        assert (out >= region - 1e-6).all()  # a gain of at least 1: over-exposed, never darker
        white = float((out.max(axis=2) >= 1.0).mean())
        assert HIGHLIGHT_SHARE[0] * 0.9 <= white <= HIGHLIGHT_SHARE[1] * 1.1
    dark = np.full((20, 20, 3), 0.1, np.float32)  # the gain is capped: a dark region is not lifted to white
    assert np.allclose(clip_highlights(dark, np.random.default_rng(0)), 0.1 * HIGHLIGHT_MAX_GAIN)


def test_highlights_change_the_clean_regions_only_when_asked(photos):
    plain = RegionPool(None, SPEC, 6, seed=4, photos=photos)
    pushed = RegionPool(None, dataclasses.replace(SPEC, photo_highlights=1.0), 6, seed=4, photos=photos)
    white = lambda pool: [float((r.hq.max(axis=2) == 255).mean()) for r in pool.regions]  # noqa: E731
    assert min(white(pushed)) >= HIGHLIGHT_SHARE[0] * 0.9 and max(white(plain)) < HIGHLIGHT_SHARE[0]
    with pytest.raises(ValueError, match="photo_highlights"):
        PoolSpec(photo_highlights=-0.1)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="size <= region_min"):
        PoolSpec(size=64, region_min=32)
