"""Tile planning and seamless blending for full-resolution restoration (pure numpy).

An image is covered by a grid of overlapping tiles. Each tile's output is weighted by a separable
window that is zero on the outer quarter of each overlap (where the network sees least context),
ramps linearly across the middle of the overlap and stays flat at the image border; the windows are normalised per axis so that, over the whole grid, they sum to exactly 1
at every pixel. The blended image is therefore a plain overlap-add into one ``float32`` buffer:
no weight buffer, no final division, no float64 copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_OVERLAP = 32


@dataclass(frozen=True)
class Tile:
    """One tile: rows ``y0:y1`` and columns ``x0:x1`` of the image; ``index`` in raster order."""

    index: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` shared.

    Tiles are spaced evenly (the first at 0, the last ending at ``length``); a length that fits
    in one tile gives ``[0]``.
    """
    if length <= 0 or tile <= 0:
        raise ValueError(f"bad tiling: length={length}, tile={tile}")
    if length <= tile:
        return [0]
    overlap = max(0, min(overlap, tile // 2))
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def fit_tile(length: int, tile: int, overlap: int, multiple: int = 1) -> int:
    """The smallest side (a multiple of ``multiple``) that covers ``length`` with as few tiles as ``tile`` would.

    A 1155-pixel side with 640-pixel tiles needs two tiles either way; two of 608 pixels process
    far fewer redundant pixels than two of 640. A length that fits in one tile is returned as is.
    """
    if length <= tile:
        return length
    overlap = max(0, min(overlap, tile // 2))
    n = math.ceil((length - tile) / (tile - overlap)) + 1
    side = math.ceil((length + (n - 1) * overlap) / n)
    side += pad_amount(side, multiple)
    return min(side, tile) if tile % max(multiple, 1) == 0 else side


def axis_windows(length: int, tile: int, overlap: int) -> list[tuple[int, np.ndarray]]:
    """``(start, weights)`` per tile along one axis; the weights of all tiles sum to 1 everywhere.

    Inside an overlap, a tile's weight is 0 on the ``overlap // 4`` pixels nearest its own edge
    (where the network lacks context), then ramps linearly to 1; at the image border it is 1.
    """
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    raw = []
    pos = np.arange(size) + 0.5
    for i, s in enumerate(starts):
        w = np.ones(size, dtype=np.float64)
        if i > 0:  # ramp up across the overlap with the previous tile
            ov = starts[i - 1] + size - s
            margin = ov // 4
            w = np.minimum(w, (pos - margin) / max(ov - 2 * margin, 1))
        if i < len(starts) - 1:  # ramp down across the overlap with the next tile
            ov = s + size - starts[i + 1]
            margin = ov // 4
            w = np.minimum(w, (size - pos - margin) / max(ov - 2 * margin, 1))
        raw.append(np.clip(w, 1e-9, 1.0))
    total = np.zeros(length, dtype=np.float64)
    for s, w in zip(starts, raw, strict=True):
        total[s:s + size] += w
    return [(s, (w / total[s:s + size]).astype(np.float32)) for s, w in zip(starts, raw, strict=True)]


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one image and their blending windows (see :func:`plan_tiles`)."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    tiles: tuple[Tile, ...]
    _rows: tuple[np.ndarray, ...]
    _cols: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.tiles)

    def window(self, tile: Tile) -> np.ndarray:
        """The ``float32 (h, w, 1)`` blending weights of ``tile``."""
        n_cols = len(self._cols)
        wy = self._rows[tile.index // n_cols]
        wx = self._cols[tile.index % n_cols]
        return (wy[:, None] * wx[None, :])[..., None]

    @property
    def processed_pixels(self) -> int:
        """Pixels fed to the network in all (overlaps counted twice)."""
        return sum(t.height * t.width for t in self.tiles)


def plan_tiles(height: int, width: int, tile: int, overlap: int = DEFAULT_OVERLAP, multiple: int = 1) -> TilePlan:
    """Cover a ``height x width`` image with overlapping tiles of at most ``tile x tile`` pixels.

    Per axis, the tile side is shrunk to the smallest multiple of ``multiple`` that needs no more
    tiles (:func:`fit_tile`); an axis that fits in one tile is one tile of the image's size.
    """
    th, tw = fit_tile(height, tile, overlap, multiple), fit_tile(width, tile, overlap, multiple)
    rows = axis_windows(height, th, overlap)
    cols = axis_windows(width, tw, overlap)
    tiles = []
    for (y, _), (x, _) in ((r, c) for r in rows for c in cols):
        tiles.append(Tile(len(tiles), y, y + th, x, x + tw))
    return TilePlan(height, width, th, tw, overlap, tuple(tiles),
                    tuple(w for _, w in rows), tuple(w for _, w in cols))


def blend_tile(out: np.ndarray, plan: TilePlan, tile: Tile, pixels: np.ndarray, in_place: bool = False) -> None:
    """Add ``pixels`` (``float32 (h, w, 3)``, the restored tile) into ``out`` with its window.

    ``in_place=True`` lets it scale ``pixels`` itself instead of a temporary copy.
    """
    region = out[tile.y0:tile.y1, tile.x0:tile.x1]
    if in_place and pixels.flags.writeable:
        pixels *= plan.window(tile)
        region += pixels
    else:
        region += pixels * plan.window(tile)


def pad_amount(size: int, multiple: int) -> int:
    """Pixels to add so that ``size`` becomes a multiple of ``multiple``."""
    return (-size) % max(1, multiple)


def round_tile(tile: int, multiple: int, minimum: int = 64) -> int:
    """Round a tile side down to a multiple of ``multiple`` (at least ``max(minimum, multiple)``)."""
    multiple = max(1, multiple)
    lowest = max(minimum, multiple)
    lowest += pad_amount(lowest, multiple)
    return max(lowest, tile - tile % multiple)
