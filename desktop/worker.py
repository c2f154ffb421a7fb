"""The one worker that drives the engine, living in its own QThread.

The GUI thread asks for work by emitting :attr:`BatchRunner.requested`; the worker runs
:func:`engine.batch.run_batch` for each task and reports every :class:`~engine.jobs.BatchEvent`
through a queued signal. Cancelling sets a :class:`~engine.api.CancelToken` directly (thread-safe),
and the engine checks it between tiles, so the interface never waits for the worker.
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine.api import CancelToken
from engine.jobs import BatchSettings

RestorerFactory = Callable[[Path | None, str], object]


def default_restorer_factory(model_dir: Path | None, device: str):
    """Build the engine's ``Restorer`` (imported here so torch loads in the worker thread if not yet)."""
    from engine.runtime import Restorer

    return Restorer(model_dir=model_dir, device=device)


@dataclass(frozen=True)
class Task:
    """One call of ``run_batch``: ``inputs`` are ``(file, root)`` pairs, all with the same settings."""

    inputs: tuple[tuple[Path, Path], ...]
    settings: BatchSettings


class BatchWorker(QObject):
    """Runs tasks one after another in the worker thread; never touches widgets."""

    event = Signal(object)  # engine.jobs.BatchEvent
    log = Signal(str)
    finished = Signal(object)  # list[FileResult] of the whole request
    failed = Signal(str)  # the request stopped before its files were tried (e.g. the model did not load)

    def __init__(self, restorer_factory: RestorerFactory | None = None) -> None:
        super().__init__()
        self._factory = restorer_factory or default_restorer_factory
        self._restorer = None
        self._restorer_key: tuple | None = None
        self.cancel_token = CancelToken()

    def _restorer_for(self, settings: BatchSettings):
        key = (str(settings.model_dir) if settings.model_dir else None, settings.device)
        if self._restorer is None or key != self._restorer_key:
            self._restorer = None  # free the old model before loading a new one
            t0 = time.perf_counter()
            self.log.emit(f"Loading model {key[0] or '(bundled)'} on {settings.device}...")
            self._restorer = self._factory(settings.model_dir, settings.device)
            self._restorer_key = key
            # The model and the libraries are long-lived: take them out of the cyclic collector's
            # view, or a full collection (0.2-0.4 s over ~400k objects, holding the GIL) stalls the GUI.
            gc.freeze()
            self.log.emit(f"Model loaded in {time.perf_counter() - t0:.1f} s.")
        return self._restorer

    @Slot(object)
    def run(self, tasks: list[Task]) -> None:
        """Run ``tasks``; emits :attr:`finished` (also after a cancel) or :attr:`failed`."""
        from engine.batch import run_batch

        results: list = []
        try:
            for task in tasks:
                if self.cancel_token.cancelled:
                    break
                restorer = self._restorer_for(task.settings)
                results += run_batch(
                    list(task.inputs), task.settings, restorer, self.event.emit, self.cancel_token
                )
        except Exception as exc:  # the worker must survive anything the engine raises
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.log.emit("".join(traceback.format_exception(exc)).rstrip())
            self.failed.emit(msg)
            return
        self.finished.emit(results)


class WorkerHost(QObject):
    """Owns the worker thread. ``start(tasks)`` queues work; ``cancel()`` returns at once."""

    requested = Signal(object)

    def __init__(self, restorer_factory: RestorerFactory | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("photomend-worker")
        self.worker = BatchWorker(restorer_factory)
        self.worker.moveToThread(self.thread)
        self.requested.connect(self.worker.run)
        self.worker.finished.connect(self._on_end)
        self.worker.failed.connect(self._on_end)
        self.busy = False
        self.thread.start()

    def start(self, tasks: list[Task]) -> None:
        if self.busy:
            raise RuntimeError("a batch is already running")
        self.busy = True
        self.worker.cancel_token.reset()
        self.requested.emit(tasks)

    def cancel(self) -> None:
        self.worker.cancel_token.cancel()

    @Slot()
    def _on_end(self, *_args) -> None:
        self.busy = False

    def shutdown(self, wait_ms: int = 10000) -> None:
        """Cancel, stop the thread's event loop and wait for it (call before the app quits)."""
        self.cancel()
        self.thread.quit()
        self.thread.wait(wait_ms)
