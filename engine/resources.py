"""Where the shipped resources live: a source checkout, an editable install, or a PyInstaller bundle.

In a checkout (or ``pip install -e``) ``resources/`` sits beside the ``engine`` package; in a
PyInstaller bundle it is unpacked under ``sys._MEIPASS``. ``PHOTOMEND_RESOURCES`` overrides both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_MODEL_NAME = "default"


def resources_dir() -> Path:
    """The ``resources/`` folder (it may be missing in a broken install; callers check files)."""
    override = os.environ.get("PHOTOMEND_RESOURCES")
    if override:
        return Path(override)
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def bundled_model_dir() -> Path:
    """The default model bundle: ``resources/models/default/``."""
    return resources_dir() / "models" / DEFAULT_MODEL_NAME


def samples_dir() -> Path:
    """The shipped sample photos: ``resources/samples/``."""
    return resources_dir() / "samples"


def is_model_bundle(folder: Path) -> bool:
    """True when ``folder`` holds a detector and a restorer (``NAME.json`` + ``NAME.safetensors``)."""
    folder = Path(folder)
    return all((folder / f"{name}.{ext}").is_file() for name in ("detector", "restorer")
               for ext in ("json", "safetensors"))


def has_bundled_model() -> bool:
    return is_model_bundle(bundled_model_dir())
