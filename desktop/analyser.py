"""Detection on add: queued photos are analysed in the worker at once, and the results go into the queue.

:class:`Analyser` sits between the plain :class:`~desktop.state.JobQueue` and the
:class:`~desktop.worker.WorkerHost`; it touches no widget. It asks the worker to analyse new photos
in queue order, applies each detection to its job (the row and the override panel subscribe to the
queue), cancels on request, and analyses the photos not restored yet again when another model is
chosen. The batch reuses these analyses (:class:`engine.inference.analysis.AnalysisCache`).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from desktop.state import PENDING, JobQueue, Settings, SettingsStore
from desktop.worker import WorkerHost
from engine.inference.guard import GuardDecision
from engine.jobs.api import Detection


class Analyser(QObject):
    """Analyses queued photos before *Start*; reports through signals only."""

    message = Signal(str, bool)  # a log line, and whether it is an error
    status = Signal(str)  # a short status-bar message
    changed = Signal()  # photos started or stopped waiting (the window enables Cancel)
    finished = Signal()  # no photo waits for analysis any more

    def __init__(self, queue: JobQueue, store: SettingsStore, host: WorkerHost, parent: QObject | None = None):
        super().__init__(parent)
        self.queue, self.store, self.host = queue, store, host
        self._model_dir = store.settings.model_dir
        w = host.worker
        w.analysing.connect(lambda path: self.queue.update(path, analysing=True))
        w.analysed.connect(self._on_analysed)
        w.analysisFailed.connect(self._on_failed)
        w.analysisStopped.connect(self._on_stopped)
        store.subscribe(self._on_settings)

    @property
    def active(self) -> bool:
        """Photos wait for analysis, or one is being analysed."""
        return bool(self.host.analyses_pending) or any(j.analysing for j in self.queue.jobs)

    def analyze(self, paths) -> None:
        """Detect the degradations of ``paths`` in the worker, in this order (after a running batch)."""
        paths = [p for p in paths if (job := self.queue.job(p)) is not None and job.detection is None]
        if not paths:
            return
        s = self.store.settings
        self.host.analyze(paths, Path(s.model_dir) if s.model_dir else None, s.device)
        if not self.host.busy:
            self.status.emit(f"Analysing {self.host.analyses_pending} photo(s)…")
        self.changed.emit()

    def cancel(self) -> int:
        """Drop every photo waiting (the current one finishes); returns how many were dropped."""
        dropped = self.host.cancel_analysis()
        self.changed.emit()
        return len(dropped)

    def discard(self, paths) -> None:
        """Forget ``paths`` (removed from the queue)."""
        self.host.cancel_analysis(paths)
        self.changed.emit()

    def _on_analysed(self, path: Path, detection: Detection, guard: GuardDecision | None) -> None:
        job = self.queue.job(path)
        if job is not None:
            self.queue.update(path, detection=detection, guard=guard, analysing=False, error="")
            said = f" ({guard.describe()})" if guard is not None else ""
            self.message.emit(f"Detected in {job.path.name}: {job.degradations_text()}{said}", False)
        self._step_done()

    def _on_failed(self, path: Path, message: str) -> None:
        if self.queue.job(path) is not None:
            self.queue.update(path, analysing=False, error=message)
            self.message.emit(f"Cannot analyse: {message}", True)
        self._step_done()

    def _on_stopped(self, message: str) -> None:
        for job in self.queue.jobs:
            if job.analysing:
                self.queue.update(job.path, analysing=False)
        self.message.emit(f"Cannot analyse the photos: {message}", True)
        self.status.emit(f"Cannot analyse the photos: {message}")
        self._step_done()

    def _step_done(self) -> None:
        self.changed.emit()
        if self.active:
            if not self.host.busy:
                self.status.emit(f"Analysing {self.host.analyses_pending + 1} photo(s)…")
            return
        if not self.host.busy:
            done = sum(j.detection is not None for j in self.queue.jobs)
            self.message.emit(f"Analysis finished: {done} of {len(self.queue)} photo(s) analysed.", False)
            self.status.emit("Check what was detected (change it under Degradations), then Start.")
        self.finished.emit()

    def _on_settings(self, s: Settings) -> None:
        """Another model detects differently: analyse the photos not restored yet again."""
        if s.model_dir == self._model_dir:
            return
        self._model_dir = s.model_dir
        again = [j.path for j in self.queue.jobs if j.status == PENDING and j.detection is not None]
        for p in again:
            self.queue.update(p, detection=None, guard=None)
        self.analyze(again)
