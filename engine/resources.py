"""Where the shipped resources live: a source checkout, an editable install, or a PyInstaller bundle.

In a checkout (or ``pip install -e``) ``resources/`` sits beside the ``engine`` package; in a
PyInstaller bundle it is unpacked under ``sys._MEIPASS``. ``PHOTOMEND_RESOURCES`` overrides both.
The model bundles inside it: :mod:`engine.bundle`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resources_dir() -> Path:
    """The ``resources/`` folder (it may be missing in a broken install; callers check files)."""
    override = os.environ.get("PHOTOMEND_RESOURCES")
    if override:
        return Path(override)
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def samples_dir() -> Path:
    """The shipped sample photos: ``resources/samples/``."""
    return resources_dir() / "samples"
