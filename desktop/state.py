"""Plain-Python state of the desktop app: the job queue, the settings and the current comparison.

No Qt here. Each state object keeps a list of callbacks and calls them after a change, so widgets
receive the state in their constructor and only subscribe (the view never owns the data).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from engine.inference.guard import GuardDecision
from engine.io import atomic
from engine.io.writer import FORMATS as ENGINE_FORMATS
from engine.jobs.api import Detection, Range, settings_field
from engine.jobs.events import BatchSettings
from engine.vocab import DEGRADATIONS

APP_NAME = "PhotoMend"
CONFIG_ENV = "PHOTOMEND_CONFIG_DIR"  # overrides platformdirs (tests, portable installs)

PRESETS: dict[str, int] = {"Fast": 1, "Balanced": 4, "Best": 20}
FORMATS: tuple[str, ...] = ("same", *ENGINE_FORMATS)  # "same": the input's format (the engine's None)


class Observable:
    """Keeps callbacks and calls each of them with ``(*args)`` on :meth:`_emit`."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., None]] = []

    def subscribe(self, callback: Callable[..., None]) -> None:
        self._callbacks.append(callback)

    def unsubscribe(self, callback: Callable[..., None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def _emit(self, *args) -> None:
        for cb in list(self._callbacks):
            cb(*args)


# --------------------------------------------------------------------------------------- the job queue

PENDING, RUNNING, DONE, SKIPPED, FAILED, CANCELLED = "pending", "running", "done", "skipped", "failed", "cancelled"
FINISHED_STATES = (DONE, SKIPPED, FAILED, CANCELLED)


@dataclass
class Job:
    """One photo in the queue. ``root`` is the folder it was found in (the output mirrors the tree below)."""

    path: Path
    root: Path
    status: str = PENDING
    detection: Detection | None = None
    override: tuple[str, ...] | None = None  # user-chosen degradations; None = use detection
    output: Path | None = None
    seconds: float = 0.0
    error: str = ""
    tiles_done: int = 0
    tiles_todo: int = 0
    analysing: bool = False  # the worker is detecting its degradations now (before Start)
    guard: GuardDecision | None = None  # the do-no-harm guard's decision (None: off, or names chosen)

    @property
    def fraction(self) -> float:
        """Progress of this photo in [0, 1]."""
        if self.status in FINISHED_STATES:
            return 1.0
        if self.status == RUNNING and self.tiles_todo:
            return min(1.0, self.tiles_done / self.tiles_todo)
        return 0.0

    def guard_text(self) -> str:
        """How likely restoring helps, ``"83%"``; ``"kept"`` when the guard keeps the photo as it is."""
        if self.guard is None or self.override is not None:
            return ""
        return "kept" if self.guard.keeps_input else f"{self.guard.estimate:.0%}"

    def degradations_text(self) -> str:
        """``"noisy 92%, hazy 71%"`` (override shown as ``"noisy, hazy (chosen)"``)."""
        if self.override is not None:
            return (", ".join(self.override) or "none") + " (chosen)"
        if self.detection is None:
            return "analysing…" if self.analysing else ""
        if not self.detection.degradations:
            return "none"
        parts = []
        for name in self.detection.degradations:
            score = self.detection.scores.get(name)
            parts.append(f"{name} {score:.0%}" if score is not None else name)
        return ", ".join(parts)


class JobQueue(Observable):
    """Ordered photos keyed by path. Callbacks get ``(kind, index)``: ``"reset"`` (index -1) or ``"changed"``."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[Job] = []
        self._index: dict[Path, int] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, pairs: Iterable[tuple[Path, Path]]) -> int:
        """Append ``(file, root)`` pairs not yet queued; return how many were added."""
        added = 0
        for path, root in pairs:
            path = Path(path)
            if path in self._index:
                continue
            self._index[path] = len(self.jobs)
            self.jobs.append(Job(path=path, root=Path(root)))
            added += 1
        if added:
            self._emit("reset", -1)
        return added

    def remove(self, indices: Iterable[int]) -> None:
        drop = set(indices)
        self.jobs = [j for i, j in enumerate(self.jobs) if i not in drop]
        self._reindex()
        self._emit("reset", -1)

    def clear(self) -> None:
        self.jobs = []
        self._reindex()
        self._emit("reset", -1)

    def _reindex(self) -> None:
        self._index = {j.path: i for i, j in enumerate(self.jobs)}

    def index_of(self, path: Path) -> int:
        return self._index.get(Path(path), -1)

    def job(self, path: Path) -> Job | None:
        i = self.index_of(path)
        return self.jobs[i] if i >= 0 else None

    def update(self, path: Path, **changes) -> None:
        """Set fields of the job at ``path`` and notify (unknown paths are ignored)."""
        i = self.index_of(path)
        if i < 0:
            return
        job = self.jobs[i]
        for key, value in changes.items():
            setattr(job, key, value)
        self._emit("changed", i)

    def set_override(self, path: Path, names: tuple[str, ...] | None) -> None:
        self.update(path, override=None if names is None else tuple(names))

    def reset_status(self, paths: Iterable[Path]) -> None:
        """Mark ``paths`` pending again (before a run)."""
        for p in paths:
            self.update(p, status=PENDING, error="", tiles_done=0, tiles_todo=0, seconds=0.0)

    def unfinished(self) -> list[Job]:
        return [j for j in self.jobs if j.status not in (DONE, SKIPPED)]

    def overall_fraction(self, jobs: list[Job] | None = None) -> float:
        jobs = self.jobs if jobs is None else jobs
        return sum(j.fraction for j in jobs) / len(jobs) if jobs else 0.0


# ------------------------------------------------------------------------------------------ settings


def config_dir() -> Path:
    """``$PHOTOMEND_CONFIG_DIR`` or platformdirs' user config folder for PhotoMend."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def _engine_default(name: str):
    """The engine's default for the batch setting ``name`` (:class:`~engine.jobs.events.BatchSettings`)."""
    return settings_field(BatchSettings, name).default


@dataclass(frozen=True)
class DesktopBatch(BatchSettings):
    """A batch as the window asks for it: the job's :class:`~engine.jobs.events.BatchSettings` and the model
    folder (``None``: bundled) and device the worker builds its restorer from (not settings of the job)."""

    model_dir: Path | None = None
    device: str = "auto"

    def job_settings(self) -> BatchSettings:
        """The settings of the job alone."""
        return BatchSettings(**{f.name: getattr(self, f.name) for f in fields(BatchSettings)})


# Settings the desktop shows its own way (the rest of the batch settings pass through as they are).
_OWN_WAY = {"output_dir", "format", "tile", "strength", "suffix"}


@dataclass
class Settings:
    """What the user chose in the settings panel; saved as JSON between runs.

    The fields the engine's :class:`~engine.jobs.events.BatchSettings` also has take its default, range and
    choices and go to it unchanged, except those the desktop sets its own way: ``output_dir`` (text,
    ``""`` = not chosen), ``format`` (``"same"`` = the input's), ``tile`` (``0`` = from memory),
    ``strength`` (percent) and ``suffix`` (``"_restored"`` by default); ``preset`` names the steps.
    ``device``, ``model_dir``, ``models`` and ``recursive`` say how a batch is built, not how it restores.
    """

    output_dir: str = ""
    naming: str = _engine_default("naming")
    suffix: str = "_restored"
    subfolder: str = _engine_default("subfolder")
    format: str = "same"
    quality: int = _engine_default("quality")
    device: str = "auto"
    preset: str = "Fast"
    tile: int = 0  # 0 = chosen from available memory
    recursive: bool = True
    overwrite: str = _engine_default("overwrite")
    keep_clean: bool = _engine_default("keep_clean")  # photos in which nothing is detected are written unchanged
    strength: int = 100  # percent of the restoration applied (100 = all of it)
    model_dir: str = ""  # "" = the bundled model
    models: list[str] = field(default_factory=list)  # bundles added from disk

    @property
    def steps(self) -> int:
        return PRESETS.get(self.preset, 1)

    def batch_settings(self, degradations: tuple[str, ...] | None = None, **overrides) -> DesktopBatch:
        """The engine's settings for these choices, with the model and device (``output_dir`` must be set)."""
        if not self.output_dir:
            raise ValueError("choose an output folder first")
        ours = {f.name for f in fields(Settings)} - _OWN_WAY
        passed = {f.name: getattr(self, f.name) for f in fields(BatchSettings) if f.name in ours}
        bs = DesktopBatch(
            **passed,
            output_dir=Path(self.output_dir),
            suffix=self.suffix,
            format=None if self.format == "same" else self.format,
            tile=int(self.tile) or None,
            strength=self.strength / 100.0,
            steps=self.steps,
            degradations=degradations,
            model_dir=Path(self.model_dir) if self.model_dir else None,
            device=self.device,
        )
        return replace(bs, **overrides) if overrides else bs

    def validated(self) -> Settings:
        """A copy with out-of-range values replaced by defaults (a hand-edited file must not crash the app)."""
        d = Settings()
        fixed = replace(self)
        engine = {f.name: f for f in fields(BatchSettings)}
        for f in fields(Settings):
            value, default = getattr(fixed, f.name), getattr(d, f.name)
            if isinstance(default, bool) and not isinstance(value, bool):  # the check boxes take only booleans
                setattr(fixed, f.name, default)
            elif f.name in engine and f.name not in _OWN_WAY:
                bounds, choices = engine[f.name].metadata.get("range"), engine[f.name].metadata.get("choices")
                if choices and value not in choices:
                    setattr(fixed, f.name, default)
                elif bounds is not None:
                    setattr(fixed, f.name, int(bounds.clamp(int(value))))
        if fixed.format not in FORMATS:
            fixed.format = d.format
        if fixed.preset not in PRESETS:
            fixed.preset = d.preset
        fixed.tile = max(0, int(fixed.tile))
        percent = _percent(settings_field(BatchSettings, "strength").metadata["range"])
        fixed.strength = d.strength if isinstance(fixed.strength, bool) else int(percent.clamp(int(fixed.strength)))
        fixed.models = [str(m) for m in fixed.models if isinstance(m, str)]
        return fixed


def _percent(fraction: Range) -> Range:
    return Range(fraction.low * 100, None if fraction.high is None else fraction.high * 100)


class SettingsStore(Observable):
    """The current :class:`Settings`, loaded from and saved to ``settings.json`` in the config folder.

    Callbacks get the new :class:`Settings` after each :meth:`set`.
    """

    FILE_NAME = "settings.json"

    def __init__(self, folder: Path | None = None) -> None:
        super().__init__()
        self.folder = Path(folder) if folder is not None else config_dir()
        self.settings = self.load()

    @property
    def path(self) -> Path:
        return self.folder / self.FILE_NAME

    def load(self) -> Settings:
        """Read the file; a missing or broken file gives the defaults."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return Settings()
        if not isinstance(data, dict):
            return Settings()
        known = {f.name for f in fields(Settings)}
        try:
            return Settings(**{k: v for k, v in data.items() if k in known}).validated()
        except (TypeError, ValueError, OverflowError):  # e.g. "quality": Infinity
            return Settings()

    def save(self) -> None:
        atomic.write_json(self.path, asdict(self.settings))

    def set(self, **changes) -> None:
        """Change some fields, save, notify."""
        new = replace(self.settings, **changes)
        if new == self.settings:
            return
        self.settings = new
        try:
            self.save()
        except OSError:
            pass  # a read-only config folder must not stop the app; settings live for this session
        self._emit(self.settings)


# --------------------------------------------------------------------------------- the comparison


class Comparison(Observable):
    """The before/after pair shown in the comparison view and how it is shown.

    ``split`` in [0, 1] is where the divider sits (fraction of the view's width); ``mode`` is
    ``"split"``, ``"side"`` or ``"toggle"`` (one image over the whole view, ``showing`` says which:
    ``"before"`` or ``"after"``); ``zoom`` is screen pixels per image pixel, ``None`` = fit;
    ``center`` is the image point shown at the view's centre (image pixels), shared by both images.
    Callbacks get the name of what changed: ``"images" "split" "mode" "view"``.
    """

    MODES = ("split", "side", "toggle")

    def __init__(self) -> None:
        super().__init__()
        self.before: Path | None = None
        self.after: Path | None = None
        self.split = 0.5
        self.mode = "split"
        self.showing = "before"
        self.zoom: float | None = None
        self.center: tuple[float, float] | None = None

    def set_images(self, before: Path | None, after: Path | None) -> None:
        self.before, self.after = before, after
        self.zoom, self.center = None, None
        self._emit("images")

    def set_split(self, value: float) -> None:
        value = min(1.0, max(0.0, float(value)))
        if value != self.split:
            self.split = value
            self._emit("split")

    def set_mode(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"unknown comparison mode {mode!r}")
        if mode != self.mode:
            self.mode = mode
            self._emit("mode")

    def toggle_before_after(self) -> None:
        """Show the other image alone (the key Space): from a split or side view, the *before* first."""
        if self.mode != "toggle":
            self.mode, self.showing = "toggle", "before"
        else:
            self.showing = "after" if self.showing == "before" else "before"
        self._emit("mode")

    def set_view(self, zoom: float | None, center: tuple[float, float] | None) -> None:
        if zoom is not None:
            zoom = min(32.0, max(0.02, zoom))
        self.zoom, self.center = zoom, center
        self._emit("view")

    def fit(self) -> None:
        self.set_view(None, None)


def vocabulary() -> tuple[str, ...]:
    """Names the user may pick when overriding detection."""
    return DEGRADATIONS
