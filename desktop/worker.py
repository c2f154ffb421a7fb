"""The one worker that drives the engine, living in its own QThread.

The GUI thread asks for work by emitting :attr:`WorkerHost.requested`; the worker validates and
runs one :class:`engine.jobs.batch.BatchJob` for each task (the checks the CLI makes before it starts) and reports every :class:`~engine.jobs.events.BatchEvent`
through a queued signal. Cancelling sets a :class:`~engine.jobs.api.CancelToken` directly (thread-safe),
and the engine checks it between tiles, so the interface never waits for the worker.

Photos are also analysed as soon as they are queued: :class:`PendingAnalyses` (a locked list shared
with the GUI thread) holds them in queue order, and the worker detects them one by one, keeping
each condition in an :class:`engine.inference.analysis.AnalysisCache` that the batch reuses. Clearing the
list cancels what has not started; a batch waiting to start makes the analysis stop after the
current photo (the batch detects the rest itself) and go on when the batch ends.
"""

from __future__ import annotations

import gc
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine.io.atomic import one_line
from engine.jobs.api import CancelToken

if TYPE_CHECKING:
    from desktop.state import DesktopBatch

RestorerFactory = Callable[[Path | None, str], object]


def default_restorer_factory(model_dir: Path | None, device: str):
    """Build the engine's ``Restorer`` (imported here so torch loads in the worker thread if not yet)."""
    from engine.inference.runtime import Restorer

    return Restorer(model_dir=model_dir, device=device)


@dataclass(frozen=True)
class AnalysisRequest:
    """Analyse the pending photos with this model and device."""

    model_dir: Path | None
    device: str


