"""The comparison view: split dragging, wheel zoom about the cursor, pan shared by both images."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from desktop.compare_view import ComparePanel
from desktop.state import Comparison
from tests.desktop.conftest import make_photo


@pytest.fixture
def panel(qtbot, tmp_path):
    before = make_photo(tmp_path / "before.png", (100, 200), 1)
    after = make_photo(tmp_path / "after.png", (100, 200), 2)
    comparison = Comparison()
    p = ComparePanel(comparison)
    qtbot.addWidget(p)
    p.resize(640, 420)
    p.show()
    qtbot.waitExposed(p)
    with qtbot.waitSignal(p.view.imagesLoaded):
        comparison.set_images(before, after)
    return p


def image_point_under(view, pos: QPointF, pane_index: int = 0) -> QPointF:
    pane = view.panes()[pane_index]
    z, c = view.effective_zoom(), view.effective_center()
    return QPointF(c.x() + (pos.x() - pane.center().x()) / z, c.y() + (pos.y() - pane.center().y()) / z)


def test_fit_shows_the_whole_image(panel):
    view = panel.view
    rect = view.image_rect(view.panes()[0])
    assert rect.width() <= view.width() + 0.5 and rect.height() <= view.height() + 0.5
    assert max(rect.width() / view.width(), rect.height() / view.height()) == pytest.approx(1.0)


def test_wheel_zoom_keeps_the_point_under_the_cursor(panel, qtbot):
    view = panel.view
    pos = QPointF(view.width() * 0.3, view.height() * 0.4)
    before = image_point_under(view, pos)
    z0 = view.effective_zoom()
    view.zoom_at(pos, 2.0)
    assert view.effective_zoom() == pytest.approx(2 * z0)
    after = image_point_under(view, pos)
    assert (after.x(), after.y()) == pytest.approx((before.x(), before.y()))


def test_drag_pans_both_images_together(panel, qtbot):
    view = panel.view
    panel.comparison.set_mode("side")
    view.zoom_at(QPointF(view.width() / 4, view.height() / 2), 3.0)
    left0 = view.image_rect(view.panes()[0])
    right0 = view.image_rect(view.panes()[1])
    start = QPoint(view.width() // 4, view.height() // 2)
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(view, start + QPoint(25, 10))
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=start + QPoint(25, 10))
    left1 = view.image_rect(view.panes()[0])
    right1 = view.image_rect(view.panes()[1])
    assert (left1.left() - left0.left(), left1.top() - left0.top()) == pytest.approx((25, 10), abs=0.01)
    assert (right1.left() - right0.left(), right1.top() - right0.top()) == pytest.approx((25, 10), abs=0.01)


def test_one_to_one_and_fit_buttons(panel, qtbot):
    view = panel.view
    qtbot.mouseClick(panel.one_button, Qt.MouseButton.LeftButton)
    assert view.effective_zoom() * view.devicePixelRatioF() == pytest.approx(1.0)
    qtbot.mouseClick(panel.fit_button, Qt.MouseButton.LeftButton)
    assert panel.comparison.zoom is None


def test_mode_buttons(panel, qtbot):
    qtbot.mouseClick(panel.side_button, Qt.MouseButton.LeftButton)
    assert panel.comparison.mode == "side" and len(panel.view.panes()) == 2
    qtbot.mouseClick(panel.split_button, Qt.MouseButton.LeftButton)
    assert panel.comparison.mode == "split" and len(panel.view.panes()) == 1


def test_a_newer_selection_wins_over_a_slow_older_one(qtbot, tmp_path):
    comparison = Comparison()
    p = ComparePanel(comparison)
    qtbot.addWidget(p)
    first = make_photo(tmp_path / "first.png", (30, 50), 4)
    second = make_photo(tmp_path / "second.png", (60, 20), 5)
    comparison.set_images(first, first)
    with qtbot.waitSignal(p.view.imagesLoaded):
        comparison.set_images(second, second)
    p.view.wait_loaded()
    qtbot.wait(50)
    assert p.view.before.size().toTuple() == (20, 60)
    assert "20×60" in p.caption.text()


def test_missing_after_image_is_drawn_as_a_placeholder(qtbot, tmp_path):
    comparison = Comparison()
    p = ComparePanel(comparison)
    qtbot.addWidget(p)
    with qtbot.waitSignal(p.view.imagesLoaded):
        comparison.set_images(make_photo(tmp_path / "x.png", (40, 40), 3), None)
    assert p.view.after.isNull() and not p.view.before.isNull()
    p.view.grab()  # paints without error


def test_toggle_shows_one_image_over_the_whole_view(panel, qtbot):
    view, comparison = panel.view, panel.comparison
    comparison.set_mode("side")
    qtbot.mouseClick(panel.toggle_button, Qt.MouseButton.LeftButton)
    assert (comparison.mode, comparison.showing) == ("toggle", "before") and len(view.panes()) == 1
    assert view.solo()[0] is view.before and "before" in panel.caption.text()
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Space)
    assert comparison.showing == "after" and view.solo()[0] is view.after and "after" in panel.caption.text()
    frame = view.grab().toImage()
    rect = view.image_rect(view.panes()[0])
    after_left = view.after.pixelColor(int(view.after.width() * 0.1), view.after.height() // 2)
    on_screen = frame.pixelColor(int(rect.left() + rect.width() * 0.1), int(rect.center().y()))
    assert abs(on_screen.red() - after_left.red()) < 40  # the after image, also left of the middle
    with qtbot.waitSignal(view.stepRequested, check_params_cb=lambda step: step == 1):
        qtbot.keyClick(view, Qt.Key.Key_Down)


def test_the_caption_follows_the_fit_zoom_when_resized(panel, qtbot):
    first = panel.caption.text()
    panel.resize(1280, 840)
    qtbot.waitUntil(lambda: panel.caption.text() != first)
    zoom = panel.view.effective_zoom() * panel.view.devicePixelRatioF()
    assert panel.caption.text().endswith(f"{zoom:.0%}")
