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
