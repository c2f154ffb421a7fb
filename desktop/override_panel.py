"""The per-photo degradation override: checkable names from the vocabulary, and *Restore again*.

It works before *Start* too: the photos are analysed when they are queued, so the detected names
are checked (their probabilities in the tooltips) and can be changed before the first restoration.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.state import vocabulary

MAX_DEGRADATIONS = 2  # the restorer has two degradation slots


class OverridePanel(QWidget):
    """Checkable degradation names for the selected photo, *Use detected* and *Restore again*."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setFlow(QListView.Flow.LeftToRight)  # names in rows: two or three columns fit
        self.list.setWrapping(True)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        fm = self.list.fontMetrics()
        cell = QSize(max(fm.horizontalAdvance(n) for n in vocabulary()) + 2 * fm.height() + 8, fm.height() + 6)
        self.list.setGridSize(cell)  # room for the longest name beside its check box
        rows = -(-len(vocabulary()) // 2)  # two columns fit the narrowest left column
        self.list.setMinimumHeight(rows * cell.height() + 2 * self.list.frameWidth() + 4)
        for name in vocabulary():
            item = QListWidgetItem(name)
            item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            item.setCheckState(Qt.CheckState.Unchecked)
            self.list.addItem(item)
        self.list.setToolTip(f"What the selected photo suffers from: detected, or chosen by you (up to "
                             f"{MAX_DEGRADATIONS}). None checked = restore without a degradation prior.")
        self.detected_button = QPushButton("Use &detected")
        self.detected_button.setToolTip("Forget your choice and use what the model detected")
        self.restore_button = QPushButton("&Restore again")
        self.restore_button.setToolTip("Restore the selected photos again with these degradations")
        self.hint = QLabel(f"Detected ones are checked; choose up to {MAX_DEGRADATIONS}.")
        self.hint.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.detected_button)
        buttons.addWidget(self.restore_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.hint)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)

    def set_checked(self, names) -> None:
        names = set(names or ())
        self.list.blockSignals(True)
        for i in range(self.list.count()):
            item = self.list.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)
        self.list.blockSignals(False)

    def set_scores(self, scores: dict[str, float]) -> None:
        """Show each name's detected probability in its tooltip (empty: not analysed yet)."""
        self.list.blockSignals(True)  # a tooltip change is an itemChanged too, not a choice of the user
        for i in range(self.list.count()):
            item = self.list.item(i)
            score = scores.get(item.text())
            item.setToolTip(f"{item.text()}: detected with probability {score:.0%}" if score is not None else "")
        self.list.blockSignals(False)

    def checked(self) -> tuple[str, ...]:
        return tuple(
            self.list.item(i).text()
            for i in range(self.list.count())
            if self.list.item(i).checkState() == Qt.CheckState.Checked
        )
