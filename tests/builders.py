"""Small inputs that many tests build: photo files and folders of sample photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_photo(path: Path, size: tuple[int, int] = (48, 40), seed: int = 0) -> Path:
    """A random RGB photo of ``size`` (width, height) at ``path`` (its folders made); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def sample_photos(folder: Path, names: tuple[str, ...], max_side: int) -> Path:
    """scikit-image's sample photos ``names`` as PNGs of at most ``max_side`` pixels in ``folder``."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        im.thumbnail((max_side, max_side))
        im.save(folder / f"{name}.png")
    return folder


def photo_splits(root: Path, splits: dict[str, tuple[str, ...]], max_side: int) -> Path:
    """``root/<split>/`` folders of sample photos, as `python -m engine.training.photos` makes them."""
    for split, names in splits.items():
        sample_photos(root / split, names, max_side)
    return root
