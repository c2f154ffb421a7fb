"""Drive the real main window: drop a folder, restore it, compare, cancel, restart, stay responsive.

No test here asserts a duration (a loaded machine can deschedule any thread): responsiveness is checked
by what happens (the batch runs off the GUI thread, the GUI's timers and queued events are served while
it runs) and the latency itself is printed as a figure (``tests/reliability/test_event_loop.py``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent

from desktop.queue_table import COL_DEGRADATIONS, COL_STATUS
from tests.reliability.conftest import record_figure

BATCH_TIMEOUT_MS = 120_000


def drop_paths(window, paths: list[Path]) -> None:
    """Hand the window a drag-enter then a drop carrying file URLs, as a file manager's drag does."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    enter.ignore()
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    window.dropEvent(drop)
    assert drop.isAccepted()


def run_to_end(qtbot, window) -> None:
    with qtbot.waitSignal(window.batchFinished, timeout=BATCH_TIMEOUT_MS):
        assert window.start()


def output_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` but the engine's skip-on-rerun manifest."""
    from engine.jobs.batch import MANIFEST_NAME

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


def test_dropped_folder_is_restored_and_compared(qtbot, make_window, photo_folder, tmp_path, store):
    out = tmp_path / "out"
    store.set(output_dir=str(out), recursive=True)
    window = make_window()
    drop_paths(window, [photo_folder])
    assert [j.path.name for j in window.queue.jobs] == ["a.png", "b.jpg", "c.png"]

    run_to_end(qtbot, window)

    model = window.table.queue_model
    for row, job in enumerate(window.queue.jobs):
        assert job.status == "done", job.error
        assert job.output is not None and job.output.is_file()
        assert job.output.parent.is_relative_to(out)
        assert model.index(row, COL_STATUS).data() == "done"
        assert job.detection is not None
        assert model.index(row, COL_DEGRADATIONS).data() == job.degradations_text() != ""
    assert len(output_files(out)) == 3
    assert (out / "sub").is_dir()  # the output mirrors the input tree

    window.table.selectRow(1)
    view = window.compare.view
    assert window.comparison.before == photo_folder / "b.jpg"
    assert window.comparison.after == window.queue.jobs[1].output
    expected = Image.open(photo_folder / "b.jpg").size
    qtbot.waitUntil(lambda: view.before.size().toTuple() == view.after.size().toTuple() == expected)

    x0 = view.split_x()
    shown = view.image_rect(view.panes()[0])
    target = int(shown.left() + shown.width() * 0.3)
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=QPoint(int(x0), view.height() // 2))
    qtbot.mouseMove(view, QPoint(target, view.height() // 2))
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=QPoint(target, view.height() // 2))
    assert window.comparison.split == pytest.approx(target / view.width(), abs=0.01)
    assert view.split_x() == pytest.approx(target, abs=1) and target < x0 - 10
    # the painted frame really differs on each side of the divider
    frame = view.grab().toImage()
    y = int(shown.top() + shown.height() * 0.25)  # away from the divider's round handle
    assert frame.pixelColor(target - 6, y) != frame.pixelColor(target + 6, y)


def test_cancel_stops_within_a_tile_and_leaves_no_partial_file(qtbot, make_window, photo_folder, tmp_path, store):
    out = tmp_path / "out"
    store.set(output_dir=str(out))
    window = make_window(slow=True)
    window.add_paths([photo_folder])
    assert window.start()
    qtbot.waitUntil(lambda: any(j.tiles_done >= 1 for j in window.queue.jobs), timeout=BATCH_TIMEOUT_MS)

    token = window.host.worker.cancel_token
    after_cancel: list[str] = []  # the kinds of the events the worker emits once Cancel is pressed

    def on_event(ev) -> None:  # runs in the worker thread, as the event is emitted
        if token.cancelled:
            after_cancel.append(ev.kind)

    window.host.worker.event.connect(on_event, Qt.ConnectionType.DirectConnection)
    started = time.perf_counter()
    with qtbot.waitSignal(window.batchFinished, timeout=10_000):
        window.cancel_action.trigger()
    record_figure("cancel_to_finished_ms", round((time.perf_counter() - started) * 1000))
    assert after_cancel.count("progress") <= 1, after_cancel  # the tile under way, then the batch stops
    assert not window.running
    statuses = [j.status for j in window.queue.jobs]
    assert "cancelled" in statuses and "running" not in statuses
    for f in output_files(out) if out.exists() else []:
        assert not f.name.startswith(".") and not f.name.endswith((".part", ".tmp")), f"partial file: {f}"
        with Image.open(f) as im:
            im.load()  # every file left is complete
    cancelled = [j for j in window.queue.jobs if j.status == "cancelled"]
    assert all(j.output is None for j in cancelled)


def test_settings_and_window_state_survive_a_restart(qtbot, make_window, store, private_config, tmp_path):
    from desktop.state import SettingsStore

    window = make_window()
    panel = window.settings_panel
    panel.output_edit.setText(str(tmp_path / "restored"))
    panel.output_edit.editingFinished.emit()
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData("Best"))
    panel.format_combo.setCurrentIndex(panel.format_combo.findData("png"))
    panel.tile_spin.setValue(256)
    panel.strength_spin.setValue(60)
    panel.recursive_check.setChecked(False)
    panel.keep_clean_check.setChecked(True)
    panel.overwrite_combo.setCurrentIndex(panel.overwrite_combo.findData("rename"))
    window.comparison.set_mode("side")
    window.resize(760, 560)  # within the offscreen screen (800 x 800)
    size = window.size().toTuple()
    window.close()

    again = make_window(store_=SettingsStore(private_config))
    s = again.store.settings
    assert (s.output_dir, s.preset, s.format, s.tile, s.recursive, s.overwrite, s.keep_clean) == (
        str(tmp_path / "restored"), "Best", "png", 256, False, "rename", True)
    assert s.batch_settings().keep_clean and again.settings_panel.keep_clean_check.isChecked()
    assert again.settings_panel.preset_combo.currentData() == "Best"
    assert again.settings_panel.tile_spin.value() == 256
    assert s.strength == 60 and s.batch_settings().strength == pytest.approx(0.6)
    assert again.settings_panel.strength_spin.value() == 60
    assert again.comparison.mode == "side"
    assert again.size().toTuple() == size == (760, 560)


def test_the_gui_thread_serves_events_while_a_batch_runs(qtbot, make_window, photo_folder, tmp_path, store):
    store.set(output_dir=str(tmp_path / "out"))
    window = make_window(slow=True)  # small tiles: many progress signals over a longer run
    window.add_paths([photo_folder])
    gui_thread = threading.get_ident()
    emitting_threads: set[int] = set()
    window.host.worker.event.connect(lambda _ev: emitting_threads.add(threading.get_ident()),
                                     Qt.ConnectionType.DirectConnection)
    gaps: list[float] = []
    last = [time.perf_counter()]
    shown: set[str] = set()
    mid_photo: list[str] = []  # ticks that came while a photo was part restored
    queued: list[bool] = []  # whether an event posted during the batch ran before its end

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now
        shown.add(window.eta_label.text())
        mid_photo.extend(j.path.name for j in window.queue.jobs if 0 < j.tiles_done < j.tiles_todo)

    posted: list[bool] = []

    def on_queue(_kind, _index) -> None:  # the queue's callbacks run in the GUI thread
        if window.running and not posted and any(j.tiles_done for j in window.queue.jobs):
            posted.append(True)
            QTimer.singleShot(0, lambda: queued.append(window.running))

    window.queue.subscribe(on_queue)
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(tick)
    timer.start()
    last[0] = time.perf_counter()
    started = time.perf_counter()
    run_to_end(qtbot, window)
    timer.stop()
    record_figure("gui_event_loop_during_batch", {"batch_s": round(time.perf_counter() - started, 2),
                                                  "ticks": len(gaps), "max_gap_ms": round(max(gaps) * 1000)})
    assert all(j.status == "done" for j in window.queue.jobs)
    assert len(gaps) >= 5
    assert any("left" in text and "/3 photos" in text for text in shown), shown  # overall progress + ETA
    assert emitting_threads and gui_thread not in emitting_threads  # the batch runs in the worker thread
    assert mid_photo, "the timer never fired while a photo was being restored"
    assert queued == [True]  # an event posted during the batch was processed before the batch ended


def test_override_degradations_and_restore_again(qtbot, make_window, photo_folder, tmp_path, store):
    store.set(output_dir=str(tmp_path / "out"))
    window = make_window()
    window.add_paths([photo_folder / "a.png"])
    run_to_end(qtbot, window)
    window.table.selectRow(0)
    job = window.queue.jobs[0]
    first_output = job.output

    items = {window.override.list.item(i).text(): window.override.list.item(i)
             for i in range(window.override.list.count())}
    for item in items.values():
        item.setCheckState(Qt.CheckState.Unchecked)
    items["blurry"].setCheckState(Qt.CheckState.Checked)
    assert job.override == ("blurry",)
    items["rainy"].setCheckState(Qt.CheckState.Checked)
    items["snowy"].setCheckState(Qt.CheckState.Checked)  # a third one is refused
    assert job.override == ("rainy", "blurry") or set(job.override) == {"rainy", "blurry"}
    assert window.table.queue_model.index(0, COL_DEGRADATIONS).data().endswith("(chosen)")

    with qtbot.waitSignal(window.batchFinished, timeout=BATCH_TIMEOUT_MS):
        assert window.restore_selected_again()
    assert job.status == "done"
    assert job.output == first_output and job.output.is_file()  # replaced, not renamed


def test_errors_show_on_their_row_and_in_the_log(qtbot, make_window, photo_folder, tmp_path, store):
    bad = photo_folder / "broken.png"
    bad.write_bytes(b"not a png")
    store.set(output_dir=str(tmp_path / "out"))
    window = make_window()
    window.add_paths([photo_folder])
    run_to_end(qtbot, window)
    job = window.queue.job(bad)
    assert job is not None
    assert job.status == "failed" and "broken.png" in job.error
    assert "broken.png" in window.log_view.toPlainText()
    assert sum(j.status == "done" for j in window.queue.jobs) == 3


def test_rerun_skips_finished_photos_and_keeps_their_degradations(qtbot, make_window, photo_folder, tmp_path,
                                                                  store):
    store.set(output_dir=str(tmp_path / "out"), overwrite="skip")
    window = make_window()
    window.add_paths([photo_folder])
    run_to_end(qtbot, window)
    first = {j.path: j.degradations_text() for j in window.queue.jobs}

    again = make_window()  # a fresh window: the queue knows nothing about the earlier run
    again.add_paths([photo_folder])
    run_to_end(qtbot, again)
    assert [j.status for j in again.queue.jobs] == ["skipped"] * 3
    assert {j.path: j.degradations_text() for j in again.queue.jobs} == first


def test_shortcuts_start_and_cancel(qtbot, make_window, photo_folder, tmp_path, store):
    store.set(output_dir=str(tmp_path / "out"))
    window = make_window(slow=True)
    window.add_paths([photo_folder])
    with qtbot.waitActive(window):  # window shortcuts fire in the active window only
        window.activateWindow()
    window.table.setFocus()
    with qtbot.waitSignal(window.batchFinished, timeout=BATCH_TIMEOUT_MS):
        qtbot.keyClick(window.table, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
        assert window.running
        qtbot.keyClick(window.table, Qt.Key.Key_Escape)
    assert "cancelled" in [j.status for j in window.queue.jobs]
    assert window.start_action.shortcut().toString() == "Ctrl+R"
    assert window.add_folder_action.shortcut().toString() == "Ctrl+Shift+O"
