"""The batch controller: what *Start*, *Restore again* and *Cancel* do, and how the worker's events
become each row's job state.

:class:`BatchController` touches no widget. It groups the photos of a run into worker tasks (one
per chosen set of degradations), applies each :class:`engine.jobs.events.BatchEvent` to its
:class:`~desktop.state.Job` (the table subscribes to the queue), closes the run when the worker
finishes or fails, and computes the run's :class:`Progress` (overall and current photo, the photo
count and the time left). The window forwards the user's actions to it and subscribes to its
signals: log lines, status-bar messages, the run starting and ending.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from desktop.state import CANCELLED, DONE, FAILED, PENDING, RUNNING, SKIPPED, Job, JobQueue, SettingsStore
from desktop.worker import Task
from engine.inference.guard import GuardDecision
from engine.jobs.api import Detection


def format_seconds(seconds: float) -> str:
    """``"4.2 s"`` under a minute, ``"m:ss"`` above; ``""`` for no time at all."""
    if seconds <= 0:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


@dataclass(frozen=True)
class Progress:
    """Where the run stands: ``overall`` and ``photo`` (the running photo) in [0, 1], ``text`` such
    as ``"1/3 photos · about 12.0 s left"`` (empty when no batch runs), ``current`` the running job."""

    overall: float
    photo: float
    text: str = ""
    current: Job | None = None


def tasks_for(jobs: list[Job], settings_for: Callable[[tuple[str, ...] | None], object]) -> list[Task]:
    """One task per set of chosen degradations (``None``: detected), in the order they first appear;
    ``settings_for(override)`` gives each task's engine settings."""
    groups: dict[tuple[str, ...] | None, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.override, []).append(job)
    return [Task(tuple((j.path, j.root) for j in group), settings_for(override)) for override, group in groups.items()]


