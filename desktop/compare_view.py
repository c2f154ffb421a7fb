"""Before/after comparison: a draggable split, side by side, or one image toggled with Space; zoom
and pan are shared by both images.

:class:`CompareView` paints both images through one transform held in the plain
:class:`~desktop.state.Comparison` state, so zoom and pan stay in sync by construction. A photo
not restored yet is shown whole at once, labelled as such. Keys: Space toggles before/after, the
arrow keys ask for the previous or next photo of the queue (:attr:`CompareView.stepRequested`).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QPointF, QRectF, QRunnable, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QImage, QImageReader, QKeySequence, QPainter, QPalette, QPen
from PySide6.QtWidgets import (
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.state import Comparison

HANDLE_GRAB_PX = 8
BACKGROUND = QColor(48, 48, 48)  # a neutral dark grey around the photo, as photo viewers use
PLACEHOLDER = QColor(190, 190, 190)
WHEEL_STEP = 1.25


ALLOCATION_LIMIT_MB = 2048  # Qt's default (256 MB) refuses photos above about 64 MP


def load_qimage(path: Path | None) -> QImage:
    """Read ``path`` with EXIF orientation applied; a null image when missing or unreadable."""
    if path is None:
        return QImage()
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    image = reader.read()
    return image if not image.isNull() else QImage()


class _Loaded(QObject):
    ready = Signal(int, QImage, QImage)


class _LoadPair(QRunnable):
    """Decodes the before/after pair off the GUI thread (a 24 MP photo takes a noticeable time)."""

    def __init__(self, token: int, before: Path | None, after: Path | None, signals: _Loaded) -> None:
        super().__init__()
        self.token, self.before, self.after, self.signals = token, before, after, signals

    def run(self) -> None:
        self.signals.ready.emit(self.token, load_qimage(self.before), load_qimage(self.after))


class CompareView(QWidget):
    """Paints ``comparison.before`` and ``comparison.after``; the mouse drags the split, pans and zooms."""

    imagesLoaded = Signal()
    resized = Signal()  # the fit zoom changes with the size
    stepRequested = Signal(int)  # -1 / +1: the previous or next photo of the queue (arrow keys)

    def __init__(self, comparison: Comparison, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        QImageReader.setAllocationLimit(ALLOCATION_LIMIT_MB)
        self.comparison = comparison
        self.before = QImage()
        self.after = QImage()
        self.loading = False
        self._token = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._loaded = _Loaded()
        self._loaded.ready.connect(self._on_loaded)
        self._drag: str | None = None  # "split" | "pan"
        self._last = QPointF()
        self.setMouseTracking(True)
        self.setMinimumSize(240, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        comparison.subscribe(self._on_change)

    # ------------------------------------------------------------------ state

    def _on_change(self, what: str) -> None:
        if what == "images":
            self._token += 1
            self.loading = True
            self._pool.start(_LoadPair(self._token, self.comparison.before, self.comparison.after, self._loaded))
        self.update()

    def _on_loaded(self, token: int, before: QImage, after: QImage) -> None:
        if token != self._token:
            return  # the user picked another photo meanwhile
        self.before, self.after, self.loading = before, after, False
        self.update()
        self.imagesLoaded.emit()

    def wait_loaded(self, ms: int = 10000) -> bool:
        """Block until pending decodes finish (tests, screenshots); True when done."""
        return self._pool.waitForDone(ms)

    def sizeHint(self) -> QSize:
        return QSize(640, 480)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.resized.emit()

    def image_size(self) -> QSize:
        return self.before.size() if not self.before.isNull() else self.after.size()

    def solo(self) -> tuple[QImage, str] | None:
        """The one image shown over the whole view and its label, or None when both are shown."""
        if self.after.isNull() and not self.before.isNull():
            return self.before, "Before · not restored yet"
        if self.before.isNull() and not self.after.isNull():
            return self.after, "After"
        if self.comparison.mode == "toggle":
            showing = self.comparison.showing
            return (self.before, "Before") if showing == "before" else (self.after, "After")
        return None

    def panes(self) -> list[QRectF]:
        """One pane in split and toggle modes, two (before, after) side by side."""
        r = QRectF(self.rect())
        if self.comparison.mode == "side" and self.solo() is None:
            half = r.width() / 2
            return [QRectF(r.left(), r.top(), half - 1, r.height()), QRectF(r.left() + half + 1, r.top(), half - 1, r.height())]
        return [r]

    def effective_zoom(self) -> float:
        """Screen pixels per image pixel (the fit zoom when ``comparison.zoom`` is None)."""
        if self.comparison.zoom is not None:
            return self.comparison.zoom
        size = self.image_size()
        pane = self.panes()[0]
        if size.isEmpty() or pane.isEmpty():
            return 1.0
        return min(pane.width() / size.width(), pane.height() / size.height())

    def effective_center(self) -> QPointF:
        if self.comparison.center is not None:
            return QPointF(*self.comparison.center)
        size = self.image_size()
        return QPointF(size.width() / 2, size.height() / 2)

    def image_rect(self, pane: QRectF) -> QRectF:
        """Where the whole image lands on screen inside ``pane``."""
        z = self.effective_zoom()
        c = self.effective_center()
        size = self.image_size()
        left = pane.center().x() - c.x() * z
        top = pane.center().y() - c.y() * z
        return QRectF(left, top, size.width() * z, size.height() * z)

    def split_x(self) -> float:
        """The divider's x in widget pixels (split mode)."""
        return self.rect().width() * self.comparison.split

    # ------------------------------------------------------------------ painting

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        pal = self.palette()
        p.fillRect(self.rect(), BACKGROUND)
        if self.before.isNull() and self.after.isNull():
            p.setPen(PLACEHOLDER)
            text = "Loading…" if self.loading else "Drop photos or a folder here, or add them with Ctrl+O / Ctrl+Shift+O"
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, text)
            return
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.effective_zoom() < 2.0)
        panes = self.panes()
        solo = self.solo()
        if solo is not None:
            image, label = solo
            self._draw_image(p, panes[0], image)
            self._draw_label(p, self.image_rect(panes[0]).intersected(panes[0]), label, left=True)
            return
        if self.comparison.mode == "side":
            for pane, image, label in ((panes[0], self.before, "Before"), (panes[1], self.after, "After")):
                p.save()
                p.setClipRect(pane)
                self._draw_image(p, pane, image)
                self._draw_label(p, self.image_rect(pane).intersected(pane), label, left=True)
                p.restore()
            p.fillRect(QRectF(panes[0].right(), 0, 2, self.height()), pal.color(QPalette.ColorRole.Mid))
            return
        pane = panes[0]
        x = self.split_x()
        p.save()
        p.setClipRect(QRectF(pane.left(), pane.top(), x - pane.left(), pane.height()))
        self._draw_image(p, pane, self.before)
        p.restore()
        p.save()
        p.setClipRect(QRectF(x, pane.top(), pane.right() - x, pane.height()))
        self._draw_image(p, pane, self.after)
        p.restore()
        shown = self.image_rect(pane).intersected(pane)
        self._draw_label(p, shown, "Before", left=True)
        self._draw_label(p, shown, "After", left=False)
        pen = QPen(pal.color(QPalette.ColorRole.Highlight), 2)
        p.setPen(pen)
        p.drawLine(QPointF(x, shown.top()), QPointF(x, shown.bottom()))
        p.setBrush(pal.color(QPalette.ColorRole.Highlight))
        p.drawEllipse(QPointF(x, shown.center().y()), 7, 7)

    def _draw_image(self, p: QPainter, pane: QRectF, image: QImage) -> None:
        if image.isNull():
            p.setPen(PLACEHOLDER)
            p.drawText(pane, Qt.AlignmentFlag.AlignCenter, "Not restored yet")
            return
        p.drawImage(self.image_rect(pane), image, QRectF(image.rect()))

    def _draw_label(self, p: QPainter, pane: QRectF, text: str, left: bool) -> None:
        pal = self.palette()
        fm = p.fontMetrics()
        w, h = fm.horizontalAdvance(text) + 12, fm.height() + 6
        x = pane.left() + 8 if left else pane.right() - w - 8
        box = QRectF(x, pane.top() + 8, w, h)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(pal.color(QPalette.ColorRole.ToolTipBase))
        p.drawRoundedRect(box, 4, 4)
        p.setPen(pal.color(QPalette.ColorRole.ToolTipText))
        p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)

    # ------------------------------------------------------------------ interaction

    def _near_divider(self, pos: QPointF) -> bool:
        return self.comparison.mode == "split" and abs(pos.x() - self.split_x()) <= HANDLE_GRAB_PX

    def mousePressEvent(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        pos = event.position()
        self._drag = "split" if self._near_divider(pos) else "pan"
        self._last = pos
        if self._drag == "pan":
            self.setCursor(Qt.CursorShape.ClosedHandCursor)

    def mouseMoveEvent(self, event) -> None:
        pos = event.position()
        if self._drag == "split":
            self.comparison.set_split(pos.x() / max(1, self.width()))
        elif self._drag == "pan":
            self.pan_by(pos - self._last)
            self._last = pos
        else:
            shape = Qt.CursorShape.SplitHCursor if self._near_divider(pos) else Qt.CursorShape.OpenHandCursor
            self.setCursor(shape)

    def mouseReleaseEvent(self, _event) -> None:
        self._drag = None
        self.unsetCursor()

    def mouseDoubleClickEvent(self, _event) -> None:
        self.comparison.fit()

    def keyPressEvent(self, event) -> None:
        key = event.key()
        if key == Qt.Key.Key_Space and not event.modifiers():
            self.comparison.toggle_before_after()
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Up):
            self.stepRequested.emit(-1)
        elif key in (Qt.Key.Key_Right, Qt.Key.Key_Down):
            self.stepRequested.emit(1)
        else:
            super().keyPressEvent(event)

    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom_at(event.position(), WHEEL_STEP**steps)

    def pan_by(self, delta: QPointF) -> None:
        """Move the picture by ``delta`` screen pixels (both images)."""
        z = self.effective_zoom()
        c = self.effective_center()
        self.comparison.set_view(z, (c.x() - delta.x() / z, c.y() - delta.y() / z))

    def zoom_at(self, pos: QPointF, factor: float) -> None:
        """Zoom by ``factor`` keeping the image point under ``pos`` fixed."""
        pane = next((q for q in self.panes() if q.contains(pos)), self.panes()[0])
        z = self.effective_zoom()
        c = self.effective_center()
        # image point under the cursor: c + (pos - pane centre) / z
        under = QPointF(c.x() + (pos.x() - pane.center().x()) / z, c.y() + (pos.y() - pane.center().y()) / z)
        nz = min(32.0, max(0.02, z * factor))
        nc = (under.x() - (pos.x() - pane.center().x()) / nz, under.y() - (pos.y() - pane.center().y()) / nz)
        self.comparison.set_view(nz, nc)

    def actual_size(self) -> None:
        """1:1: one image pixel per physical screen pixel (high-DPI aware)."""
        c = self.effective_center()
        self.comparison.set_view(1.0 / self.devicePixelRatioF(), (c.x(), c.y()))