class PendingAnalyses:
    """Photos waiting to be analysed, in queue order, each with the model to analyse it with.

    Safe to use from both threads. Each photo carries its own request, so a photo queued again
    after a change of model is analysed with the new one even when an older loop picks it up.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: dict[Path, AnalysisRequest] = {}  # insertion-ordered

    def __len__(self) -> int:
        with self._lock:
            return len(self._paths)

    def put(self, paths, request: AnalysisRequest) -> int:
        """Append ``paths`` not yet waiting (a waiting one takes the new request); returns how many were new."""
        with self._lock:
            before = len(self._paths)
            for p in paths:
                self._paths[Path(p)] = request
            return len(self._paths) - before

    def discard(self, paths) -> None:
        with self._lock:
            for p in paths:
                self._paths.pop(Path(p), None)

    def clear(self) -> list[Path]:
        """Forget every waiting photo; returns them."""
        with self._lock:
            dropped, self._paths = list(self._paths), {}
            return dropped

    def pop(self) -> tuple[Path, AnalysisRequest] | None:
        """The next photo to analyse and its request, or None."""
        with self._lock:
            if not self._paths:
                return None
            path = next(iter(self._paths))
            return path, self._paths.pop(path)


@dataclass(frozen=True)
class Task:
    """One :class:`~engine.jobs.batch.BatchJob`: ``inputs`` are ``(file, root)`` pairs, all with the same
    settings; ``settings`` also name the model and device (:class:`desktop.state.DesktopBatch`)."""

    inputs: tuple[tuple[Path, Path], ...]
    settings: DesktopBatch


class BatchWorker(QObject):
    """Runs tasks one after another in the worker thread; never touches widgets."""

    event = Signal(object)  # engine.jobs.events.BatchEvent
    log = Signal(str)
    finished = Signal(object)  # list[FileResult] of the whole request
    failed = Signal(str)  # the request stopped before its files were tried (e.g. the model did not load)
    analysing = Signal(object)  # path: its analysis begins
    analysed = Signal(object, object, object)  # path, engine.jobs.api.Detection, engine.inference.guard.GuardDecision | None
    analysisFailed = Signal(object, str)  # path, one line (e.g. an unreadable file)
    analysisStopped = Signal(str)  # no photo can be analysed (the model did not load)

    def __init__(self, restorer_factory: RestorerFactory | None = None) -> None:
        super().__init__()
        self._factory = restorer_factory or default_restorer_factory
        self._restorer = None
        self._restorer_key: tuple | None = None
        self._analyses = None  # engine.inference.analysis.AnalysisCache of the current restorer
        self.cancel_token = CancelToken()
        self.pending = PendingAnalyses()
        self.batch_waiting = threading.Event()  # set by the GUI thread: stop analysing, a batch is next

    def _restorer_for(self, model_dir: Path | None, device: str):
        from engine.inference.analysis import AnalysisCache

        key = (str(model_dir) if model_dir else None, device)
        if self._restorer is None or key != self._restorer_key:
            self._restorer = self._analyses = None  # free the old model before loading a new one
            t0 = time.perf_counter()
            self.log.emit(f"Loading model {key[0] or '(bundled)'} on {device}...")
            self._restorer = self._factory(model_dir, device)
            self._restorer_key = key
            self._analyses = AnalysisCache(self._restorer)
            # The model and the libraries are long-lived: take them out of the cyclic collector's
            # view, or a full collection (0.2-0.4 s over ~400k objects, holding the GIL) stalls the GUI.
            gc.freeze()
            self.log.emit(f"Model loaded in {time.perf_counter() - t0:.1f} s.")
        return self._restorer

    @Slot()
    def analyze(self) -> None:
        """Analyse the pending photos in order until none is left or a batch is waiting."""
        from engine.jobs.batch import file_error
        while not self.batch_waiting.is_set():
            item = self.pending.pop()
            if item is None:
                return
            path, request = item
            try:
                self._restorer_for(request.model_dir, request.device)
            except Exception as exc:  # the model did not load: no photo can be analysed
                self.pending.clear()
                self.log.emit("".join(traceback.format_exception(exc)).rstrip())
                self.analysisStopped.emit(one_line(exc))
                return
            self.analysing.emit(path)
            try:
                detection = self._analyses.analyze(path)
            except Exception as exc:  # one unreadable photo must not stop the others
                self.analysisFailed.emit(path, file_error(exc, path))
            else:
                self.analysed.emit(path, detection, self._analyses.guard(path))

    @Slot(object)
    def run(self, tasks: list[Task]) -> None:
        """Run ``tasks``; emits :attr:`finished` (also after a cancel) or :attr:`failed` (also when a
        task does not pass :meth:`~engine.jobs.batch.BatchJob.validate`)."""
        from engine.jobs.batch import BatchJob

        self.batch_waiting.clear()
        results: list = []
        try:
            for task in tasks:
                if self.cancel_token.cancelled:
                    break
                s = task.settings
                restorer = self._restorer_for(s.model_dir, s.device)
                job = BatchJob(task.inputs, s.job_settings(), restorer, analyses=self._analyses)
                job.validate()
                results += job.run(self.event.emit, self.cancel_token)
        except Exception as exc:  # the worker must survive anything the engine raises
            msg = one_line(exc)
            self.log.emit("".join(traceback.format_exception(exc)).rstrip())
            self.failed.emit(msg)
            return
        self.finished.emit(results)


class WorkerHost(QObject):
    """Owns the worker thread. ``start(tasks)`` queues a batch, ``analyze(paths, ...)`` an analysis;
    ``cancel()`` and ``cancel_analysis()`` return at once."""

    requested = Signal(object)
    analysisRequested = Signal()

    def __init__(self, restorer_factory: RestorerFactory | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("photomend-worker")
        self.worker = BatchWorker(restorer_factory)
        self.worker.moveToThread(self.thread)
        self.requested.connect(self.worker.run)
        self.analysisRequested.connect(self.worker.analyze)
        self.worker.finished.connect(self._on_end)
        self.worker.failed.connect(self._on_end)
        self.busy = False
        self.thread.start()

    def start(self, tasks: list[Task]) -> None:
        if self.busy:
            raise RuntimeError("a batch is already running")
        self.busy = True
        self.worker.cancel_token.reset()
        self.worker.pending.discard(path for task in tasks for path, _root in task.inputs)
        self.worker.batch_waiting.set()  # an analysis under way stops after its current photo
        self.requested.emit(tasks)

    def cancel(self) -> None:
        self.worker.cancel_token.cancel()

    def analyze(self, paths, model_dir: Path | None, device: str) -> None:
        """Queue ``paths`` for analysis (after the batch when one runs)."""
        self.worker.pending.put(paths, AnalysisRequest(model_dir, device))
        if not self.busy:
            self.analysisRequested.emit()

    def cancel_analysis(self, paths=None) -> list[Path]:
        """Drop ``paths`` (default: all) from the photos waiting for analysis; returns those dropped."""
        if paths is None:
            return self.worker.pending.clear()
        paths = list(paths)
        self.worker.pending.discard(paths)
        return paths

    @property
    def analyses_pending(self) -> int:
        return len(self.worker.pending)

    @Slot()
    def _on_end(self, *_args) -> None:
        self.busy = False
        if len(self.worker.pending):
            self.analysisRequested.emit()  # what the batch interrupted

    def shutdown(self, wait_ms: int = 10000) -> None:
        """Cancel, stop the thread's event loop and wait for it (call before the app quits)."""
        self.cancel()
        self.cancel_analysis()
        self.worker.batch_waiting.set()
        self.thread.quit()
        self.thread.wait(wait_ms)
