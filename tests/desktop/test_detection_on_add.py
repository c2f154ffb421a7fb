"""Queued photos are analysed at once: detections before Start, reused by Start, cancellable; the
comparison shows the input at once; the photo gets most of the window; arrows and Space."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import Qt

from desktop.compare_view import BACKGROUND
from desktop.queue_table import COL_DEGRADATIONS, COL_GUARD

BATCH_TIMEOUT_MS = 120_000


class CountingFactory:
    """Builds the tiny-bundle restorer and counts (and may slow down) its detector's full analyses."""

    def __init__(self, bundle, delay: float = 0.0):
        self.bundle, self.delay, self.analyses = bundle, delay, 0
        self.release = threading.Event()  # with a delay: set it to let every analysis finish at once
        self.lock = threading.Lock()

    def __call__(self, model_dir, device):
        from engine.inference.runtime import Restorer

        restorer = Restorer(self.bundle, "cpu")
        analyze = restorer.detector.analyze

        def counted(image):
            with self.lock:
                self.analyses += 1
            self.release.wait(self.delay)
            return analyze(image)

        restorer.detector.analyze = counted
        return restorer


@pytest.fixture
def window_with(qtbot, store, tmp_path):
    """``window_with(factory)`` -> a shown MainWindow restoring into ``tmp_path/out``."""
    from desktop.main_window import MainWindow

    store.set(output_dir=str(tmp_path / "out"), recursive=True)
    windows = []

    def make(factory):
        w = MainWindow(store, restorer_factory=factory, devices=["auto", "cpu"])
        qtbot.addWidget(w)
        w.show()
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.close()


def row_text(window, row: int) -> str:
    return window.table.queue_model.index(row, COL_DEGRADATIONS).data() or ""


def analysed(window, row: int) -> bool:
    return row_text(window, row) not in ("", "analysing…")


def test_queued_photos_show_their_detections_before_start(qtbot, window_with, tiny_bundle, photo_folder):
    factory = CountingFactory(tiny_bundle)
    window = window_with(factory)
    order = []
    window.host.worker.analysing.connect(order.append)
    window.add_paths([photo_folder])
    for row in range(3):
        qtbot.waitUntil(lambda row=row: analysed(window, row), timeout=BATCH_TIMEOUT_MS)

    assert order == [j.path for j in window.queue.jobs]  # in queue order
    for row, job in enumerate(window.queue.jobs):
        assert job.status == "pending" and job.detection is not None
        assert row_text(window, row) == job.degradations_text()
        for name in job.detection.degradations:  # each detected name with its probability
            assert f"{name} {job.detection.scores[name]:.0%}" in row_text(window, row)
        # and the do-no-harm estimate, how likely restoring helps
        assert job.guard is not None
        helps = window.table.queue_model.index(row, COL_GUARD).data()
        assert helps == job.guard_text() and helps in ("kept", f"{job.guard.estimate:.0%}")
    assert factory.analyses == 3
    # the override panel already shows the selected photo's detection
    first = window.queue.jobs[0]
    assert window.table.current_job() is first
    assert set(window.override.checked()) == set(first.detection.degradations)
    assert all(j.override is None for j in window.queue.jobs)  # showing a detection is not a choice
    assert "Analysis finished: 3 of 3" in window.log_view.toPlainText()

    with qtbot.waitSignal(window.batchFinished, timeout=BATCH_TIMEOUT_MS):
        assert window.start()
    assert [j.status for j in window.queue.jobs] == ["done"] * 3
    assert factory.analyses == 3  # Start reused the analyses instead of detecting again


def test_the_override_panel_works_before_start(qtbot, window_with, tiny_bundle, photo_folder):
    window = window_with(CountingFactory(tiny_bundle))
    window.add_paths([photo_folder / "a.png"])
    qtbot.waitUntil(lambda: analysed(window, 0), timeout=BATCH_TIMEOUT_MS)
    items = {window.override.list.item(i).text(): window.override.list.item(i)
             for i in range(window.override.list.count())}
    for item in items.values():
        item.setCheckState(Qt.CheckState.Unchecked)
    items["hazy"].setCheckState(Qt.CheckState.Checked)
    job = window.queue.jobs[0]
    assert job.override == ("hazy",) and row_text(window, 0) == "hazy (chosen)"
    assert window.table.queue_model.index(0, COL_GUARD).data() == ""  # chosen names are not guarded

    with qtbot.waitSignal(window.batchFinished, timeout=BATCH_TIMEOUT_MS):
        assert window.start()
    assert job.status == "done" and job.output.is_file()
    assert job.detection.degradations == ("hazy",)  # the batch restored with the chosen name


def test_analysis_is_cancellable_and_start_detects_the_rest(qtbot, window_with, tiny_bundle, photo_folder):
    factory = CountingFactory(tiny_bundle, delay=30.0)  # each analysis waits until released
    window = window_with(factory)
    window.add_paths([photo_folder])
    qtbot.waitUntil(lambda: window.queue.jobs[0].analysing, timeout=BATCH_TIMEOUT_MS)
    assert row_text(window, 0) == "analysing…" and window.cancel_action.isEnabled()
    window.cancel_action.trigger()  # Esc: the photos not started are dropped
    with qtbot.waitSignal(window.analysisFinished, timeout=BATCH_TIMEOUT_MS):
        factory.release.set()
    assert analysed(window, 0) and not analysed(window, 1) and not analysed(window, 2)
    assert factory.analyses == 1 and not window.cancel_action.isEnabled()
    assert "Analysis cancelled (2 photo(s)" in window.log_view.toPlainText()

    with qtbot.waitSignal(window.batchFinished, timeout=BATCH_TIMEOUT_MS):
        assert window.start()
    assert [j.status for j in window.queue.jobs] == ["done"] * 3
    assert factory.analyses == 3 and all(analysed(window, r) for r in range(3))


