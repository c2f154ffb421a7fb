"""Restorer training pairs from the detector's region pool: the same photos, renderers and scales.

The restorer learns from what the detector learns from (:mod:`engine.training.region_pool`):
regions of the training photos cut at a random scale and degraded whole by the renderer mix, as
a photo of that size would be. Each region becomes one :class:`PairEntry` when it enters the pool:

* a **restoration pair** (input: the degraded region, target: the clean one), or, for a share
  ``identity_fraction`` of the entries, an **identity sample**: the clean region, or (share
  ``identity_mild_share``) the region mildly degraded (the clean region moved a fraction of up to
  ``identity_mild_max`` toward its degraded copy), whose target is the input itself. A restorer
  must learn to leave alone what needs nothing.
* its **condition**: what the frozen detector outputs for the entry's input region
  (:meth:`engine.inference.detect.Detector.analyze`, the runtime's path: the region's global view and native
  crops), computed once per entry and reused by every crop of it. A share
  ``label_condition_fraction`` of the restoration pairs is conditioned instead on their true names
  (:meth:`~engine.inference.detect.Detector.condition_for`, the runtime's path when the user forces names),
  and a share ``false_name_fraction`` of all entries on their true names plus one they do not have, with
  the same target: the detector invents names on photos it never saw (rainy, hazy, noisy most often),
  and a restorer that obeys an invented name damages the photo.

A share ``seed24_fraction`` of the entries comes from a second pool drawn from the ``seed24``
preset, so that every study pair is well represented. Batches are native ``crop`` x ``crop``
crops of random entries with random horizontal flips. Everything is seeded: one seed and one
detector give one stream of batches.

:func:`validation_regions` and :func:`validation_set` build the fixed sets the trainer validates
on: centre crops of regions of held-out photos, degraded by the training renderers or by the
held-out one, and their clean crops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch

from engine.training.region_pool import PoolSpec, Region, RegionPool
from engine.vocab import DEGRADATIONS

# (input region float32 HWC in [0, 1], forced names or None) -> condition [3, D] on the CPU
Conditioner = Callable[[np.ndarray, "tuple[str, ...] | None"], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class PairSpec:
    """How pool regions become restorer samples (see the module docstring)."""

    crop: int = 128
    seed24_fraction: float = 0.0
    identity_fraction: float = 0.0
    identity_mild_share: float = 0.5
    identity_mild_max: float = 0.2
    label_condition_fraction: float = 0.0
    false_name_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("seed24_fraction", "identity_fraction", "identity_mild_share", "identity_mild_max",
                     "label_condition_fraction", "false_name_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.crop < 8:
            raise ValueError(f"crop must be at least 8, got {self.crop}")


@dataclasses.dataclass
class PairEntry:
    """One training region: the network's input and target (uint8 HWC; the same array for an
    identity sample), the degradations in the input, and its condition (``None`` for the ablation)."""

    lq: np.ndarray
    hq: np.ndarray
    names: tuple[str, ...]
    identity: bool
    condition: torch.Tensor | None
    source: str  # "train" (the recipe's preset) or "seed24"


class DetectorConditions:
    """A :data:`Conditioner` from a frozen :class:`~engine.inference.detect.Detector`."""

    def __init__(self, detector):
        self.detector = detector

    def __call__(self, image: np.ndarray, names: tuple[str, ...] | None = None) -> torch.Tensor:
        if names is not None:
            return self.detector.condition_for(image, names).cpu()
        return self.detector.analyze(image).condition.cpu()


def _float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


def mild_blend(hq: np.ndarray, lq: np.ndarray, amount: float) -> np.ndarray:
    """The clean region moved ``amount`` (0-1) of the way toward its degraded copy (uint8)."""
    mixed = hq.astype(np.float32) + np.float32(amount) * (lq.astype(np.float32) - hq.astype(np.float32))
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def with_false_name(names: tuple[str, ...], draw: float, limit: int = 2) -> tuple[str, ...]:
    """``names`` as a detector that invents a degradation reports them: one name the image does not
    have (chosen by ``draw``, uniform in [0, 1), among the others of the vocabulary) added, or, when
    ``names`` already fill the ``limit`` slots, put in place of the last of them (a miss and an invention)."""
    others = [n for n in DEGRADATIONS if n not in names]
    false = others[min(int(draw * len(others)), len(others) - 1)]
    kept = tuple(names[:limit - 1]) if len(names) >= limit else tuple(names)
    return (*kept, false)


def make_entry(region: Region, spec: PairSpec, draws: np.ndarray, condition: Conditioner | None,
               source: str) -> PairEntry:
    """The entry of ``region``; ``draws`` are six uniform numbers (identity?, mild?, how mild,
    label condition?, false name?, which false name), drawn whatever the branch so that the stream
    stays aligned. A false-name entry (any kind, identity samples included) is conditioned on its true
    names with an invented one (:func:`with_false_name`) and keeps its target: a wrong detection
    must cost little."""
    identity = draws[0] < spec.identity_fraction
    forced = None
    if identity:
        if draws[1] < spec.identity_mild_share and spec.identity_mild_max > 0:
            lq, names = mild_blend(region.hq, region.lq, float(draws[2]) * spec.identity_mild_max), region.names
        else:
            lq, names = region.hq, ()
        hq = lq
    else:
        lq, hq, names = region.lq, region.hq, region.names
        if draws[3] < spec.label_condition_fraction and len(names) <= 2:
            forced = names
    if draws[4] < spec.false_name_fraction:
        forced = with_false_name(tuple(names), float(draws[5]))
    cond = condition(_float(lq), forced) if condition is not None else None
    return PairEntry(lq=lq, hq=hq, names=tuple(names), identity=bool(identity), condition=cond, source=source)


def native_crop(entry: PairEntry, crop: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``crop`` x ``crop`` (input, target) pair ``[3, crop, crop]`` float in [0, 1], maybe flipped."""
    h, w = entry.lq.shape[:2]
    if h < crop or w < crop:
        raise ValueError(f"region {h}x{w} is smaller than the crop {crop}: raise region_min")
    y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    flip = bool(rng.random() < 0.5)

    def cut(a: np.ndarray) -> torch.Tensor:
        patch = a[y:y + crop, x:x + crop]
        if flip:
            patch = patch[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1).float().div_(255.0)

    lq = cut(entry.lq)
    return lq, (lq.clone() if entry.hq is entry.lq else cut(entry.hq))


