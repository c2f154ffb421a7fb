"""Typed data for batch restoration: settings, per-file events and results.

The batch runner (:mod:`engine.jobs.batch`) emits these events through a callback; the CLI turns
them into a tqdm bar and a JSON report, the desktop worker into Qt signals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.inference.guard import GuardDecision
from engine.io.writer import FORMATS
from engine.jobs.api import Detection, Range, RestoreOptions, SettingError, setting

NAMINGS: tuple[str, ...] = ("suffix", "subfolder")
OVERWRITE_POLICIES: tuple[str, ...] = ("skip", "overwrite", "rename")


@dataclass(frozen=True)
class BatchSettings(RestoreOptions):
    """How a batch is restored (the :class:`~engine.jobs.api.RestoreOptions` fields, keyword-only) and where
    its outputs go (the fields below).

    ``naming``: ``"suffix"`` writes ``<stem><suffix>.<ext>`` beside the mirrored tree in ``output_dir``;
    ``"subfolder"`` writes ``<output_dir>/<subfolder>/<mirrored tree>/<stem>.<ext>``.
    ``format``: ``None`` keeps the input's format, else one of ``jpeg png webp tiff bmp``.
    ``overwrite``: ``"skip"`` (skip outputs already restored with the same model and settings),
    ``"overwrite"`` (redo everything) or ``"rename"`` (write ``name (1).ext``).
    Which model restores the batch, on which device, and how its inputs were found are not settings
    of the batch: :class:`~engine.jobs.batch.BatchJob` takes them.
    """

    output_dir: Path
    naming: str = setting("suffix", choices=NAMINGS)
    suffix: str = ""
    subfolder: str = "restored"
    format: str | None = setting(None, choices=tuple(FORMATS))
    quality: int = setting(95, bounds=Range(1, 100))
    overwrite: str = setting("skip", choices=OVERWRITE_POLICIES)

    def validate(self) -> None:
        """Raise :class:`~engine.jobs.api.SettingError` (one line) for the first setting out of its range."""
        super().validate()
        if any(sep in self.suffix for sep in ("/", "\\")):
            raise SettingError("suffix", "must not contain a path separator")


@dataclass(frozen=True)
class BatchEvent:
    """Something that happened to one file of a batch.

    ``kind`` is one of ``"started" "detected" "progress" "done" "skipped" "failed" "cancelled"``.
    ``index`` is the file's position (0-based) among ``total`` files. ``guard``: the guard's
    decision, on ``"detected"`` and ``"done"`` (``None`` when the guard is off or names are forced).
    """

    kind: str
    path: Path
    index: int
    total: int
    output: Path | None = None
    detection: Detection | None = None
    done: int = 0  # tiles done, for "progress"
    todo: int = 0  # tiles in all, for "progress"
    seconds: float = 0.0
    error: str = ""
    guard: GuardDecision | None = None


@dataclass
class FileResult:
    """One row of the JSON report.

    ``guard``: the guard's decision (``{"estimate", "strength", "name"}``, :meth:`GuardDecision.to_json`),
    ``None`` when off or overridden; ``strength``: the strength the photo was restored at (the user's
    cap and the guard's together), ``None`` until it is restored.
    """

    path: str
    status: str  # "done" | "skipped" | "failed" | "cancelled"
    output: str | None = None
    degradations: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    guard: dict | None = None
    strength: float | None = None

    def to_json(self) -> dict:
        return asdict(self)
