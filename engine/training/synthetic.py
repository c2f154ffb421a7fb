"""Degraded/clean training pairs synthesised on the fly from a folder of clean photos.

:class:`SyntheticPairs` is an endless stream for training (different per rank and per data-loader
worker, reproducible for a seed); :class:`FixedSyntheticSet` a fixed, indexable set for validation.
Both yield ``{"lq": [3, crop, crop], "hq": [3, crop, crop], "names": tuple}``: float tensors in
``[0, 1]`` and the applied degradation names in physical order. :func:`collate_pairs` batches them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from engine.degradations import apply_degradations, preset_combinations, sample_combination
from engine.imageio import ImageReadError, list_images, open_image


def load_photos(clean_dir: Path, max_side: int = 1024, recursive: bool = True) -> list[np.ndarray]:
    """Read every image in ``clean_dir`` as uint8 RGB, downsized to at most ``max_side``.

    Unreadable files are skipped with one warning each; a missing folder or one without any readable
    image raises ``ValueError`` with a one-line message.
    """
    clean_dir = Path(clean_dir)
    if not clean_dir.is_dir():
        raise ValueError(f"{clean_dir}: no such folder of clean photos")
    photos = []
    for path in list_images(clean_dir, recursive=recursive):
        photo = _load_photo(path, max_side)
        if photo is not None:
            photos.append(photo)
    if not photos:
        raise ValueError(f"{clean_dir}: no readable images")
    return photos


def _load_photo(path: Path, max_side: int) -> np.ndarray | None:
    try:
        im = open_image(path).convert("RGB")
    except ImageReadError as exc:
        warnings.warn(f"skipping {exc}", stacklevel=3)
        return None
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def random_crop(photo: np.ndarray, crop: int, rng: np.random.Generator, min_scale: float = 1.0) -> np.ndarray:
    """A random ``crop`` x ``crop`` float32 patch, optionally of a region zoomed out by a scale in
    ``[min_scale, 1]``, with a random horizontal flip. Photos smaller than ``crop`` are upscaled."""
    h, w = photo.shape[:2]
    scale = rng.uniform(min_scale, 1.0) if min_scale < 1.0 else 1.0
    region = min(h, w, max(1, round(crop / scale)))
    y = int(rng.integers(0, h - region + 1))
    x = int(rng.integers(0, w - region + 1))
    patch = photo[y : y + region, x : x + region]
    if region != crop:
        patch = np.asarray(Image.fromarray(patch).resize((crop, crop), Image.Resampling.BICUBIC))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch, dtype=np.float32) / 255.0


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def make_pair(photo: np.ndarray, crop: int, rng: np.random.Generator, names: tuple[str, ...] | None,
              preset: str, min_crop_scale: float = 1.0) -> dict:
    """One training sample from ``photo``; ``names=None`` draws them from ``preset``."""
    hq = random_crop(photo, crop, rng, min_crop_scale)
    if names is None:
        names = sample_combination(rng, preset)
    lq, _ = apply_degradations(hq, names, rng)
    return {"lq": _to_tensor(lq), "hq": _to_tensor(hq), "names": tuple(names)}


class _PhotoSource:
    """The clean photos, held in memory or read from disk on demand."""

    def __init__(self, clean_dir: Path, max_side: int, in_memory: bool):
        self.max_side = max_side
        if in_memory:
            self.photos: list[np.ndarray] | None = load_photos(clean_dir, max_side)
            self.paths: list[Path] = []
        else:
            clean_dir = Path(clean_dir)
            if not clean_dir.is_dir():
                raise ValueError(f"{clean_dir}: no such folder of clean photos")
            self.photos = None
            self.paths = list_images(clean_dir, recursive=True)
            if not self.paths:
                raise ValueError(f"{clean_dir}: no images")

    def __len__(self) -> int:
        return len(self.photos) if self.photos is not None else len(self.paths)

    def get(self, index: int) -> np.ndarray | None:
        if self.photos is not None:
            return self.photos[index]
        return _load_photo(self.paths[index], self.max_side)


class SyntheticPairs(IterableDataset):
    """An endless stream of synthetic (lq, hq) crops for training.

    Each (rank, data-loader worker) pair draws from its own generator seeded with
    ``(seed, epoch, rank, worker)``, so streams differ across processes and repeat exactly for the
    same seed. Call :meth:`set_epoch` to get a fresh stream in a new epoch.
    """

    def __init__(self, clean_dir: Path, crop: int, preset: str = "train", seed: int = 0, rank: int = 0,
                 world_size: int = 1, photos_in_memory: bool = True, max_side: int = 1024,
                 min_crop_scale: float = 1.0):
        super().__init__()
        if not 0 < min_crop_scale <= 1.0:
            raise ValueError(f"min_crop_scale must be in (0, 1], got {min_crop_scale}")
        sample_combination(np.random.default_rng(0), preset)  # validates the preset name
        self.source = _PhotoSource(Path(clean_dir), max_side, photos_in_memory)
        self.crop, self.preset, self.seed = int(crop), preset, int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.min_crop_scale = float(min_crop_scale)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        while True:
            photo = self.source.get(int(rng.integers(len(self.source))))
            if photo is None:
                continue
            yield make_pair(photo, self.crop, rng, None, self.preset, self.min_crop_scale)


class FixedSyntheticSet(Dataset):
    """``n`` deterministic synthetic pairs for validation: item ``i`` depends only on ``(seed, i)``.

    For presets with a fixed list of combinations (``seed24``, ``all``) item ``i`` uses combination
    ``i mod len(list)``, so every combination is covered equally; photos rotate the same way.
    """

    def __init__(self, clean_dir: Path, crop: int, preset: str = "all", n: int = 64, seed: int = 0,
                 max_side: int = 1024):
        sample_combination(np.random.default_rng(0), preset)  # validates the preset name
        self.photos = load_photos(Path(clean_dir), max_side)
        self.crop, self.preset, self.n, self.seed = int(crop), preset, int(n), int(seed)
        try:
            self.combos: list[tuple[str, ...]] | None = preset_combinations(preset)
        except ValueError:
            self.combos = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        if self.combos is not None:
            names = self.combos[index % len(self.combos)]
            photo = self.photos[(index // len(self.combos) + index) % len(self.photos)]
        else:
            names = None
            photo = self.photos[int(rng.integers(len(self.photos)))]
        return make_pair(photo, self.crop, rng, names, self.preset)


def collate_pairs(batch: list[dict]) -> dict:
    """Stack samples into ``{"lq": [B, 3, H, W], "hq": [B, 3, H, W], "names": list[tuple]}``."""
    return {
        "lq": torch.stack([b["lq"] for b in batch]),
        "hq": torch.stack([b["hq"] for b in batch]),
        "names": [b["names"] for b in batch],
    }