class ComparePanel(QWidget):
    """The comparison view with its toolbar: split / side by side / before-after toggle, fit, 1:1."""

    def __init__(self, comparison: Comparison, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.comparison = comparison
        self.view = CompareView(comparison, self)
        self.split_button = self._tool("Split", "Before and after in one image with a draggable divider", True)
        self.side_button = self._tool("Side by side", "Before and after next to each other", True)
        self.toggle_button = self._tool("Before/After", "One image over the whole view; Space switches", True)
        group = QButtonGroup(self)
        group.addButton(self.split_button)
        group.addButton(self.side_button)
        group.addButton(self.toggle_button)
        self.fit_button = self._tool("Fit", "Fit the photo in the view (double-click)")
        self.fit_button.setShortcut(QKeySequence("Ctrl+0"))
        self.one_button = self._tool("1:1", "One image pixel per screen pixel")
        self.one_button.setShortcut(QKeySequence("Ctrl+1"))
        self.caption = QLabel()
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.split_button.clicked.connect(lambda: comparison.set_mode("split"))
        self.side_button.clicked.connect(lambda: comparison.set_mode("side"))
        self.toggle_button.clicked.connect(comparison.toggle_before_after)
        self.fit_button.clicked.connect(comparison.fit)
        self.one_button.clicked.connect(self.view.actual_size)

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        for w in (self.split_button, self.side_button, self.toggle_button, self.fit_button, self.one_button):
            bar.addWidget(w)
        bar.addSpacing(8)
        bar.addWidget(self.caption, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)
        comparison.subscribe(self._on_change)
        self.view.imagesLoaded.connect(lambda: self._on_change("images"))
        self.view.resized.connect(lambda: self._on_change("view"))
        self._on_change("mode")

    def _tool(self, text: str, tip: str, checkable: bool = False) -> QToolButton:
        b = QToolButton(self)
        b.setText(text)
        b.setToolTip(tip)
        b.setCheckable(checkable)
        b.setAutoRaise(True)
        return b

    def _on_change(self, what: str) -> None:
        if what in ("mode", "images"):
            self.split_button.setChecked(self.comparison.mode == "split")
            self.side_button.setChecked(self.comparison.mode == "side")
            self.toggle_button.setChecked(self.comparison.mode == "toggle")
        if what in ("images", "view", "mode"):
            size = self.view.image_size()
            zoom = self.view.effective_zoom() * self.view.devicePixelRatioF()
            name = self.comparison.before.name if self.comparison.before else ""
            dims = f"{size.width()}×{size.height()}" if not size.isEmpty() else ""
            solo = self.view.solo()
            shown = f"  · {solo[1].lower()}" if solo is not None else ""
            self.caption.setText(f"{name}  {dims}  {zoom:.0%}{shown}" if name else "")
