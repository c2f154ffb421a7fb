"""The worker's list of photos waiting for analysis: queue order, the newest request, cancel."""

from __future__ import annotations

from pathlib import Path

from desktop.worker import AnalysisRequest, PendingAnalyses


def test_pending_analyses_keep_queue_order_and_the_newest_request():
    old, new = AnalysisRequest(None, "cpu"), AnalysisRequest(Path("/models/other"), "cpu")
    pending = PendingAnalyses()
    assert pending.put([Path("a"), Path("b")], old) == 2
    assert pending.put([Path("a"), Path("c")], new) == 1  # a stays first, with the new model
    assert len(pending) == 3
    assert pending.pop() == (Path("a"), new)
    pending.discard([Path("b")])
    assert pending.pop() == (Path("c"), new)
    assert pending.pop() is None
    pending.put([Path("d")], old)
    assert pending.clear() == [Path("d")] and len(pending) == 0


def test_the_worker_makes_the_jobs_checks_before_any_file(qtbot, photo_folder, tmp_path):
    from desktop.state import Settings
    from desktop.worker import BatchWorker, Task
    from tests.engine.inference.test_runtime import fake_restorer

    worker = BatchWorker(lambda model_dir, device: fake_restorer())
    failed, finished, events = [], [], []
    worker.failed.connect(failed.append)
    worker.finished.connect(finished.append)
    worker.event.connect(events.append)
    photo = photo_folder / "a.png"
    over_itself = Settings(output_dir=str(photo_folder), suffix="").batch_settings()
    worker.run([Task(((photo, photo_folder),), over_itself)])
    assert len(failed) == 1 and "would overwrite the input" in failed[0]
    assert not finished and not events
    worker.run([Task(((photo, photo_folder),), Settings(output_dir=str(tmp_path / "out")).batch_settings(tile=64))])
    assert [r.status for r in finished[0]] == ["done"] and (tmp_path / "out" / "a_restored.png").is_file()
