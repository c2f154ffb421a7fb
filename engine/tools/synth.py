"""Write a synthetic degraded/clean dataset from a folder of clean photos (``photomend synth``).

Output layout in ``out_dir``: ``lq/`` (degraded), ``hq/`` (clean, downsized) with identical PNG file
names ``<stem>__<names joined by +>__<k>.png`` (``clean`` when no degradation), and
``labels.jsonl`` with one JSON object per pair::

    {"file": "lq/x.png", "hq": "hq/x.png", "degradations": [...], "params": [...], "source": "photo.jpg"}

Combinations per photo:

* ``seed24`` / ``all``: without ``per_image`` every photo gets all 24 / 36 combinations; with
  ``per_image=N`` photo ``i`` gets combinations ``i*N .. i*N+N-1`` (mod 24 / 36) so the whole list
  is covered across photos.
* ``mixed``: ``per_image`` (default 1) draws from :func:`engine.degradations.sample_combination`.

Pair ``k`` of photo ``i`` is seeded by ``(seed, i, k)``: the output does not depend on run order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from engine.degradations import apply_degradations, preset_combinations, sample_combination
from engine.io.reader import ImageReadError, list_images, open_image
from engine.jobs.api import CancelToken, ProgressCallback, ProgressEvent

SYNTH_PRESETS = ("seed24", "mixed", "all")


class SynthInputError(ValueError):
    """CLEAN_DIR is missing or holds no images; ``str()`` is one line naming it."""


@dataclass(frozen=True)
class SynthSettings:
    """What :func:`synthesize` writes (see the module docstring)."""

    preset: str = "seed24"
    per_image: int | None = None
    seed: int = 0
    max_side: int = 512
    recursive: bool = False
    renderer: str = "project"  # engine.degradations.renderers.RENDERER_CHOICES ("train": the trainers' mix)

    def __post_init__(self):
        if self.preset not in SYNTH_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(SYNTH_PRESETS)}")
        if self.per_image is not None and self.per_image < 1:
            raise ValueError(f"--per-image must be at least 1, got {self.per_image}")
        if self.max_side < 8:
            raise ValueError(f"--max-side must be at least 8, got {self.max_side}")
        from engine.degradations.renderers import RENDERER_CHOICES

        if self.renderer not in RENDERER_CHOICES:
            raise ValueError(f"unknown renderer {self.renderer!r}; choose one of {', '.join(RENDERER_CHOICES)}")


@dataclass
class SynthReport:
    """What was written and what was skipped."""

    written: int = 0
    photos: int = 0
    skipped: list[str] = field(default_factory=list)
    combinations: set[tuple[str, ...]] = field(default_factory=set)


def combinations_for(index: int, settings: SynthSettings, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """The combinations photo number ``index`` receives."""
    if settings.preset in ("seed24", "all"):
        combos = preset_combinations(settings.preset)
        if settings.per_image is None:
            return combos
        n = settings.per_image
        return [combos[(index * n + j) % len(combos)] for j in range(n)]
    return [sample_combination(rng, settings.preset) for _ in range(settings.per_image or 1)]


def pairs_per_photo(settings: SynthSettings) -> int:
    if settings.per_image is not None:
        return settings.per_image
    return len(preset_combinations(settings.preset)) if settings.preset in ("seed24", "all") else 1


def pair_name(stem: str, names: tuple[str, ...], k: int) -> str:
    return f"{stem}__{'+'.join(names) if names else 'clean'}__{k}.png"


def _load(path: Path, max_side: int) -> np.ndarray:
    im = open_image(path).convert("RGB")
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.float32) / 255.0


def _save_png(image: np.ndarray, path: Path) -> None:
    Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path, compress_level=1)


def synthesize(
    clean_dir: Path,
    out_dir: Path,
    settings: SynthSettings,
    progress: ProgressCallback | None = None,
    on_warning: Callable[[str], None] | None = None,
    cancel: CancelToken | None = None,
) -> SynthReport:
    """Degrade every readable image in ``clean_dir`` and write the dataset to ``out_dir``.

    Raises :class:`SynthInputError` for a missing folder or one without images; unreadable files
    are reported through ``on_warning`` and skipped.
    """
    clean_dir, out_dir = Path(clean_dir), Path(out_dir)
    if not clean_dir.is_dir():
        raise SynthInputError(f"{clean_dir}: no such folder")
    files = list_images(clean_dir, recursive=settings.recursive)
    if not files:
        raise SynthInputError(f"{clean_dir}: no images (looked for .jpg, .png, .webp, .tif, .bmp)")
    (out_dir / "lq").mkdir(parents=True, exist_ok=True)
    (out_dir / "hq").mkdir(parents=True, exist_ok=True)
    report = SynthReport()
    registry = None
    if settings.renderer != "project":
        from engine.degradations.renderers import registry as renderer_registry

        registry = renderer_registry(settings.renderer)
    total = len(files) * pairs_per_photo(settings)
    used_stems: set[str] = set()
    done = 0
    with open(out_dir / "labels.jsonl", "w", encoding="utf-8") as labels:
        for index, path in enumerate(files):
            if cancel is not None:
                cancel.raise_if_cancelled()
            rng = np.random.default_rng([settings.seed, index])
            combos = combinations_for(index, settings, rng)
            try:
                clean = _load(path, settings.max_side)
            except ImageReadError as exc:
                report.skipped.append(str(path))
                if on_warning is not None:
                    on_warning(f"skipping {exc}")
                done += len(combos)
                if progress is not None:
                    progress(ProgressEvent("synth", done, total, path.name))
                continue
            stem = path.stem
            while stem in used_stems:  # a.jpg and a.png, or the same name in two sub-folders
                stem += "_"
            used_stems.add(stem)
            report.photos += 1
            for k, names in enumerate(combos):
                lq, params = apply_degradations(clean, names, np.random.default_rng([settings.seed, index, k]),
                                                registry=registry)
                name = pair_name(stem, names, k)
                _save_png(lq, out_dir / "lq" / name)
                _save_png(clean, out_dir / "hq" / name)
                record = {
                    "file": f"lq/{name}",
                    "hq": f"hq/{name}",
                    "degradations": list(names),
                    "params": params,
                    "source": path.relative_to(clean_dir).as_posix(),
                }
                labels.write(json.dumps(record) + "\n")
                report.written += 1
                report.combinations.add(tuple(names))
                done += 1
                if progress is not None:
                    progress(ProgressEvent("synth", done, total, name))
    return report
