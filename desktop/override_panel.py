"""The per-photo degradation override: checkable names from the vocabulary, and *Restore again*."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QGroupBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.state import vocabulary

MAX_DEGRADATIONS = 2  # the restorer has two degradation slots


class OverridePanel(QGroupBox):
    """Checkable degradation names for the selected photo, and *Restore again*."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Degradations", parent)
        self.list = QListWidget()
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
        self.hint = QLabel(f"Choose up to {MAX_DEGRADATIONS}.")
        self.hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.hint)
        layout.addWidget(self.detected_button)
        layout.addWidget(self.restore_button)

    def set_checked(self, names) -> None:
        names = set(names or ())
        self.list.blockSignals(True)
        for i in range(self.list.count()):
            item = self.list.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)
        self.list.blockSignals(False)

    def checked(self) -> tuple[str, ...]:
        return tuple(
            self.list.item(i).text()
            for i in range(self.list.count())
            if self.list.item(i).checkState() == Qt.CheckState.Checked
        )
