"""A pool of photo regions degraded at their own scale, and the detector's views of them.

Rendering a degradation costs 5-300 ms a region on this CPU; a network step on a batch of views
costs about as much as rendering a few regions. So the trainer keeps a pool of degraded regions in
memory, draws each batch's views from it (fresh crops, flips) and replaces a few regions per step
(:meth:`RegionPool.refresh`), which keeps the stream diverse at a fraction of the rendering cost.

A region (float, then stored as uint8) is cut from a clean photo at a random scale (multi-scale:
the photo is seen at 1/``max_zoom_out`` to 1x of its stored size, short side ``region_min`` to
``region_max``, aspect 3:4 to 4:3), turned by a random multiple of 90 degrees if ``photo_turns`` says so,
recoloured if ``photo_jitter`` says so (:func:`jitter_photo`), over-exposed for a ``photo_highlights`` share of
them (:func:`clip_highlights`),
and degraded whole, as a photo of that size would be, by
:func:`engine.degradations.apply_degradations` with a renderer mix
(:func:`engine.degradations.renderers.registry`). A region's views are what
:meth:`engine.inference.detect.Detector.analyze` looks at: its global view (the region resized to ``size``)
then ``n_crops`` native ``size`` crops on the 16 px grid (JPEG blocks stay aligned), each view with
a random horizontal flip.

Everything is seeded: region ``i`` of fill ``f`` depends only on ``(seed, f, i)``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.degradations import apply_degradations, sample_combination
from engine.degradations.renderers import registry
from engine.training.synthetic import load_photos

GRID = 16


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """How regions are drawn (see the module docstring)."""

    size: int = 128
    n_crops: int = 3
    preset: str = "train"
    renderers: tuple[str, ...] = ("project", "albumentations")
    region_min: int = 128
    region_max: int = 640
    max_zoom_out: float = 4.0
    photo_jitter: float = 0.0
    photo_turns: bool = False  # turn each clean region by 0/90/180/270 degrees before degrading it
    photo_highlights: float = 0.0  # share of clean regions over-exposed until some of them clips to white

    def __post_init__(self) -> None:
        if not 0.0 <= self.photo_jitter <= 1.0:
            raise ValueError(f"photo_jitter must be between 0 and 1, got {self.photo_jitter}")
        if not 0.0 <= self.photo_highlights <= 1.0:
            raise ValueError(f"photo_highlights must be between 0 and 1, got {self.photo_highlights}")
        if not self.size <= self.region_min <= self.region_max:
            raise ValueError(f"need size <= region_min <= region_max, got {self.size}, {self.region_min}, "
                             f"{self.region_max}")
        if self.max_zoom_out < 1.0:
            raise ValueError("max_zoom_out must be at least 1")


@dataclasses.dataclass
class Region:
    lq: np.ndarray  # uint8 HWC
    hq: np.ndarray
    names: tuple[str, ...]


def cut_region(photo: np.ndarray, spec: PoolSpec, rng: np.random.Generator) -> np.ndarray:
    """A clean float32 region of ``photo`` (uint8 HWC) at a random scale, sized per ``spec``."""
    h, w = photo.shape[:2]
    short = float(np.exp(rng.uniform(np.log(spec.region_min), np.log(spec.region_max))))
    aspect = float(np.exp(rng.uniform(np.log(0.75), np.log(4 / 3))))
    rh, rw = (short, short * aspect) if aspect >= 1 else (short / aspect, short)
    # the region's extent in the stored photo: zoomed out by up to max_zoom_out, never beyond the photo
    zoom = float(np.exp(rng.uniform(0.0, np.log(spec.max_zoom_out))))
    zoom = min(zoom, h / rh, w / rw)
    zoom = max(zoom, min(h / rh, w / rw, 1.0))  # a small photo: take what fits, upscaled below
    sh, sw = min(h, max(1, int(rh * zoom))), min(w, max(1, int(rw * zoom)))
    y, x = int(rng.integers(0, h - sh + 1)), int(rng.integers(0, w - sw + 1))
    out_h, out_w = max(spec.region_min, int(rh)), max(spec.region_min, int(rw))
    out_h, out_w = max(out_h, spec.size), max(out_w, spec.size)
    patch = Image.fromarray(photo[y:y + sh, x:x + sw])
    if (sw, sh) != (out_w, out_h):
        patch = patch.resize((out_w, out_h), Image.Resampling.LANCZOS if zoom > 1 else Image.Resampling.BICUBIC)
    return np.asarray(patch, dtype=np.float32) / 255.0


# photo_jitter = 1: the largest change of each kind, as log-factors (gain e^0.1 = 1.105)
JITTER_LOG_RANGES = {"white_balance": 0.1, "exposure_gamma": 0.2, "contrast": 0.2, "saturation": 0.35}


def jitter_photo(region: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """The clean ``region`` (float32 HWC in [0, 1]) as another camera or another edit might have
    rendered the scene: white balance, a gamma (exposure of the mid-tones), contrast about the mean and
    saturation, each a random log-factor up to ``strength`` x :data:`JITTER_LOG_RANGES`. With few
    training photos the models learn the photos as well as the degradations; these are new photos
    of the same scenes that still need no restoration (the changes stay far from low light's)."""
    r = {k: float(rng.uniform(-v, v)) * strength for k, v in JITTER_LOG_RANGES.items() if k != "white_balance"}
    wb = np.exp(rng.uniform(-1.0, 1.0, 3) * JITTER_LOG_RANGES["white_balance"] * strength).astype(np.float32)
    x = np.clip(region * wb / wb.mean(), 0.0, 1.0) ** np.float32(np.exp(r["exposure_gamma"]))
    mean = x.mean(dtype=np.float64)
    x = mean + (x - mean) * np.float32(np.exp(r["contrast"]))
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * np.float32(np.exp(r["saturation"]))
    return np.clip(x, 0.0, 1.0).astype(np.float32)


# clip_highlights: the share of a region's pixels driven to white, and the largest gain it may take
HIGHLIGHT_SHARE = (0.02, 0.15)
HIGHLIGHT_MAX_GAIN = 2.0


def clip_highlights(region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The clean ``region`` (float32 HWC in [0, 1]) over-exposed as a sensor clips: one gain drives a drawn
    share (:data:`HIGHLIGHT_SHARE`) of its pixels to white, at most :data:`HIGHLIGHT_MAX_GAIN`. A photo's blown
    sky or lit wall is flat white with sharp edges, like the holes of ``uncompleted``, and needs no
    restoration: without such photos in training, the detector calls white areas holes and the restorer
    paints them over."""
    share = float(rng.uniform(*HIGHLIGHT_SHARE))
    level = float(np.quantile(region.max(axis=2), 1.0 - share))
    gain = min(HIGHLIGHT_MAX_GAIN, 1.0 / max(level, 1e-3))
    return np.clip(region * np.float32(max(gain, 1.0)), 0.0, 1.0).astype(np.float32)


def make_region(photos: list[np.ndarray], spec: PoolSpec, rng: np.random.Generator, reg: dict) -> Region:
    photo = photos[int(rng.integers(len(photos)))]
    hq = cut_region(photo, spec, rng)
    if spec.photo_turns:  # the scene turned, then degraded upright: rain still falls, blocks stay on the grid
        hq = np.ascontiguousarray(np.rot90(hq, int(rng.integers(4))))
    if spec.photo_jitter > 0:  # only then: the stream of a recipe without it stays as it was
        hq = jitter_photo(hq, spec.photo_jitter, rng)
    if spec.photo_highlights > 0 and rng.random() < spec.photo_highlights:
        hq = clip_highlights(hq, rng)
    names = tuple(sample_combination(rng, spec.preset))
    lq, _ = apply_degradations(hq, names, rng, registry=reg)
    to8 = lambda a: (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # noqa: E731
    return Region(lq=to8(lq), hq=to8(hq), names=names)


def _fill_worker(args) -> list[Region]:
    photos, spec, seeds = args
    reg = registry(spec.renderers)
    return [make_region(photos, spec, np.random.default_rng(s), reg) for s in seeds]


def region_views(region: Region, spec: PoolSpec, rng: np.random.Generator, n_crops: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lq, hq)`` views ``[1 + n_crops, 3, size, size]`` float in [0, 1]: global view, then native crops."""
    n_crops = spec.n_crops if n_crops is None else n_crops
    s = spec.size
    lq = torch.from_numpy(region.lq).permute(2, 0, 1).float().div_(255.0)
    hq = torch.from_numpy(region.hq).permute(2, 0, 1).float().div_(255.0)
    both = torch.stack([lq, hq])
    glob = F.interpolate(both, size=(s, s), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    views = [glob]
    h, w = lq.shape[1:]
    for _ in range(n_crops):
        y = int(rng.integers(0, (h - s) // GRID + 1)) * GRID
        x = int(rng.integers(0, (w - s) // GRID + 1)) * GRID
        views.append(both[:, :, y:y + s, x:x + s])
    out = torch.stack(views, 1)  # [2, V, 3, s, s]
    flips = torch.from_numpy(rng.random(out.shape[1]) < 0.5)
    out[:, flips] = out[:, flips].flip(-1)
    return out[0].contiguous(), out[1].contiguous()


class RegionPool:
    """``pool_size`` degraded regions of the photos in ``clean_dir``, refreshed a few at a time."""

    def __init__(self, clean_dir: Path | None, spec: PoolSpec, pool_size: int, seed: int = 0, max_side: int = 1536,
                 processes: int = 1, photos: list[np.ndarray] | None = None):
        self.spec, self.seed = spec, int(seed)
        self.photos = photos if photos is not None else load_photos(Path(clean_dir), max_side)
        self.registry = registry(spec.renderers)
        self._fills = 0
        self.regions = self._make(pool_size, processes)
        self._rng = np.random.default_rng([self.seed, 1])

    def _make(self, n: int, processes: int) -> list[Region]:
        fill = self._fills
        self._fills += 1
        seeds = [[self.seed, fill, i] for i in range(n)]
        if processes <= 1 or n < 8:
            return [make_region(self.photos, self.spec, np.random.default_rng(s), self.registry) for s in seeds]
        chunks = [seeds[i::processes] for i in range(processes)]
        with mp.get_context("fork").Pool(processes) as pool:
            parts = pool.map(_fill_worker, [(self.photos, self.spec, c) for c in chunks])
        out: list[Region | None] = [None] * n
        for k, part in enumerate(parts):
            for j, region in enumerate(part):
                out[k + j * processes] = region
        return out  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.regions)

    def refresh(self, count: int) -> None:
        """Replace ``count`` random regions by newly rendered ones."""
        for _ in range(count):
            i = int(self._rng.integers(len(self.regions)))
            self.regions[i] = make_region(self.photos, self.spec, self._rng, self.registry)

    def batch(self, batch_size: int) -> dict:
        """``{"lq", "hq": [B * V, 3, size, size], "names": list per region, "n_views": V}``."""
        idx = self._rng.integers(len(self.regions), size=batch_size)
        lqs, hqs = zip(*(region_views(self.regions[i], self.spec, self._rng) for i in idx), strict=True)
        return {"lq": torch.cat(lqs), "hq": torch.cat(hqs), "names": [self.regions[i].names for i in idx],
                "n_views": 1 + self.spec.n_crops}