class BatchController(QObject):
    """Runs batches of the queue's photos through ``host`` (a :class:`~desktop.worker.WorkerHost`).

    ``analyser`` (a :class:`~desktop.analyser.Analyser`) is what *Cancel* stops when no batch runs;
    ``ask_output_dir()`` is called when no output folder is set yet (the window opens its dialog);
    ``clock`` gives the seconds used for the elapsed time and the time left.
    """

    log = Signal(str, bool)  # a log line, and whether it is an error
    status = Signal(str)  # a short status-bar message
    runningChanged = Signal(bool)
    progressChanged = Signal()
    finished = Signal(object)  # list[FileResult], also after a cancel or a failure ([])

    def __init__(self, queue: JobQueue, store: SettingsStore, host, analyser=None,
                 ask_output_dir: Callable[[], object] | None = None,
                 clock: Callable[[], float] = time.monotonic, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.queue, self.store, self.host, self.analyser = queue, store, host, analyser
        self.ask_output_dir = ask_output_dir or (lambda: None)
        self.clock = clock
        self.run_paths: list[Path] = []
        self._started = 0.0
        w = host.worker
        w.event.connect(self.on_event)
        w.finished.connect(self.on_finished)
        w.failed.connect(self.on_failed)

    # ------------------------------------------------------------------ user actions

    @property
    def running(self) -> bool:
        return self.host.busy

    @property
    def analysing(self) -> bool:
        """Photos wait for analysis, or one is being analysed."""
        return self.analyser is not None and self.analyser.active

    def start(self) -> bool:
        """Restore every queued photo not yet done (all of them when every one is done)."""
        if self.running or not len(self.queue):
            return False
        return self._run(self.queue.unfinished() or list(self.queue.jobs))

    def restore_again(self, jobs: list[Job]) -> bool:
        """Restore ``jobs`` again with their chosen degradations, replacing earlier outputs."""
        if self.running or not jobs:
            return False
        return self._run(jobs, overwrite="overwrite")

    def cancel(self) -> None:
        """Stop the batch within a tile; without one, stop analysing after the current photo."""
        if self.running:
            self.host.cancel()
            self.log.emit("Cancelling…", False)
            self.status.emit("Cancelling after the current tile…")
        elif self.analysing:
            dropped = self.analyser.cancel()
            self.log.emit(f"Analysis cancelled ({dropped} photo(s) not analysed; Start detects them).", False)
            self.status.emit("Analysis cancelled.")

    def _run(self, jobs: list[Job], overwrite: str | None = None) -> bool:
        if not self.store.settings.output_dir:
            self.ask_output_dir()
        if not self.store.settings.output_dir:
            self.log.emit("Choose an output folder first.", False)
            return False
        s = self.store.settings
        extra = {"overwrite": overwrite} if overwrite else {}
        tasks = tasks_for(jobs, lambda override: s.batch_settings(override, **extra))
        self.run_paths = [j.path for j in jobs]
        self.queue.reset_status(self.run_paths)
        self._started = self.clock()
        self.log.emit(f"Restoring {len(jobs)} photo(s) with preset {s.preset} ({s.steps} step(s)) on {s.device}.",
                      False)
        self.host.start(tasks)
        self.runningChanged.emit(True)
        return True

    # ------------------------------------------------------------------ the worker's reports

    def on_event(self, ev) -> None:
        """Apply one :class:`engine.jobs.events.BatchEvent` from the worker to the queue."""
        k = ev.kind
        if k == "started":
            self.queue.update(ev.path, status=RUNNING, tiles_done=0, tiles_todo=0, error="")
        elif k == "detected":
            self.queue.update(ev.path, detection=ev.detection, guard=ev.guard)
        elif k == "progress":
            self.queue.update(ev.path, status=RUNNING, tiles_done=ev.done, tiles_todo=ev.todo)
        elif k in ("done", "skipped"):
            changes = {"status": DONE if k == "done" else SKIPPED, "output": ev.output, "seconds": ev.seconds}
            if ev.detection is not None:
                changes["detection"] = ev.detection
            if ev.guard is not None:
                changes["guard"] = ev.guard
            self.queue.update(ev.path, **changes)
            self.log.emit(f"{'Restored' if k == 'done' else 'Skipped'} {ev.path.name}"
                          + (f" in {ev.seconds:.1f} s" if k == "done" else " (already restored)")
                          + f" → {ev.output}", False)
        elif k == "failed":
            self.queue.update(ev.path, status=FAILED, error=ev.error, seconds=ev.seconds)
            self.log.emit(f"Failed: {ev.error}", True)
        elif k == "cancelled":
            self.queue.update(ev.path, status=CANCELLED)
        self.progressChanged.emit()

    def on_finished(self, results) -> None:
        """The run ended (also after a cancel): results complete the rows, photos not reached are cancelled."""
        for r in results:  # skipped files carry their earlier detection only in the result
            job = self.queue.job(Path(r.path))
            if job is not None and job.detection is None and (r.degradations or r.scores):
                self.queue.update(job.path, detection=Detection(tuple(r.degradations), dict(r.scores)))
            if job is not None and job.guard is None and isinstance(r.guard, dict):
                try:
                    self.queue.update(job.path, guard=GuardDecision(**r.guard))
                except TypeError:  # a manifest written by another version
                    pass
        self._close_unfinished(status=CANCELLED)
        counts: dict[str, int] = {}
        for job in self.run_jobs():
            counts[job.status] = counts.get(job.status, 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        elapsed = self.clock() - self._started
        self.log.emit(f"Batch finished in {format_seconds(elapsed) or '0 s'}: {summary}.", False)
        self.status.emit(f"Finished: {summary}.")
        self._end(results)

    def on_failed(self, message: str) -> None:
        """The run stopped before its photos were tried (e.g. the model did not load)."""
        self._close_unfinished(status=FAILED, error=message)
        self.log.emit(f"Batch stopped: {message}", True)
        self.status.emit(f"Batch stopped: {message}")
        self._end([])

    def _close_unfinished(self, **changes) -> None:
        for job in self.run_jobs():
            if job.status in (PENDING, RUNNING):
                self.queue.update(job.path, **changes)

    def _end(self, results) -> None:
        self.runningChanged.emit(False)
        self.finished.emit(results)

    # ------------------------------------------------------------------ progress

    def run_jobs(self) -> list[Job]:
        """The jobs of the current (or last) run still in the queue, in run order."""
        return [j for j in (self.queue.job(p) for p in self.run_paths) if j is not None]

    def progress(self) -> Progress:
        """The run's progress and the time left, estimated from the elapsed time and the fraction done."""
        jobs = self.run_jobs()
        if not self.running:
            finished = 1.0 if jobs else 0.0
            return Progress(finished, finished)
        fraction = self.queue.overall_fraction(jobs)
        current = next((j for j in jobs if j.status == RUNNING), None)
        done = sum(1 for j in jobs if j.status in (DONE, SKIPPED, FAILED, CANCELLED))
        text = f"{done}/{len(jobs)} photos"
        if fraction > 0.01:
            elapsed = self.clock() - self._started
            text += f" · about {format_seconds(elapsed * (1 - fraction) / fraction) or '0 s'} left"
        return Progress(fraction, current.fraction if current else 0.0, text, current)
