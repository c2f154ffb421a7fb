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
from engine.io.reader import ImageReadError, list_images, open_image
from engine.training.common import TrainingDataError


def load_photos(clean_dir: Path, max_side: int = 1024, recursive: bool = True) -> list[np.ndarray]:
    """Read every image in ``clean_dir`` as uint8 RGB, downsized to at most ``max_side``.

    Unreadable files are skipped with one warning each; a missing folder or one without any readable
    image raises :class:`~engine.training.common.TrainingDataError` with a one-line message.
    """
    clean_dir = Path(clean_dir)
    if not clean_dir.is_dir():
        raise TrainingDataError(f"{clean_dir}: no such folder of clean photos")
    photos = []
    for path in list_images(clean_dir, recursive=recursive):
        photo = _load_photo(path, max_side)
        if photo is not None:
            photos.append(photo)
    if not photos:
        raise TrainingDataError(f"{clean_dir}: no readable images")
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
                raise TrainingDataError(f"{clean_dir}: no such folder of clean photos")
            self.photos = None
            self.paths = list_images(clean_dir, recursive=True)
            if not self.paths:
                raise TrainingDataError(f"{clean_dir}: no images")

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


def global_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """The whole ``[3, H, W]`` image resized to ``size`` x ``size`` exactly as the detector's global
    view (:meth:`engine.inference.detect.Detector._views`): antialiased bilinear, clamped to [0, 1]."""
    out = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True,
                                          align_corners=False)
    return out[0].clamp_(0.0, 1.0)


class PhotoViews(IterableDataset):
    """An endless stream of detector training views that look like what the detector sees in a photo.

    A region of a clean photo (short side log-uniform in ``[region_min, region_max]``, aspect ratio
    between 3:4 and 4:3, random horizontal flip) is degraded at its own scale, as a whole photo of
    that size would be. It then yields ``views_per_region`` samples: first its **global view** (the
    region resized to ``crop``, as :meth:`engine.inference.detect.Detector.analyze` resizes a photo), then
    **native crops** (``crop`` x ``crop`` at full resolution, random positions), each with the clean
    view from the same place. Training on both kinds teaches scene-scale damage (haze, rain, missing
    regions) from the global view and pixel-scale damage (noise, JPEG blocks, blur) from the native
    crops, which is how detection combines them. Samples are ``{"lq", "hq", "names", "view"}`` with
    ``view`` 0 for a global view and 1 for a native crop.
    """

    def __init__(self, clean_dir: Path, crop: int, preset: str = "train", seed: int = 0, rank: int = 0,
                 world_size: int = 1, region_min: int = 96, region_max: int = 512, views_per_region: int = 4,
                 max_side: int = 1024):
        super().__init__()
        if not crop <= region_min <= region_max:
            raise ValueError(f"need crop <= region_min <= region_max, got {crop}, {region_min}, {region_max}")
        if views_per_region < 1:
            raise ValueError("views_per_region must be at least 1")
        sample_combination(np.random.default_rng(0), preset)  # validates the preset name
        self.source = _PhotoSource(Path(clean_dir), max_side, in_memory=True)
        self.crop, self.preset, self.seed = int(crop), preset, int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.region_min, self.region_max = int(region_min), int(region_max)
        self.views_per_region = int(views_per_region)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def sample_region(self, photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random clean region of ``photo`` (float32 HWC in [0, 1]) sized as described above."""
        h, w = photo.shape[:2]
        short = float(np.exp(rng.uniform(np.log(self.region_min), np.log(self.region_max))))
        aspect = float(np.exp(rng.uniform(np.log(0.75), np.log(4 / 3))))
        rh, rw = (short, short * aspect) if aspect >= 1 else (short / aspect, short)
        fit = min(1.0, h / rh, w / rw)  # shrink the region to fit the photo
        rh, rw = max(self.crop, int(rh * fit)), max(self.crop, int(rw * fit))
        if rh > h or rw > w:  # a photo smaller than one crop: upscale it
            photo = np.asarray(Image.fromarray(photo).resize((max(w, rw), max(h, rh)), Image.Resampling.BICUBIC))
            h, w = photo.shape[:2]
        y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        region = photo[y : y + rh, x : x + rw]
        if rng.random() < 0.5:
            region = region[:, ::-1]
        return np.ascontiguousarray(region, dtype=np.float32) / 255.0

    def degraded_regions(self, stream: int = 1):
        """Endless ``(rng, hq, lq, names)``: clean region, its degraded copy (clipped to [0, 1]) and
        the applied names; ``rng`` is this (rank, worker, ``stream``)'s generator, for cropping."""
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None:
            torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, stream])
        while True:
            photo = self.source.get(int(rng.integers(len(self.source))))
            if photo is None:
                continue
            hq = self.sample_region(photo, rng)
            names = tuple(sample_combination(rng, self.preset))
            lq, _ = apply_degradations(hq, names, rng)
            yield rng, hq, np.clip(lq, 0.0, 1.0), names

    def __iter__(self):
        c = self.crop
        for rng, hq, lq, names in self.degraded_regions(stream=1):
            hq_t, lq_t = _to_tensor(hq), _to_tensor(lq)
            h, w = hq.shape[:2]
            for v in range(self.views_per_region):
                if v == 0:
                    yield {"lq": global_view(lq_t, c), "hq": global_view(hq_t, c), "names": names, "view": 0}
                else:
                    y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
                    yield {"lq": lq_t[:, y : y + c, x : x + c].contiguous(), "hq": hq_t[:, y : y + c, x : x + c].contiguous(),
                           "names": names, "view": 1}


