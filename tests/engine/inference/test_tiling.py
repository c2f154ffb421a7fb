"""Tile planning and blending windows (pure numpy)."""

import numpy as np
import pytest

from engine.inference.tiling import (
    axis_windows,
    blend_tile,
    fit_tile,
    pad_amount,
    plan_tiles,
    round_tile,
    tile_starts,
)


@pytest.mark.parametrize("length,tile,overlap", [(512, 128, 32), (993, 512, 32), (100, 128, 32),
                                                 (1000, 256, 64), (4000, 1024, 32), (129, 128, 32)])
def test_windows_cover_and_sum_to_one(length, tile, overlap):
    windows = axis_windows(length, tile, overlap)
    total = np.zeros(length)
    for start, w in windows:
        assert w.dtype == np.float32 and len(w) == min(tile, length)
        assert start >= 0 and start + len(w) <= length
        total[start:start + len(w)] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-5)


def test_starts_first_at_zero_last_at_end_with_enough_overlap():
    starts = tile_starts(1000, 256, 32)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 32 for a, b in zip(starts[:-1], starts[1:], strict=True))
    assert tile_starts(200, 256, 32) == [0]
    with pytest.raises(ValueError):
        tile_starts(0, 256, 32)


def test_window_is_zero_at_inner_edges_and_one_at_image_border():
    (s0, w0), (s1, w1) = axis_windows(400, 256, 112)[:2]
    overlap = s0 + 256 - s1
    margin = overlap // 4
    assert np.all(w0[:s1] == 1.0)  # border side and interior untouched
    assert np.all(w0[-margin:] < 1e-6)  # the last pixels of a tile, next to its edge, do not count
    assert np.all(w1[:margin] < 1e-6)
    assert np.all(np.diff(w0[s1:]) <= 1e-7)  # monotone ramp down


def test_plan_blend_reassembles_an_identity():
    rng = np.random.default_rng(0)
    image = rng.random((300, 437, 3), dtype=np.float32)
    plan = plan_tiles(300, 437, 128, 32, multiple=8)
    assert len(plan) == len(tile_starts(300, 128, 32)) * len(tile_starts(437, 128, 32))  # no more tiles
    assert (plan.tile_h, plan.tile_w) == (128, 120)  # but smaller ones, multiples of 8
    assert 300 * 437 < plan.processed_pixels < len(plan) * 128 * 128
    out = np.zeros_like(image)
    for tile in plan.tiles:
        assert (tile.height, tile.width) == (128, 120)
        blend_tile(out, plan, tile, image[tile.y0:tile.y1, tile.x0:tile.x1])
    np.testing.assert_allclose(out, image, atol=1e-5)


def test_small_image_is_one_tile():
    plan = plan_tiles(50, 70, 256)
    assert len(plan) == 1 and (plan.tiles[0].height, plan.tiles[0].width) == (50, 70)
    np.testing.assert_allclose(plan.window(plan.tiles[0]), 1.0)


def test_fit_tile_keeps_the_tile_count_and_shrinks_the_side():
    assert fit_tile(1155, 640, 32, 16) == 608
    assert fit_tile(500, 640, 32, 16) == 500
    for length in range(257, 3000, 37):
        side = fit_tile(length, 256, 32, 16)
        assert side % 16 == 0 and side <= 256
        assert len(tile_starts(length, side, 32)) == len(tile_starts(length, 256, 32))


def test_rounding_helpers():
    assert pad_amount(30, 16) == 2 and pad_amount(32, 16) == 0
    assert round_tile(500, 16) == 496
    assert round_tile(10, 16) == 64  # at least the minimum
    assert round_tile(100, 48, minimum=64) == 96
