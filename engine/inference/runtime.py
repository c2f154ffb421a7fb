"""The restoration runtime: the engine's public entry point for restoring photos.

:class:`Restorer` loads a model bundle (:class:`~engine.bundle.ModelBundle`), picks a
device, computes the DA-CLIP embeddings once per photo and restores it at full resolution in
overlapping tiles blended seamlessly (:mod:`engine.inference.tiling`). Progress goes out per tile through a
callback; a :class:`~engine.jobs.api.CancelToken` is checked before every tile, so cancelling stops
within one tile (:class:`~engine.jobs.api.Cancelled` is raised).

Usage::

    restorer = Restorer()                      # the bundled model, best device
    result = restorer.restore(pixels, RestoreOptions(steps=1))
    result.image, result.detection.degradations, result.seconds
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from engine.bundle import ModelBundle, describe_layout
from engine.inference.analysis import Analysis
from engine.inference.device import autocast, pick_device
from engine.inference.guard import GuardDecision, applied_strength, decide
from engine.inference.tiling import DEFAULT_OVERLAP, TilePlan, blend_tile, plan_tiles, round_tile
from engine.jobs.api import CancelToken, Detection, ProgressCallback, ProgressEvent, RestoreOptions

# Tile side bounds (pixels); the chosen side also respects the network's multiple.
MIN_TILE, MAX_TILE_CPU, MAX_TILE_GPU = 128, 1024, 2048
# Peak memory per tile pixel of a forward pass when the model gives none: the bundled U-Net measured
# about 300-400 bytes (fp32, inference mode); a safety factor of 5 covers other bundles and steps > 1.
DEFAULT_BYTES_PER_PIXEL = 2_000


class ModelNotFoundError(FileNotFoundError):
    """No model bundle in the given (or bundled) folder; ``str()`` is one line naming it."""


class DetectorLike(Protocol):
    def analyze(self, image: np.ndarray): ...  # -> object with .detection and .condition
    def condition_for(self, image: np.ndarray, names: tuple[str, ...]) -> torch.Tensor: ...
    def detect(self, image: np.ndarray) -> Detection: ...


class RestorationModelLike(Protocol):
    multiple: int

    def photo_statistics(self, image: torch.Tensor) -> torch.Tensor | None: ...

    def predict(self, lq: torch.Tensor, condition: torch.Tensor | None = None, steps: int = 1,
                generator: torch.Generator | None = None, stats: torch.Tensor | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class ModelInfo:
    """Which bundle a :class:`Restorer` runs: its folder name and path."""

    name: str
    path: Path | None


@dataclass
class RestoreResult:
    """A restored photo: ``image`` ``float32 (H, W, 3)`` in [0, 1], what was restored, and how long it took.

    ``guard``: the guard's decision (``None`` when off or overridden); ``strength``: the strength applied.
    """

    image: np.ndarray
    detection: Detection
    seconds: float
    guard: GuardDecision | None = None
    strength: float = 1.0


def available_memory(device: torch.device) -> int:
    """Bytes free for one forward pass on ``device`` (GPU: free device memory; else free RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def choose_tile(device: torch.device, multiple: int, bytes_per_pixel: int = DEFAULT_BYTES_PER_PIXEL,
                free_bytes: int | None = None) -> int:
    """A tile side that keeps one forward pass within a quarter of the free memory."""
    free = available_memory(device) if free_bytes is None else free_bytes
    side = int(math.sqrt(max(free, 0) * 0.25 / max(bytes_per_pixel, 1)))
    cap = MAX_TILE_GPU if device.type in ("cuda", "mps") else MAX_TILE_CPU
    return round_tile(min(max(side, MIN_TILE), cap), multiple, MIN_TILE)


class Restorer:
    """A loaded model bundle ready to detect and restore photos.

    ``model_dir``: a bundle folder (:mod:`engine.bundle`), default the bundled one. ``device``:
    ``auto`` (CUDA, then MPS, then CPU) or a forced name. ``overlap``: tile overlap in pixels. Raises :class:`ModelNotFoundError`
    or :class:`~engine.models.serialization.ModelFileError` for a missing or bad bundle.
    """

    def __init__(self, model_dir: Path | str | None = None, device: str = "auto",
                 overlap: int = DEFAULT_OVERLAP):
        bundle = ModelBundle.bundled() if model_dir is None else ModelBundle(Path(model_dir))
        if bundle.missing():
            what = "no model is bundled" if model_dir is None else "not a model bundle"
            raise ModelNotFoundError(f"{bundle.path}: {what} (expected {describe_layout()})")
        from engine.models.clip_towers import import_open_clip

        import_open_clip()  # before the detector: open_clip's towers without torchvision (see there)
        dev = pick_device(device)
        self._setup(bundle.load_detector(dev), bundle.load_restorer(dev), dev, bundle.path, overlap,
                    channels_last=True)

    @classmethod
    def from_parts(cls, detector: DetectorLike, model: RestorationModelLike, device: str | torch.device = "cpu",
                   model_dir: Path | None = None, overlap: int = DEFAULT_OVERLAP,
                   channels_last: bool = False) -> Restorer:
        """A restorer around already built parts (tests, training validation, custom pipelines).

        ``channels_last=True`` switches ``model.net`` to channels-last memory format (faster on CPU
        and CUDA); it is off here so that a network still being trained is left as it is.
        """
        self = cls.__new__(cls)
        self._setup(detector, model, torch.device(device), Path(model_dir) if model_dir else None, overlap,
                    channels_last)
        return self

    def _setup(self, detector, model, device, model_dir, overlap, channels_last) -> None:
        self.detector = detector
        self.model = model
        self.device = device
        self.model_dir = model_dir
        self.bundle = ModelBundle(model_dir) if model_dir is not None else None
        self.overlap = int(overlap)
        self._fingerprint: str | None = None
        # channels-last convolutions are ~1.6x faster on CPU (oneDNN) and suit tensor cores on CUDA
        self._channels_last = channels_last and device.type in ("cpu", "cuda") and isinstance(
            getattr(model, "net", None), torch.nn.Module)
        if self._channels_last:
            model.net.to(memory_format=torch.channels_last)

    # -- information ------------------------------------------------------------------------
    @property
    def model_info(self) -> ModelInfo:
        """The bundle's name (its folder's name) and path."""
        if self.model_dir is None:
            return ModelInfo("in-memory", None)
        return ModelInfo(self.model_dir.name, self.model_dir)

    def model_card(self) -> str:
        """The bundle's model card (Markdown), or ``""`` when it has none."""
        return (self.bundle.card() or "") if self.bundle is not None else ""

    @property
    def fingerprint(self) -> str:
        """A short hash of the bundle's files: outputs made with another model are not skipped."""
        if self._fingerprint is None:
            if self.bundle is None:
                digest = hashlib.sha256(f"{type(self.model).__name__}:{id(self.model)}".encode())
                self._fingerprint = digest.hexdigest()[:16]
            else:
                self._fingerprint = self.bundle.fingerprint
        return self._fingerprint

    def tile_size(self, options: RestoreOptions) -> int:
        """The tile side used for ``options``: the given one (rounded to the network's multiple) or from memory."""
        multiple = int(getattr(self.model, "multiple", 1))
        if options.tile:
            return round_tile(int(options.tile), multiple, minimum=multiple)
        bpp = int(getattr(self.model, "bytes_per_pixel", DEFAULT_BYTES_PER_PIXEL))
        return choose_tile(self.device, multiple, bpp)

    # -- work -------------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> Detection:
        """The degradations seen in ``image`` (``float32 (H, W, 3)`` in [0, 1])."""
        return self.detector.detect(_check_image(image))

    def prepare(self, image: np.ndarray, options: RestoreOptions) -> Analysis:
        """Detection and condition for one photo (once, before its tiles).

        With ``options.degradations`` the detection is skipped: the condition uses those names and
        the returned detection lists them with empty scores.
        """
        image = _check_image(image)
        if options.degradations is not None:
            names = tuple(options.degradations)
            return Analysis(Detection(names, {}), self.detector.condition_for(image, names))
        analysis = self.detector.analyze(image)
        guard = None
        if options.guard is not None:
            guard = decide(analysis.detection.degradations, analysis.detection.scores, self.thresholds, options.guard)
        return Analysis(analysis.detection, analysis.condition, guard)

    @property
    def thresholds(self) -> dict[str, float]:
        """The detector's per-name detection thresholds (empty: 0.5 for every name)."""
        return dict(getattr(self.detector, "thresholds", None) or {})

    def guard_decision(self, prepared: Analysis, options: RestoreOptions) -> GuardDecision | None:
        """The guard's decision for ``prepared`` under ``options`` (``None``: not guarded, because the
        guard is off, the names were forced, or ``prepared`` carries no detector decision)."""
        if options.guard is None or options.degradations is not None or prepared.guard is None:
            return None
        detection = prepared.detection
        return decide(detection.degradations, detection.scores, self.thresholds, options.guard)

    def restore(self, image: np.ndarray, options: RestoreOptions | None = None,
                progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> RestoreResult:
        """Detect (or take the override), then restore ``image`` tile by tile.

        ``progress`` receives ``ProgressEvent("detect", ...)`` then ``ProgressEvent("restore", i, n)``
        after each tile. Raises :class:`~engine.jobs.api.Cancelled` when ``cancel`` is triggered.
        """
        options = options or RestoreOptions()
        start = time.perf_counter()
        if cancel is not None:
            cancel.raise_if_cancelled()
        if progress is not None:
            progress(ProgressEvent("detect", 0, 1, "analysing the photo"))
        prepared = self.prepare(image, options)
        if progress is not None:
            progress(ProgressEvent("detect", 1, 1, ", ".join(prepared.detection.degradations) or "clean"))
        out = self.restore_prepared(image, prepared, options, progress, cancel)
        guard = self.guard_decision(prepared, options)
        return RestoreResult(out, prepared.detection, time.perf_counter() - start, guard,
                             applied_strength(options.strength, guard))

    def plan(self, height: int, width: int, options: RestoreOptions) -> TilePlan:
        """The tiles :meth:`restore_prepared` will run for a ``height x width`` photo."""
        return plan_tiles(height, width, self.tile_size(options), self.overlap,
                          int(getattr(self.model, "multiple", 1)))

    def restore_prepared(self, image: np.ndarray, prepared: Analysis, options: RestoreOptions,
                         progress: ProgressCallback | None = None,
                         cancel: CancelToken | None = None) -> np.ndarray:
        """Restore ``image`` with an already computed condition; returns ``float32 (H, W, 3)``.

        With ``options.keep_clean``, a photo whose detection is empty (no override) comes back as a
        copy of the input, without running the restorer; so does any photo at ``strength`` 0, the
        user's or the guard's (:meth:`guard_decision`). A strength below 1 (the smaller of the
        two) mixes the restoration with the input (once, over the assembled photo).
        """
        image = _check_image(image)
        guard = self.guard_decision(prepared, options)
        strength = applied_strength(options.strength, guard)
        kept = ("strength 0: kept as is" if options.strength == 0.0 else
                "nothing detected: kept as is" if options.keep_clean and options.degradations is None
                and not prepared.detection.degradations else
                guard.describe() if guard is not None and guard.keeps_input else None)
        if kept is not None:
            if progress is not None:
                progress(ProgressEvent("restore", 1, 1, kept))
            return np.clip(image, 0.0, 1.0)
        h, w = image.shape[:2]
        plan = self.plan(h, w, options)
        out = torch.zeros((h, w, 3), dtype=torch.float32).numpy()  # torch maps huge pages: fewer faults
        condition = prepared.condition
        cond = None if condition is None else condition.to(self.device, torch.float32).unsqueeze(0)
        # colour statistics of the whole photo, shared by its tiles like the condition
        stats = self.model.photo_statistics(torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0))
        with torch.inference_mode(), autocast(self.device):
            for tile in plan.tiles:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                lq = torch.from_numpy(np.ascontiguousarray(image[tile.y0:tile.y1, tile.x0:tile.x1]))
                lq = lq.permute(2, 0, 1).unsqueeze(0).to(self.device)
                if self._channels_last:
                    lq = lq.contiguous(memory_format=torch.channels_last)
                generator = None
                if options.steps > 1:
                    generator = torch.Generator(device=self.device)
                    generator.manual_seed(int(options.seed) * 1_000_003 + tile.index)
                restored = self.model.predict(lq, cond, steps=options.steps, generator=generator, stats=stats)
                pixels = restored[0].float().permute(1, 2, 0).cpu().numpy()
                blend_tile(out, plan, tile, pixels, in_place=True)  # the tile output is ours to scale
                if progress is not None:
                    progress(ProgressEvent("restore", tile.index + 1, len(plan), "tiles"))
        np.clip(out, 0.0, 1.0, out=out)
        if strength < 1.0:  # in place: a 12 MP photo has no room for another copy
            out -= image
            out *= np.float32(strength)
            out += image
            np.clip(out, 0.0, 1.0, out=out)  # the input itself may stray past [0, 1]
        return out


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected a float32 (H, W, 3) image in [0, 1], got {shape}")
    if image.dtype != np.float32:
        image = image.astype(np.float32)
    return image