class RegionPairs(IterableDataset):
    """An endless stream of restorer training pairs cut from photo regions degraded at their own scale.

    Each sample degrades a region of a clean photo (short side log-uniform in ``[crop, region_max]``,
    aspect ratio 3:4 to 4:3, as :class:`PhotoViews`) the way a whole photo of that size would be,
    then takes a native-resolution ``crop`` x ``crop`` pair from it: the restorer works on photos at
    full resolution (in tiles), so it trains on damage at the scale it meets there. With
    ``with_region`` the sample also carries the whole degraded region (``"region"``, float32 HWC),
    so the trainer can condition the crop on what the detector sees in the region, exactly as the
    runtime conditions a tile on what the detector sees in the photo.
    """

    def __init__(self, clean_dir: Path, crop: int, preset: str = "train", seed: int = 0, rank: int = 0,
                 world_size: int = 1, region_max: int = 512, with_region: bool = True, max_side: int = 1024):
        super().__init__()
        self._regions = PhotoViews(clean_dir, crop, preset, seed, rank, world_size, region_min=crop,
                                   region_max=max(crop, region_max), views_per_region=1, max_side=max_side)
        self.with_region = with_region

    def set_epoch(self, epoch: int) -> None:
        self._regions.set_epoch(epoch)

    def __iter__(self):
        c = self._regions.crop
        for rng, hq, lq, names in self._regions.degraded_regions(stream=2):
            h, w = hq.shape[:2]
            y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
            sample = {"lq": _to_tensor(lq[y : y + c, x : x + c]), "hq": _to_tensor(hq[y : y + c, x : x + c]),
                      "names": names}
            if self.with_region:
                sample["region"] = lq
            yield sample


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
    """Stack samples into ``{"lq": [B, 3, H, W], "hq": [B, 3, H, W], "names": list[tuple]}``
    (plus ``"regions"``, a list of arrays, when the samples carry one)."""
    out = {
        "lq": torch.stack([b["lq"] for b in batch]),
        "hq": torch.stack([b["hq"] for b in batch]),
        "names": [b["names"] for b in batch],
    }
    if all("region" in b for b in batch):
        out["regions"] = [b["region"] for b in batch]
    return out

