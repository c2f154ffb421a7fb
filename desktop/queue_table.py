"""The queue table: thumbnail, file name, status, detected degradations, time taken and error.

:class:`QueueModel` adapts the plain :class:`~desktop.state.JobQueue` to Qt's model/view; thumbnails
are decoded off the GUI thread by a small QThreadPool so a folder of large photos never freezes it.
The table is narrow (beside the comparison), so *Time* and *Error* start hidden: a failed row is red
with its error in the tooltip, and a right click on the header shows any column.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QRunnable,
    QSize,
    Qt,
    QThreadPool,
    Signal,
)
from PySide6.QtGui import QAction, QBrush, QColor, QImage, QImageReader, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QMenu, QTableView, QWidget

from desktop.controller import format_seconds
from desktop.state import FAILED, RUNNING, Job, JobQueue

THUMB = 48
COLUMNS = ("", "File", "Status", "Degradations", "Helps", "Time", "Error")
COL_THUMB, COL_FILE, COL_STATUS, COL_DEGRADATIONS, COL_GUARD, COL_TIME, COL_ERROR = range(len(COLUMNS))
HEADER_TIPS = {COL_GUARD: "How likely restoring helps (the do-no-harm guard's estimate);\n"
                          "where help is unlikely, the restoration is applied less or not at all"}
HIDDEN_BY_DEFAULT = (COL_TIME, COL_ERROR)
FAILED_COLOR = QColor(200, 40, 40)


class _ThumbSignals(QObject):
    ready = Signal(object, QImage)


class _ThumbTask(QRunnable):
    def __init__(self, path: Path, signals: _ThumbSignals, size: int) -> None:
        super().__init__()
        self.path, self.signals, self.size = path, signals, size

    def run(self) -> None:
        reader = QImageReader(str(self.path))
        reader.setAutoTransform(True)
        s = reader.size()
        if s.isValid() and not s.isEmpty():
            reader.setScaledSize(s.scaled(self.size, self.size, Qt.AspectRatioMode.KeepAspectRatio))
        image = reader.read()
        self.signals.ready.emit(self.path, image)


class ThumbnailCache(QObject):
    """Decodes thumbnails in a thread pool; ``changed(path)`` fires when one is ready."""

    changed = Signal(object)

    def __init__(self, size: int = 2 * THUMB, parent: QObject | None = None) -> None:
        # decoded at twice the cell size so that thumbnails stay sharp on high-DPI screens
        super().__init__(parent)
        self.size = size
        self._pixmaps: dict[Path, QPixmap] = {}
        self._asked: set[Path] = set()
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)  # leave the cores to the restorer
        self._signals = _ThumbSignals()
        self._signals.ready.connect(self._on_ready)

    def get(self, path: Path) -> QPixmap | None:
        pm = self._pixmaps.get(path)
        if pm is None and path not in self._asked:
            self._asked.add(path)
            self._pool.start(_ThumbTask(path, self._signals, self.size))
        return pm

    def _on_ready(self, path: Path, image: QImage) -> None:
        if not image.isNull():
            self._pixmaps[path] = QPixmap.fromImage(image)
            self.changed.emit(path)

    def wait(self, ms: int = 5000) -> bool:
        return self._pool.waitForDone(ms)


class QueueModel(QAbstractTableModel):
    """Read-only table model over a :class:`JobQueue` (subscribes to it)."""

    def __init__(self, queue: JobQueue, thumbs: ThumbnailCache | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.queue = queue
        self.thumbs = thumbs or ThumbnailCache(parent=self)
        self.thumbs.changed.connect(self._on_thumb)
        queue.subscribe(self._on_queue)

    def _on_queue(self, kind: str, index: int) -> None:
        if kind == "reset" or index < 0:
            self.beginResetModel()
            self.endResetModel()
        else:
            self.dataChanged.emit(self.index(index, 0), self.index(index, len(COLUMNS) - 1))

    def _on_thumb(self, path: Path) -> None:
        i = self.queue.index_of(path)
        if i >= 0:
            self.dataChanged.emit(self.index(i, COL_THUMB), self.index(i, COL_THUMB))

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self.queue)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return HEADER_TIPS.get(section)
        return None

    def job_at(self, row: int) -> Job:
        return self.queue.jobs[row]

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self.queue):
            return None
        job = self.queue.jobs[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DecorationRole and col == COL_THUMB:
            return self.thumbs.get(job.path)
        if role == Qt.ItemDataRole.DisplayRole:
            return self.display_text(job, col)
        if role == Qt.ItemDataRole.ForegroundRole and job.status == FAILED and col in (COL_STATUS, COL_ERROR):
            return QBrush(FAILED_COLOR)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == COL_FILE:
                return str(job.path) + (f"\n→ {job.output}" if job.output else "")
            if col in (COL_ERROR, COL_STATUS) and job.error:
                return job.error
            if col == COL_STATUS and job.seconds > 0:
                return f"{job.status} in {format_seconds(job.seconds)}"
            if col == COL_GUARD and job.guard is not None and job.override is None:
                return job.guard.describe() + "\n" + HEADER_TIPS[COL_GUARD]
            if col == COL_DEGRADATIONS and job.detection is not None:
                scores = sorted(job.detection.scores.items(), key=lambda kv: -kv[1])
                return "\n".join(f"{k}: {v:.1%}" for k, v in scores[:6]) or None
        if role == Qt.ItemDataRole.UserRole:
            return str(job.path)
        return None

    @staticmethod
    def display_text(job: Job, col: int) -> str:
        if col == COL_FILE:
            return job.path.name
        if col == COL_STATUS:
            if job.status == RUNNING and job.tiles_todo:
                return f"running {job.fraction:.0%}"
            return job.status
        if col == COL_DEGRADATIONS:
            return job.degradations_text()
        if col == COL_GUARD:
            return job.guard_text()
        if col == COL_TIME:
            return format_seconds(job.seconds)
        if col == COL_ERROR:
            return job.error if job.status == FAILED or job.error else ""
        return ""


class QueueTable(QTableView):
    """The queue as a table with thumbnails; selection drives the comparison view.

    Up/Down (and Left/Right) move through the queue; Space emits :attr:`toggleRequested`.
    """

    toggleRequested = Signal()

    def __init__(self, queue: JobQueue, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.queue_model = QueueModel(queue, parent=self)
        self.setModel(self.queue_model)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setIconSize(QSize(THUMB, THUMB))
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(THUMB + 6)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        h = self.horizontalHeader()
        h.setSectionResizeMode(COL_THUMB, QHeaderView.ResizeMode.Fixed)
        self.setColumnWidth(COL_THUMB, THUMB + 8)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a long name keeps its start and its extension
        for col, width in ((COL_FILE, 92), (COL_STATUS, 62), (COL_DEGRADATIONS, 150), (COL_GUARD, 48),
                           (COL_TIME, 60)):
            self.setColumnWidth(col, width)
        for col in HIDDEN_BY_DEFAULT:
            self.setColumnHidden(col, True)
        h.setSectionResizeMode(COL_DEGRADATIONS, QHeaderView.ResizeMode.Stretch)
        h.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        h.customContextMenuRequested.connect(self._header_menu)

    def _header_menu(self, pos) -> None:
        menu = QMenu(self)
        for col in range(1, len(COLUMNS)):
            act = QAction(COLUMNS[col], menu)
            act.setCheckable(True)
            act.setChecked(not self.isColumnHidden(col))
            act.toggled.connect(lambda on, c=col: self.setColumnHidden(c, not on))
            menu.addAction(act)
        menu.exec(self.horizontalHeader().mapToGlobal(pos))

    def step(self, delta: int) -> None:
        """Make the row ``delta`` away from the current one current (and selected)."""
        rows = self.model().rowCount()
        if not rows:
            return
        row = self.currentIndex().row()
        self.selectRow(min(rows - 1, max(0, (row if row >= 0 else -delta) + delta)))

    def keyPressEvent(self, event) -> None:
        key, plain = event.key(), not event.modifiers()
        if key == Qt.Key.Key_Space and plain:
            self.toggleRequested.emit()
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Right) and plain:
            self.step(-1 if key == Qt.Key.Key_Left else 1)
        else:
            super().keyPressEvent(event)

    def selected_rows(self) -> list[int]:
        return sorted({i.row() for i in self.selectionModel().selectedRows()})

    def current_job(self) -> Job | None:
        idx = self.currentIndex()
        if not idx.isValid() or idx.row() >= len(self.queue_model.queue):
            return None
        return self.queue_model.job_at(idx.row())
