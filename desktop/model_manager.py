"""The model manager: the bundled model by default, bundles added from disk, and each one's model card.

A model bundle is a folder holding a detector, a restorer and a model card (:mod:`engine.bundle`
knows the file names). Checking a folder is plain file inspection; the weights are only loaded by the
worker.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from desktop.state import SettingsStore
from engine.bundle import ModelBundle


def bundled_model_dir() -> Path | None:
    """The bundled model folder, or None when this installation has none."""
    folder = ModelBundle.bundled().path
    return folder if folder.is_dir() else None


def check_bundle(folder: Path) -> str:
    """An empty string when ``folder`` looks like a model bundle, else a one-line reason naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder}: not a folder"
    missing = ModelBundle(folder).absent_parts()
    if missing:
        return f"{folder}: not a model bundle (missing {', '.join(m + '.*' for m in missing)})"
    return ""


def model_card(folder: Path | None) -> str:
    """The bundle's model card (Markdown), or a short note when it has none."""
    if folder is None:
        return "No bundled model was found in this installation."
    bundle = ModelBundle(Path(folder))
    card = bundle.card()
    return card if card is not None else f"*No model card ({bundle.card_file.name}) in* `{folder}`."


class ModelManager(QDialog):
    """Lists the bundled model and the added bundles; *Use* sets ``settings.model_dir``."""

    def __init__(self, store: SettingsStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.store = store
        self.list = QListWidget()
        self.card = QTextBrowser()
        self.card.setOpenExternalLinks(True)
        self.add_button = QPushButton("&Add bundle…")
        self.remove_button = QPushButton("&Remove")
        self.use_button = QPushButton("&Use this model")
        self.add_button.clicked.connect(self.choose_bundle)
        self.remove_button.clicked.connect(self.remove_selected)
        self.use_button.clicked.connect(self.use_selected)
        self.list.currentItemChanged.connect(self._show_card)
        self.list.itemDoubleClicked.connect(lambda _item: self.use_selected())

        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.list, 1)
        row = QHBoxLayout()
        for b in (self.add_button, self.remove_button, self.use_button):
            row.addWidget(b)
        lv.addLayout(row)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.card)
        split.setStretchFactor(1, 2)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(split, 1)
        layout.addWidget(buttons)
        self.resize(820, 480)
        self.refresh()

    def refresh(self) -> None:
        s = self.store.settings
        self.list.clear()
        entries: list[tuple[str, str]] = [("", "Bundled model")]
        entries += [(m, Path(m).name or m) for m in s.models]
        for value, label in entries:
            active = value == s.model_dir
            item = QListWidgetItem(("✓ " if active else "   ") + label)
            item.setData(Qt.ItemDataRole.UserRole, value)
            item.setToolTip(value or str(bundled_model_dir() or ""))
            self.list.addItem(item)
            if active:
                self.list.setCurrentItem(item)

    def selected_value(self) -> str | None:
        item = self.list.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def _show_card(self, item: QListWidgetItem | None, _prev=None) -> None:
        if item is None:
            self.card.clear()
            return
        value = item.data(Qt.ItemDataRole.UserRole)
        self.remove_button.setEnabled(bool(value))
        self.card.setMarkdown(model_card(Path(value) if value else bundled_model_dir()))

    def add_bundle(self, folder: Path) -> str:
        """Add ``folder`` to the list (and select it); return an error message or ``""``."""
        problem = check_bundle(folder)
        if problem:
            return problem
        value = str(Path(folder).resolve())
        models = list(self.store.settings.models)
        if value not in models:
            models.append(value)
        self.store.set(models=models)
        self.refresh()
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == value:
                self.list.setCurrentRow(i)
        return ""

    def choose_bundle(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model bundle folder")
        if folder:
            problem = self.add_bundle(Path(folder))
            if problem:
                QMessageBox.warning(self, "Not a model bundle", problem)

    def remove_selected(self) -> None:
        value = self.selected_value()
        if not value:
            return
        s = self.store.settings
        changes: dict = {"models": [m for m in s.models if m != value]}
        if s.model_dir == value:
            changes["model_dir"] = ""
        self.store.set(**changes)
        self.refresh()

    def use_selected(self) -> None:
        value = self.selected_value()
        if value is not None:
            self.store.set(model_dir=value)
            self.refresh()