class RegionPairPool:
    """Restorer samples from one or two :class:`~engine.training.region_pool.RegionPool` s.

    ``pool_spec`` describes the regions (its ``preset`` is the main pool's; the ``seed24`` pool
    uses the same spec with that preset); ``pair_spec`` the samples. ``condition`` is ``None``
    for the unconditioned ablation. ``refresh(n)`` renders ``n`` new regions, each into the pool
    of its share, and conditions them.
    """

    def __init__(self, photos: Sequence[np.ndarray], pool_spec: PoolSpec, pair_spec: PairSpec, pool_size: int,
                 seed: int = 0, condition: Conditioner | None = None, processes: int = 1):
        if pool_spec.region_min < pair_spec.crop:
            raise ValueError(f"region_min {pool_spec.region_min} is below the crop {pair_spec.crop}")
        n_seed24 = int(round(pool_size * pair_spec.seed24_fraction))
        sizes = {"train": pool_size - n_seed24, "seed24": n_seed24}
        specs = {"train": pool_spec, "seed24": dataclasses.replace(pool_spec, preset="seed24")}
        self.spec, self.condition = pair_spec, condition
        self.pools = {name: RegionPool(None, specs[name], n, seed=seed + k, photos=list(photos), processes=processes)
                      for k, (name, n) in enumerate(sizes.items()) if n > 0}
        if not self.pools:
            raise ValueError("the pool needs at least one region")
        self._rng = np.random.default_rng([seed, 2])
        self.entries = {name: [self._entry(r, name) for r in pool.regions] for name, pool in self.pools.items()}

    def _entry(self, region: Region, source: str) -> PairEntry:
        return make_entry(region, self.spec, self._rng.random(6), self.condition, source)

    def __len__(self) -> int:
        return sum(len(e) for e in self.entries.values())

    def all_entries(self) -> list[PairEntry]:
        return [e for name in self.entries for e in self.entries[name]]

    def refresh(self, count: int) -> None:
        """Replace ``count`` regions by new ones (each from the seed24 pool with its share)."""
        names = list(self.pools)
        weights = np.array([len(self.entries[n]) for n in names], dtype=np.float64)
        for _ in range(count):
            name = names[int(self._rng.choice(len(names), p=weights / weights.sum()))]
            pool = self.pools[name]
            before = list(pool.regions)
            pool.refresh(1)
            for i, region in enumerate(pool.regions):
                if region is not before[i]:
                    self.entries[name][i] = self._entry(region, name)

    def batch(self, batch_size: int) -> dict:
        """``{"lq", "hq": [B, 3, crop, crop], "cond": [B, 3, D] or None, "names", "identity": [B] bool}``."""
        entries = self.all_entries()
        idx = self._rng.integers(len(entries), size=batch_size)
        chosen = [entries[i] for i in idx]
        lqs, hqs = zip(*(native_crop(e, self.spec.crop, self._rng) for e in chosen), strict=True)
        cond = torch.stack([e.condition for e in chosen]) if self.condition is not None else None
        return {"lq": torch.stack(lqs), "hq": torch.stack(hqs), "cond": cond, "names": [e.names for e in chosen],
                "identity": torch.tensor([e.identity for e in chosen])}


def centre_crop(a: np.ndarray, crop: int) -> torch.Tensor:
    h, w = a.shape[:2]
    y, x = (h - crop) // 2, (w - crop) // 2
    return torch.from_numpy(np.ascontiguousarray(a[y:y + crop, x:x + crop])).permute(2, 0, 1).float().div_(255.0)


def validation_regions(photos: Sequence[np.ndarray], pool_spec: PoolSpec, n: int, seed: int) -> list[Region]:
    """``n`` fixed regions of ``photos`` degraded by ``pool_spec``'s renderers (region ``i`` depends on
    ``(seed, i)`` only)."""
    return RegionPool(None, pool_spec, n, seed=seed, photos=list(photos)).regions


def validation_set(regions: Sequence[Region], crop: int, condition: Conditioner | None, clean: bool = False) -> dict:
    """Fixed validation samples ``{"lq", "hq", "cond", "names"}``: centre crops of ``regions``,
    conditioned on the whole region like the runtime conditions a photo's tiles. ``clean=True``: the
    clean crops as inputs and targets, conditioned on the clean region (what a good photo gets)."""
    inputs = [r.hq if clean else r.lq for r in regions]
    lq = torch.stack([centre_crop(a, crop) for a in inputs])
    hq = lq.clone() if clean else torch.stack([centre_crop(r.hq, crop) for r in regions])
    cond = torch.stack([condition(_float(a), None) for a in inputs]) if condition is not None else None
    return {"lq": lq, "hq": hq, "cond": cond, "names": [() if clean else r.names for r in regions]}
