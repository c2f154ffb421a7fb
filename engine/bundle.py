"""A model bundle: the one module that knows the files a bundle folder holds.

A bundle (e.g. ``resources/models/default/``) is a folder with two models and a model card::

    detector.json + detector.safetensors    the DA-CLIP detector (engine.models.daclip)
    restorer.json + restorer.safetensors    the restorer (engine.inference.restoration)
    README.md                               the model card (optional)

Each model is ``NAME.json`` (architecture, format version, typed config) plus ``NAME.safetensors``
(the weights, untrusted input: read only by :mod:`engine.models.serialization`). A folder holding
only the detector's two files (``training/checkpoints/detector_v2``) is a detector folder: it opens
with ``parts=(DETECTOR,)``.

:class:`ModelBundle` owns the layout, the fingerprint, the model card, the detector's thresholds
(:meth:`ModelBundle.with_thresholds`) and the file names the savers write. No torch here: the
desktop checks bundles with it; the models load through :meth:`ModelBundle.load_detector` and
:meth:`ModelBundle.load_restorer`.

Usage::

    bundle = ModelBundle.open(folder)          # ModelFileError (one line, names the file) if not a bundle
    bundle.fingerprint, bundle.card()
    calibrated = bundle.with_thresholds([0.4, ...], out_dir)   # a copy with new detector thresholds
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.io import atomic
from engine.models.configs import ModelFileError, read_meta

DETECTOR = "detector"
RESTORER = "restorer"
PARTS = (DETECTOR, RESTORER)
CONFIG_SUFFIX = ".json"
WEIGHTS_SUFFIX = ".safetensors"
CARD = "README.md"
BUNDLED_NAME = "default"  # resources/models/<this>: the bundle shipped with the application


def describe_layout(parts: Sequence[str] = PARTS) -> str:
    """The files a bundle needs, in words: ``detector.json/.safetensors and restorer.json/.safetensors``."""
    return " and ".join(f"{part}{CONFIG_SUFFIX}/{WEIGHTS_SUFFIX}" for part in parts)


def bundled_model_dir(resources: Path | None = None) -> Path:
    """The default model bundle: ``resources/models/default/`` (it may be missing); ``resources``
    defaults to :func:`engine.resources.resources_dir`."""
    if resources is None:
        from engine.resources import resources_dir

        resources = resources_dir()
    return Path(resources) / "models" / BUNDLED_NAME


def is_model_bundle(folder: Path | str) -> bool:
    """True when ``folder`` holds a detector and a restorer (each ``NAME.json`` + ``NAME.safetensors``)."""
    return not ModelBundle(Path(folder)).missing()


def has_bundled_model() -> bool:
    return is_model_bundle(bundled_model_dir())


@dataclass(frozen=True)
class ModelBundle:
    """A bundle folder and the names of its files. ``ModelBundle(path)`` checks nothing (a folder
    being written, a training run's output); :meth:`open` checks the files are there."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # -- layout ------------------------------------------------------------------------------
    def stem(self, part: str) -> Path:
        """``path/part`` without suffix: what :mod:`engine.models.serialization` reads and writes."""
        if part not in PARTS:
            raise ValueError(f"unknown bundle part {part!r} (expected one of {', '.join(PARTS)})")
        return self.path / part

    def config_file(self, part: str) -> Path:
        return self.stem(part).with_suffix(CONFIG_SUFFIX)

    def weights_file(self, part: str) -> Path:
        return self.stem(part).with_suffix(WEIGHTS_SUFFIX)

    def files(self, parts: Sequence[str] = PARTS) -> list[Path]:
        """The model files of ``parts``, config before weights, in a fixed order."""
        return [f for part in parts for f in (self.config_file(part), self.weights_file(part))]

    @property
    def card_file(self) -> Path:
        return self.path / CARD

    @property
    def name(self) -> str:
        return self.path.name

    def missing(self, parts: Sequence[str] = PARTS) -> list[Path]:
        """The model files of ``parts`` that are not there (empty: the bundle is complete)."""
        return [f for f in self.files(parts) if not f.is_file()]

    def has(self, part: str) -> bool:
        """True when ``part``'s config and weights are both there."""
        return not self.missing((part,))

    def absent_parts(self) -> list[str]:
        """The parts with no file at all under their name (``detector.*``): a plain look at the
        folder for the desktop, which never loads weights."""
        return [part for part in PARTS if not any(self.path.glob(f"{part}.*"))]

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str, parts: Sequence[str] = PARTS) -> ModelBundle:
        """The bundle at ``path`` once its files of ``parts`` are there and its configs are JSON objects.

        Raises :class:`~engine.models.serialization.ModelFileError`, one line naming the file. The
        weights are checked when a model loads (shapes, dtypes, no pickles).
        """
        bundle = cls(Path(path))
        if not bundle.path.is_dir():
            raise ModelFileError(f"{bundle.path}: not a model bundle folder (expected {describe_layout(parts)})")
        for file in bundle.files(parts):
            if not file.is_file():
                raise ModelFileError(f"{file}: not found (a model bundle holds {describe_layout(parts)})")
        for part in parts:
            bundle.config(part)
        return bundle

    @classmethod
    def bundled(cls) -> ModelBundle:
        """The bundle shipped in ``resources/`` (unchecked: it may be missing in a broken install)."""
        return cls(bundled_model_dir())

    def config(self, part: str) -> dict:
        """``part``'s JSON config file as a dict (ModelFileError when unreadable or not an object)."""
        file = self.config_file(part)
        meta = read_meta(file)
        if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
            raise ModelFileError(f"{file}: not a model config (expected a JSON object with a config object)")
        return meta

    def load_detector(self, device="cpu", n_crops: int | None = None):
        """The detector (:class:`engine.inference.detect.Detector`) on ``device`` (imports torch)."""
        from engine.inference.detect import Detector

        return Detector.from_dir(self.path, device, n_crops)

    def load_restorer(self, device="cpu"):
        """The restorer (:class:`engine.inference.restoration.RestorationModel`) on ``device`` (imports torch)."""
        from engine.inference.restoration import RestorationModel

        return RestorationModel.from_dir(self.path, device)

    # -- what it says about itself -----------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """A short hash of the model files: outputs made with another model are not skipped on rerun."""
        digest = hashlib.sha256()
        for file in self.files():
            with open(file, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()[:16]

    def card(self) -> str | None:
        """The model card (Markdown), or ``None`` when the bundle has none or it cannot be read."""
        try:
            return self.card_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def thresholds(self) -> list[float]:
        """The detector's per-name thresholds in vocabulary order (empty: 0.5 for every name)."""
        return list(self.config(DETECTOR).get("config", {}).get("thresholds", []))

    # -- writing -----------------------------------------------------------------------------
    def write_card(self, text: str) -> None:
        atomic.write_text(self.card_file, text)

    def with_thresholds(self, thresholds: Sequence[float], out: Path | str | None = None) -> ModelBundle:
        """A bundle whose detector uses ``thresholds`` (vocabulary order); returns it.

        With ``out`` (missing or an empty folder), a copy of every file of this bundle goes there, its
        detector config rewritten: the copy is assembled in a hidden folder beside ``out`` and renamed
        into place, so ``out`` is either absent or complete. Without ``out``, this bundle's detector
        config is replaced atomically. The values are checked when the detector loads. Raises OSError.
        """
        meta = self.config(DETECTOR)
        meta.setdefault("config", {})["thresholds"] = [float(t) for t in thresholds]
        if out is None:
            atomic.write_json(self.config_file(DETECTOR), meta)
            return self
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f".{out.name}.{secrets.token_hex(4)}{atomic.PART_SUFFIX}")  # beside it: one rename
        try:
            part.mkdir()  # an ordinary folder (mkdtemp's would stay private)
            for item in self.path.iterdir():
                if item.is_file():
                    shutil.copy2(item, part / item.name)
            atomic.write_json(ModelBundle(part).config_file(DETECTOR), meta)
            if out.exists():
                out.rmdir()
            os.replace(part, out)
        except BaseException:
            shutil.rmtree(part, ignore_errors=True)
            raise
        return ModelBundle(out)
