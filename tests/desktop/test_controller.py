"""The batch controller without a window: tasks, rows' states from the worker's events, the end of a
run, the time left, Cancel. A fake host stands in for the worker thread; its signals are emitted here."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Signal

from desktop.controller import BatchController, Progress, format_seconds, tasks_for
from desktop.state import CANCELLED, DONE, FAILED, PENDING, RUNNING, SKIPPED, JobQueue
from engine.inference.guard import GuardDecision
from engine.jobs.api import Detection
from engine.jobs.events import BatchEvent, FileResult


class FakeWorker(QObject):
    event = Signal(object)
    finished = Signal(object)
    failed = Signal(str)


class FakeHost(QObject):
    """What the controller needs of :class:`desktop.worker.WorkerHost`: ``busy``, ``start``, ``cancel``
    and the worker's signals; like the real host, it is idle again before anyone else hears the end."""

    def __init__(self) -> None:
        super().__init__()
        self.worker = FakeWorker()
        self.worker.finished.connect(self._on_end)
        self.worker.failed.connect(self._on_end)
        self.busy = False
        self.started: list[list] = []
        self.cancelled = 0

    def start(self, tasks) -> None:
        assert not self.busy
        self.busy = True
        self.started.append(tasks)

    def cancel(self) -> None:
        self.cancelled += 1

    def _on_end(self, *_args) -> None:
        self.busy = False


