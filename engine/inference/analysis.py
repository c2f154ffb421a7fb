"""Analyse photos before restoring them: the detection and the restorer condition, computed once.

The desktop app analyses each queued photo as soon as it is added, so its degradations show before
*Start*; :func:`engine.jobs.batch.run_batch` then takes the stored analysis instead of detecting again.

Usage::

    analyses = AnalysisCache(restorer)
    detection = analyses.analyze(path)             # loads the photo, detects, keeps the condition
    run_batch(inputs, settings, restorer, analyses=analyses)   # reuses it

An analysis is keyed by the file's resolved path, size and modification time, so an edited photo
is analysed again. A cache belongs to one :class:`~engine.inference.runtime.Restorer`: the condition is that
model's embedding. Not thread-safe; use it from one thread (the desktop's worker thread).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.inference.guard import GuardDecision
from engine.io.reader import load_image
from engine.jobs.api import Detection, RestoreOptions

if TYPE_CHECKING:
    import torch

    from engine.inference.runtime import Restorer

DEFAULT_LIMIT = 4096  # a condition is a few kilobytes: thousands of photos fit in a few tens of MB


@dataclass(frozen=True)
class Analysis:
    """One photo's analysis, computed once before its tiles: the detection and the restorer condition.

    ``condition``: ``[3, embed_dim]`` on the CPU (:meth:`engine.inference.detect.Detector.analyze`), ``None`` for
    a restorer that takes none. ``guard``: the do-no-harm guard's decision for the detection
    (:mod:`engine.inference.guard`; its ``estimate`` is what the report and the GUI row show), ``None`` when the
    names were forced, the guard is off, or the detector alone made the analysis.
    :meth:`engine.inference.runtime.Restorer.restore_prepared` decides again with its own options.
    """

    detection: Detection
    condition: torch.Tensor | None
    guard: GuardDecision | None = None


def _file_key(path: Path) -> tuple[str, int, int]:
    st = Path(path).stat()
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns


class AnalysisCache:
    """The analyses (:class:`Analysis`) one restorer made, newest kept when full."""

    def __init__(self, restorer: Restorer, limit: int = DEFAULT_LIMIT) -> None:
        self.restorer = restorer
        self.limit = int(limit)
        self._entries: OrderedDict[tuple[str, int, int], Analysis] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def analyze(self, path: Path) -> Detection:
        """Load ``path``, detect its degradations and keep the condition; returns the detection.

        Raises what :func:`engine.io.reader.load_image` raises for an unreadable file.
        """
        key = _file_key(path)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found.detection
        pixels = load_image(path).pixels
        prepared = self.restorer.prepare(pixels, RestoreOptions())
        self._entries[key] = prepared
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)
        return prepared.detection

    def lookup(self, path: Path, restorer: Restorer) -> Analysis | None:
        """The stored analysis of ``path`` when ``restorer`` made it and the file is unchanged."""
        if restorer is not self.restorer:
            return None
        try:
            key = _file_key(path)
        except OSError:
            return None
        return self._entries.get(key)

    def guard(self, path: Path) -> GuardDecision | None:
        """The do-no-harm guard's decision for an analysed, unchanged photo (its ``estimate``, 0-1, is
        how likely restoring helps; ``strength`` what the guard will apply at most; ``describe()`` one
        line for a queue row), or ``None`` when the photo was not analysed or the file changed."""
        try:
            found = self._entries.get(_file_key(path))
        except OSError:
            return None
        return found.guard if found is not None else None

    def clear(self) -> None:
        self._entries.clear()
