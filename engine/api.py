"""The small engine API that the CLI and the desktop app talk to.

Contract (see also ``docs/ARCHITECTURE.md``):

* Images cross this boundary as ``numpy.float32`` arrays of shape ``(H, W, 3)`` in ``[0, 1]``
  (sRGB, alpha removed; :mod:`engine.io` keeps alpha and metadata aside and puts them back).
* Progress goes out through a callback ``progress(ProgressEvent)``; the engine never prints.
* Cancellation is cooperative: long loops call ``cancel.raise_if_cancelled()`` between tiles.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.guard import GuardConfig


class Cancelled(Exception):
    """Raised inside the engine when a :class:`CancelToken` was triggered."""


class CancelToken:
    """A thread-safe flag checked by the engine between units of work (tiles, files)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def reset(self) -> None:
        self._event.clear()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long operation: ``stage`` is e.g. ``"detect"``, ``"restore"`` or ``"batch"``."""

    stage: str
    done: int
    total: int
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class Detection:
    """Degradations seen in one photo.

    ``degradations``: detected names, most probable first, ``none`` omitted (0, 1 or 2 names;
    order-free as a set). ``scores``: probability per vocabulary name (``none`` excluded).
    """

    degradations: tuple[str, ...]
    scores: dict[str, float] = field(default_factory=dict)

    def as_set(self) -> frozenset[str]:
        return frozenset(self.degradations)


@dataclass(frozen=True)
class RestoreOptions:
    """Per-photo restoration settings.

    ``steps``: IR-SDE steps (1 = fast deterministic restoration). ``tile``: tile size in pixels,
    ``None`` = chosen from available memory. ``degradations``: overrides detection when given.
    ``keep_clean``: a photo in which nothing is detected (and no override is given) is returned
    unchanged instead of going through the restorer. ``strength``: how much of the restoration
    is applied, ``input + strength * (restored - input)``; 1 is the full restoration, 0 the input.
    ``guard``: the do-no-harm guard (:mod:`engine.guard`), on by default: where the detection is
    not confident the strength is lowered toward the input (nothing detected: input kept); the
    user's ``strength`` stays the cap. ``None`` turns it off. Forced ``degradations`` are not guarded.
    """

    steps: int = 1
    tile: int | None = None
    degradations: tuple[str, ...] | None = None
    seed: int = 0
    keep_clean: bool = False
    strength: float = 1.0
    guard: GuardConfig | None = GuardConfig()

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be between 0 and 1, got {self.strength}")
