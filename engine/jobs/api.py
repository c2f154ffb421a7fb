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
from dataclasses import dataclass, field, fields

from engine.inference.guard import GuardConfig


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


class JobError(ValueError):
    """A batch job cannot start: one line saying why (a setting out of range, no inputs, an output
    folder that cannot be written...)."""


class SettingError(JobError):
    """One setting is out of range: ``name`` (the field) and ``problem`` (e.g. ``"must be at least 1"``).

    ``str()`` is ``"<name> <problem>"``; :meth:`for_flag` words it for a command-line option.
    """

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name, self.problem = name, problem

    def for_flag(self, flag: str) -> str:
        return f"{flag} {self.problem}"


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: ``low`` to ``high`` (``None``: no upper bound)."""

    low: float
    high: float | None = None
    unit: str = ""

    def contains(self, value: float) -> bool:
        return self.low <= value and (self.high is None or value <= self.high)

    def clamp(self, value: float) -> float:
        value = max(self.low, value)
        return value if self.high is None else min(self.high, value)

    def problem(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.high is None:
            return f"must be at least {self.low:g}{unit}"
        return f"must be between {self.low:g} and {self.high:g}{unit}"


def setting(default, *, bounds: Range | None = None, choices: tuple = ()):
    """A settings field with its default and, as metadata, the range or the choices it takes."""
    return field(default=default, metadata={"range": bounds, "choices": tuple(choices)})


def check_settings(obj, names: tuple[str, ...] | None = None) -> None:
    """Raise :class:`SettingError` for the first field of the dataclass ``obj`` (or of ``names``) outside
    its :func:`setting` range or choices (``None`` passes: it means "automatic" where a field allows it)."""
    for f in fields(obj):
        if names is not None and f.name not in names:
            continue
        value, allowed, choices = getattr(obj, f.name), f.metadata.get("range"), f.metadata.get("choices")
        if value is None:
            continue
        if allowed is not None and not allowed.contains(value):
            raise SettingError(f.name, allowed.problem())
        if choices and value not in choices:
            raise SettingError(f.name, f"must be one of {', '.join(map(str, choices))}")


def settings_field(cls, name: str):
    """The :class:`dataclasses.Field` ``name`` of the settings dataclass ``cls`` (its default and metadata)."""
    for f in fields(cls):
        if f.name == name:
            return f
    raise KeyError(name)


@dataclass(frozen=True, kw_only=True)
class RestoreOptions:
    """Per-photo restoration settings: the one schema of what the user sets about a restoration (each
    field's default and range; :class:`~engine.jobs.events.BatchSettings` adds where the outputs go).

    ``steps``: IR-SDE steps (1 = fast deterministic restoration). ``tile``: tile size in pixels,
    ``None`` = chosen from available memory. ``degradations``: overrides detection when given.
    ``keep_clean``: a photo in which nothing is detected (and no override is given) is returned
    unchanged instead of going through the restorer. ``strength``: how much of the restoration
    is applied, ``input + strength * (restored - input)``; 1 is the full restoration, 0 the input.
    ``guard``: the do-no-harm guard (:mod:`engine.inference.guard`), on by default: where the detection is
    not confident the strength is lowered toward the input (nothing detected: input kept); the
    user's ``strength`` stays the cap. ``None`` turns it off. Forced ``degradations`` are not guarded.
    """

    steps: int = setting(1, bounds=Range(1))
    tile: int | None = setting(None, bounds=Range(32, unit="pixels"))
    degradations: tuple[str, ...] | None = None
    seed: int = 0
    keep_clean: bool = False
    strength: float = setting(1.0, bounds=Range(0.0, 1.0))
    guard: GuardConfig | None = GuardConfig()

    def __post_init__(self) -> None:
        check_settings(self, ("strength",))

    def validate(self) -> None:
        """Raise :class:`SettingError` (one line) for the first option out of its range."""
        check_settings(self)
        if self.degradations is not None and len(self.degradations) > 2:
            raise SettingError("degradations", "takes at most two names")

    def restore_options(self) -> RestoreOptions:
        """These options as a plain :class:`RestoreOptions` (a subclass drops its own fields)."""
        return RestoreOptions(**{f.name: getattr(self, f.name) for f in fields(RestoreOptions)})