class FakeAnalyser:
    def __init__(self, active: bool) -> None:
        self.active, self.cancels = active, 0

    def cancel(self) -> int:
        self.cancels += 1
        self.active = False
        return 2


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Every signal of a controller, in order."""

    def __init__(self, c: BatchController) -> None:
        self.logs: list[tuple[str, bool]] = []
        self.statuses: list[str] = []
        self.running: list[bool] = []
        self.finished: list = []
        self.progress = 0
        c.log.connect(lambda m, e: self.logs.append((m, e)))
        c.status.connect(self.statuses.append)
        c.runningChanged.connect(self.running.append)
        c.finished.connect(self.finished.append)
        c.progressChanged.connect(self._tick)

    def _tick(self) -> None:
        self.progress += 1


PHOTOS = [Path("/in/a.png"), Path("/in/b.jpg"), Path("/in/sub/c.png")]


@pytest.fixture
def kit(store, tmp_path):
    store.set(output_dir=str(tmp_path / "out"))
    queue = JobQueue()
    queue.add((p, Path("/in")) for p in PHOTOS)
    host, clock = FakeHost(), Clock()
    controller = BatchController(queue, store, host, clock=clock)
    return controller, queue, host, clock, Recorder(controller)


def event(kind: str, path: Path, **fields) -> BatchEvent:
    return BatchEvent(kind=kind, path=path, index=PHOTOS.index(path), total=len(PHOTOS), **fields)


def test_start_groups_photos_by_chosen_degradations(kit):
    controller, queue, host, _clock, rec = kit
    queue.set_override(PHOTOS[1], ("blurry",))
    queue.update(PHOTOS[0], status=FAILED, error="earlier")

    assert controller.start()
    assert controller.running and rec.running == [True]
    [tasks] = host.started
    assert [[p for p, _ in t.inputs] for t in tasks] == [[PHOTOS[0], PHOTOS[2]], [PHOTOS[1]]]
    assert [t.settings.degradations for t in tasks] == [None, ("blurry",)]
    assert all(t.settings.overwrite == "skip" for t in tasks)
    assert queue.job(PHOTOS[0]).status == PENDING and queue.job(PHOTOS[0]).error == ""
    assert rec.logs[-1][0].startswith("Restoring 3 photo(s) with preset Fast")
    assert not controller.start()  # one batch at a time
    assert len(host.started) == 1


def test_start_restores_the_unfinished_photos_or_all_when_all_are_done(kit):
    controller, queue, host, _clock, _rec = kit
    queue.update(PHOTOS[0], status=DONE)
    queue.update(PHOTOS[2], status=SKIPPED)
    assert controller.start()
    assert controller.run_paths == [PHOTOS[1]]
    host.worker.finished.emit([])
    for p in PHOTOS:
        queue.update(p, status=DONE)
    assert controller.start()
    assert controller.run_paths == PHOTOS


def test_restore_again_overwrites(kit):
    controller, _queue, host, _clock, _rec = kit
    assert not controller.restore_again([])
    assert controller.restore_again([controller.queue.jobs[2]])
    [[task]] = host.started
    assert task.settings.overwrite == "overwrite" and [p for p, _ in task.inputs] == [PHOTOS[2]]


def test_without_an_output_folder_the_user_is_asked_first(kit, store, tmp_path):
    controller, _queue, host, _clock, rec = kit
    store.set(output_dir="")
    asked: list[int] = []
    controller.ask_output_dir = lambda: asked.append(1)
    assert not controller.start()
    assert asked == [1] and host.started == [] and rec.logs[-1] == ("Choose an output folder first.", False)

    controller.ask_output_dir = lambda: store.set(output_dir=str(tmp_path / "chosen"))
    assert controller.start()
    assert host.started[0][0].settings.output_dir == tmp_path / "chosen"


def test_events_become_each_rows_state(kit):
    controller, queue, _host, _clock, rec = kit
    controller.start()
    a, b, c = PHOTOS
    found = Detection(("noisy",), {"noisy": 0.9})
    guard = GuardDecision(0.9, 1.0, "noisy")

    controller.on_event(event("started", a))
    assert queue.job(a).status == RUNNING
    controller.on_event(event("detected", a, detection=found, guard=guard))
    controller.on_event(event("progress", a, done=3, todo=4))
    assert (queue.job(a).tiles_done, queue.job(a).tiles_todo) == (3, 4)
    assert queue.job(a).detection == found and queue.job(a).guard == guard
    controller.on_event(event("done", a, output=Path("/out/a.png"), seconds=2.5))
    assert queue.job(a).status == DONE and queue.job(a).output == Path("/out/a.png")
    assert queue.job(a).detection == found  # a done event without a detection keeps the earlier one
    assert rec.logs[-1] == ("Restored a.png in 2.5 s → /out/a.png", False)

    controller.on_event(event("skipped", b, output=Path("/out/b.jpg"), detection=found))
    assert queue.job(b).status == SKIPPED and queue.job(b).detection == found
    assert rec.logs[-1] == ("Skipped b.jpg (already restored) → /out/b.jpg", False)
    controller.on_event(event("failed", c, error="c.png: corrupt", seconds=0.1))
    assert queue.job(c).status == FAILED and queue.job(c).error == "c.png: corrupt"
    assert rec.logs[-1] == ("Failed: c.png: corrupt", True)
    controller.on_event(event("cancelled", c))
    assert queue.job(c).status == CANCELLED
    assert rec.progress == 7  # every event asks the window to redraw the progress


def test_the_end_of_a_run_cancels_what_was_not_reached_and_keeps_earlier_results(kit):
    controller, queue, host, clock, rec = kit
    controller.start()
    a, b, c = PHOTOS
    controller.on_event(event("done", a, output=Path("/out/a.png"), seconds=1.0))
    controller.on_event(event("started", b))
    clock.now += 75
    skipped = FileResult(path=str(c), status="skipped", degradations=["hazy"], scores={"hazy": 0.7},
                         guard={"estimate": 0.7, "strength": 1.0, "name": "hazy"})
    host.worker.finished.emit([skipped])

    assert [queue.job(p).status for p in PHOTOS] == [DONE, CANCELLED, CANCELLED]
    assert queue.job(c).detection == Detection(("hazy",), {"hazy": 0.7})
    assert queue.job(c).guard == GuardDecision(0.7, 1.0, "hazy")
    assert rec.logs[-1] == ("Batch finished in 1:15: 2 cancelled, 1 done.", False)
    assert rec.statuses[-1] == "Finished: 2 cancelled, 1 done."
    assert rec.running == [True, False] and rec.finished == [[skipped]]
    assert not controller.running


def test_a_guard_from_another_version_is_ignored(kit):
    controller, queue, host, _clock, rec = kit
    controller.start()
    old = FileResult(path=str(PHOTOS[0]), status="skipped", guard={"estimate": 0.5, "unknown": 1})
    host.worker.finished.emit([old])
    assert queue.job(PHOTOS[0]).guard is None and rec.finished == [[old]]


def test_a_failed_run_marks_its_unfinished_photos(kit):
    controller, queue, host, _clock, rec = kit
    controller.start()
    controller.on_event(event("done", PHOTOS[0], output=Path("/out/a.png")))
    host.worker.failed.emit("the model did not load")
    assert [queue.job(p).status for p in PHOTOS] == [DONE, FAILED, FAILED]
    assert queue.job(PHOTOS[1]).error == "the model did not load"
    assert rec.logs[-1] == ("Batch stopped: the model did not load", True)
    assert rec.running == [True, False] and rec.finished == [[]]


def test_progress_counts_photos_and_estimates_the_time_left(kit):
    controller, _queue, host, clock, _rec = kit
    assert controller.progress() == Progress(0.0, 0.0)  # no run yet
    controller.start()
    assert controller.progress() == Progress(0.0, 0.0, "0/3 photos")  # no estimate before any progress
    a, b, _c = PHOTOS
    controller.on_event(event("done", a, output=Path("/out/a.png")))
    controller.on_event(event("started", b))
    controller.on_event(event("progress", b, done=1, todo=2))
    clock.now += 30
    p = controller.progress()
    assert p.overall == pytest.approx(0.5) and p.photo == pytest.approx(0.5)
    assert p.current is controller.queue.job(b)
    assert p.text == "1/3 photos · about 30.0 s left"  # 30 s for half the work: as long again
    host.worker.finished.emit([])
    assert controller.progress() == Progress(1.0, 1.0)  # the run ended: full bars, no text


def test_cancel_stops_the_batch_or_else_the_analysis(kit):
    controller, _queue, host, _clock, rec = kit
    controller.analyser = FakeAnalyser(active=True)
    controller.start()
    controller.cancel()
    assert host.cancelled == 1 and controller.analyser.cancels == 0
    assert rec.statuses[-1] == "Cancelling after the current tile…"
    host.worker.finished.emit([])
    assert controller.analysing
    controller.cancel()
    assert host.cancelled == 1 and controller.analyser.cancels == 1 and not controller.analysing
    assert rec.logs[-1][0].startswith("Analysis cancelled (2 photo(s) not analysed")
    controller.cancel()  # nothing left to stop
    assert host.cancelled == 1 and controller.analyser.cancels == 1


def test_tasks_keep_the_order_in_which_each_choice_first_appears(kit):
    _controller, queue, _host, _clock, _rec = kit
    queue.set_override(PHOTOS[0], ("rainy", "blurry"))
    tasks = tasks_for(queue.jobs, lambda override: override)
    assert [t.settings for t in tasks] == [("rainy", "blurry"), None]
    assert [len(t.inputs) for t in tasks] == [1, 2]


def test_format_seconds():
    assert [format_seconds(s) for s in (0, -1, 4.24, 59.9, 75, 3600)] == ["", "", "4.2 s", "59.9 s", "1:15",
                                                                          "60:00"]