def test_removed_photos_are_not_analysed_and_a_batch_goes_first(qtbot, window_with, tiny_bundle, photo_folder):
    factory = CountingFactory(tiny_bundle, delay=30.0)
    window = window_with(factory)
    window.add_paths([photo_folder])
    qtbot.waitUntil(lambda: window.queue.jobs[0].analysing, timeout=BATCH_TIMEOUT_MS)
    window.table.selectRow(2)
    window.remove_selected()
    assert [j.path.name for j in window.queue.jobs] == ["a.png", "b.jpg"]
    window.table.selectRow(0)
    with qtbot.waitSignal(window.batchFinished, timeout=BATCH_TIMEOUT_MS):
        assert window.restore_selected_again()  # only a.png: b.jpg waits for its analysis
        factory.release.set()
    assert window.queue.jobs[0].status == "done"
    qtbot.waitUntil(lambda: analysed(window, 1), timeout=BATCH_TIMEOUT_MS)  # analysed after the batch
    assert window.queue.jobs[1].status == "pending"
    assert factory.analyses == 2  # a.png once (reused by the batch), b.jpg once; c.png never


def test_the_comparison_shows_the_selected_input_at_once(qtbot, window_with, tiny_bundle, photo_folder):
    factory = CountingFactory(tiny_bundle, delay=30.0)  # nothing analysed or restored meanwhile
    window = window_with(factory)
    window.resize(900, 600)
    window.add_paths([photo_folder])
    view = window.compare.view
    assert window.comparison.before == photo_folder / "a.png" and window.comparison.after is None
    qtbot.waitUntil(lambda: not view.before.isNull(), timeout=10_000)
    assert view.solo()[1] == "Before · not restored yet"
    shown = view.image_rect(view.panes()[0])
    frame = view.grab().toImage()
    y = int(shown.center().y())
    for fx in (0.2, 0.8):  # the photo on both sides of where a divider would be, not a placeholder
        assert frame.pixelColor(int(shown.left() + shown.width() * fx), y) != BACKGROUND
    window.table.selectRow(1)
    assert window.comparison.before == photo_folder / "b.jpg"
    window.host.cancel_analysis()
    factory.release.set()


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)])
def test_the_photo_gets_most_of_the_window(qtbot, window_with, tiny_bundle, size):
    window = window_with(CountingFactory(tiny_bundle))
    window.resize(*size)
    qtbot.waitUntil(lambda: window.size().toTuple() == size)
    qtbot.wait(50)
    view = window.compare.view
    share = view.width() * view.height() / (size[0] * size[1])
    print(f"{size[0]}x{size[1]}: comparison {view.width()}x{view.height()} = {share:.0%} of the window")
    assert share > 0.55, f"the comparison gets {share:.0%} of a {size[0]}x{size[1]} window"
    assert not window.log_view.isVisible()  # the log is a tab, not shown by default
    assert not window.settings_panel.more_box.isVisible()  # rarely changed settings are collapsed
    window.settings_panel.more_button.click()
    assert window.settings_panel.more_box.isVisible()
    window.log_action.trigger()
    assert window.log_view.isVisible()


def test_arrow_keys_move_through_the_queue_and_space_toggles(qtbot, window_with, tiny_bundle, photo_folder):
    window = window_with(CountingFactory(tiny_bundle))
    window.add_paths([photo_folder])
    with qtbot.waitActive(window):
        window.activateWindow()
    view = window.compare.view
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Down)
    assert window.table.currentIndex().row() == 1 and window.comparison.before == photo_folder / "b.jpg"
    qtbot.keyClick(view, Qt.Key.Key_Right)
    qtbot.keyClick(view, Qt.Key.Key_Right)  # stays on the last row
    assert window.table.currentIndex().row() == 2
    qtbot.keyClick(view, Qt.Key.Key_Up)
    assert window.table.currentIndex().row() == 1
    qtbot.keyClick(window.table, Qt.Key.Key_Down)  # the table's own arrows
    assert window.table.currentIndex().row() == 2

    assert window.comparison.mode == "split"
    qtbot.keyClick(view, Qt.Key.Key_Space)
    assert (window.comparison.mode, window.comparison.showing) == ("toggle", "before")
    qtbot.keyClick(window.table, Qt.Key.Key_Space)
    assert window.comparison.showing == "after" and window.compare.toggle_button.isChecked()
    window.compare.split_button.click()
    assert window.comparison.mode == "split"
    qtbot.waitUntil(lambda: not window.analysing, timeout=BATCH_TIMEOUT_MS)


def test_another_model_analyses_the_pending_photos_again(qtbot, window_with, tiny_bundle, photo_folder, tmp_path):
    import shutil

    factory = CountingFactory(tiny_bundle)
    window = window_with(factory)
    window.add_paths([photo_folder / "a.png"])
    qtbot.waitUntil(lambda: analysed(window, 0), timeout=BATCH_TIMEOUT_MS)
    other = shutil.copytree(tiny_bundle, tmp_path / "other")
    with qtbot.waitSignal(window.analysisFinished, timeout=BATCH_TIMEOUT_MS):
        window.store.set(model_dir=str(other))
    assert factory.analyses == 2 and analysed(window, 0)
