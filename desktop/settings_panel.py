"""The settings form: output folder and naming, format, device, quality preset, tiles, scan and overwrite.

What is changed often (output folder, quality, strength) is always shown; the rest sits in a
*More settings* section, collapsed by default. Every edit goes straight into the
:class:`~desktop.state.SettingsStore` (which saves it); the form subscribes back so a change made
elsewhere (the model manager) shows here too.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.state import FORMATS, PRESETS, Settings, SettingsStore
from engine.jobs.events import OVERWRITE_POLICIES

PRESET_TIPS = {name: f"{steps} SDE step{'s' if steps > 1 else ''}" for name, steps in PRESETS.items()}
OVERWRITE_LABELS = {
    "skip": "Skip photos already restored",
    "overwrite": "Overwrite existing outputs",
    "rename": "Keep both (rename new)",
}


def _row(layout: QHBoxLayout, focus: QWidget) -> QWidget:
    """A form field made of several widgets; its label's mnemonic focuses ``focus``."""
    layout.setContentsMargins(0, 0, 0, 0)
    holder = QWidget()
    holder.setLayout(layout)
    holder.setFocusProxy(focus)
    return holder


class SettingsPanel(QWidget):
    """Edits a :class:`SettingsStore`. ``devices`` are the names offered (``auto``, ``cpu``, ``cuda:0``...)."""

    manageModelsRequested = Signal()

    def __init__(self, store: SettingsStore, devices: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self._updating = False

        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("Choose where restored photos go")
        self.output_button = QPushButton("Browse…")
        self.output_button.clicked.connect(self.choose_output_dir)
        out_row = QHBoxLayout()
        out_row.addWidget(self.output_edit, 1)
        out_row.addWidget(self.output_button)

        self.naming_combo = QComboBox()
        self.naming_combo.addItem("Add a suffix to the name", "suffix")
        self.naming_combo.addItem("Put in a subfolder", "subfolder")
        self.suffix_edit = QLineEdit()
        self.subfolder_edit = QLineEdit()
        naming_row = QHBoxLayout()
        naming_row.addWidget(self.naming_combo)
        naming_row.addWidget(self.suffix_edit)
        naming_row.addWidget(self.subfolder_edit)

        self.format_combo = QComboBox()
        for fmt in FORMATS:
            self.format_combo.addItem("Same as input" if fmt == "same" else fmt.upper(), fmt)
        self.quality_spin = QSpinBox()
        self.quality_spin.setRange(1, 100)
        self.quality_spin.setPrefix("quality ")
        fmt_row = QHBoxLayout()
        fmt_row.addWidget(self.format_combo)
        fmt_row.addWidget(self.quality_spin)

        self.device_combo = QComboBox()
        for name in devices:
            label = {"auto": "Automatic", "cpu": "CPU"}.get(name, name.upper() if name == "mps" else name)
            self.device_combo.addItem(label, name)

        self.preset_combo = QComboBox()
        for name in PRESETS:
            self.preset_combo.addItem(f"{name} ({PRESET_TIPS[name]})", name)

        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSpecialValueText("Automatic")
        self.tile_spin.setSuffix(" px")

        self.strength_spin = QSpinBox()
        self.strength_spin.setRange(0, 100)
        self.strength_spin.setSingleStep(10)
        self.strength_spin.setSuffix(" %")
        self.strength_spin.setToolTip("How much of the restoration is applied: 100 % is all of it;\n"
                                      "lower values mix the restored photo with the original")

        self.recursive_check = QCheckBox("Include subfolders")
        self.keep_clean_check = QCheckBox("Keep unchanged")
        self.keep_clean_check.setToolTip("Photos in which nothing is detected are written as they are,\n"
                                         "without going through the restorer")
        self.overwrite_combo = QComboBox()
        for policy in OVERWRITE_POLICIES:
            self.overwrite_combo.addItem(OVERWRITE_LABELS[policy], policy)

        self.model_label = QLineEdit()
        self.model_label.setReadOnly(True)
        self.model_button = QPushButton("Models…")
        self.model_button.clicked.connect(self.manageModelsRequested)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_label, 1)
        model_row.addWidget(self.model_button)

        basic = QFormLayout()
        basic.setContentsMargins(0, 0, 0, 0)
        basic.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        basic.addRow("&Output folder", _row(out_row, self.output_edit))
        basic.addRow("&Quality", self.preset_combo)
        basic.addRow("St&rength", self.strength_spin)

        self.more_button = QToolButton()
        self.more_button.setText("More settings")
        self.more_button.setToolTip("Naming, format, device, tile size, subfolders, existing outputs, model")
        self.more_button.setCheckable(True)
        self.more_button.setAutoRaise(True)
        self.more_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.more_button.toggled.connect(self.set_expanded)
        self.more_box = QWidget()
        more = QFormLayout(self.more_box)
        more.setContentsMargins(0, 0, 0, 0)
        more.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        more.addRow("&Naming", _row(naming_row, self.naming_combo))
        more.addRow("&Format", _row(fmt_row, self.format_combo))
        more.addRow("&Device", self.device_combo)
        more.addRow("&Tile size", self.tile_spin)
        more.addRow("&Scan", self.recursive_check)
        more.addRow("&Existing", self.overwrite_combo)
        more.addRow("C&lean photos", self.keep_clean_check)
        more.addRow("&Model", _row(model_row, self.model_button))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.setSpacing(2)
        layout.addLayout(basic)
        layout.addWidget(self.more_button)
        layout.addWidget(self.more_box)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.set_expanded(False)

        self.show_settings(store.settings)
        self.output_edit.editingFinished.connect(lambda: self._set(output_dir=self.output_edit.text().strip()))
        self.naming_combo.currentIndexChanged.connect(lambda: self._set(naming=self.naming_combo.currentData()))
        self.suffix_edit.editingFinished.connect(lambda: self._set(suffix=self.suffix_edit.text()))
        self.subfolder_edit.editingFinished.connect(
            lambda: self._set(subfolder=self.subfolder_edit.text().strip() or "restored")
        )
        self.format_combo.currentIndexChanged.connect(lambda: self._set(format=self.format_combo.currentData()))
        self.quality_spin.valueChanged.connect(lambda v: self._set(quality=int(v)))
        self.device_combo.currentIndexChanged.connect(lambda: self._set(device=self.device_combo.currentData()))
        self.preset_combo.currentIndexChanged.connect(lambda: self._set(preset=self.preset_combo.currentData()))
        self.tile_spin.valueChanged.connect(lambda v: self._set(tile=int(v)))
        self.strength_spin.valueChanged.connect(lambda v: self._set(strength=int(v)))
        self.recursive_check.toggled.connect(lambda v: self._set(recursive=bool(v)))
        self.keep_clean_check.toggled.connect(lambda v: self._set(keep_clean=bool(v)))
        self.overwrite_combo.currentIndexChanged.connect(
            lambda: self._set(overwrite=self.overwrite_combo.currentData())
        )
        store.subscribe(self.show_settings)

    def _set(self, **changes) -> None:
        if not self._updating:
            self.store.set(**changes)

    @property
    def expanded(self) -> bool:
        return self.more_button.isChecked()

    def set_expanded(self, expanded: bool) -> None:
        """Show or hide the *More settings* section."""
        self.more_button.setChecked(expanded)
        self.more_button.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.more_box.setVisible(expanded)

    @staticmethod
    def _select(combo: QComboBox, value) -> None:
        i = combo.findData(value)
        combo.setCurrentIndex(i if i >= 0 else 0)

    def show_settings(self, s: Settings) -> None:
        """Put ``s`` into the widgets without writing back."""
        self._updating = True
        try:
            if self.output_edit.text() != s.output_dir:
                self.output_edit.setText(s.output_dir)
            self._select(self.naming_combo, s.naming)
            self.suffix_edit.setText(s.suffix)
            self.subfolder_edit.setText(s.subfolder)
            self.suffix_edit.setVisible(s.naming == "suffix")
            self.subfolder_edit.setVisible(s.naming == "subfolder")
            self._select(self.format_combo, s.format)
            self.quality_spin.setValue(s.quality)
            self.quality_spin.setEnabled(s.format in ("same", "jpeg", "webp"))
            self._select(self.device_combo, s.device)
            self._select(self.preset_combo, s.preset)
            self.tile_spin.setValue(s.tile)
            self.strength_spin.setValue(s.strength)
            self.recursive_check.setChecked(s.recursive)
            self.keep_clean_check.setChecked(s.keep_clean)
            self._select(self.overwrite_combo, s.overwrite)
            self.model_label.setText(s.model_dir or "Bundled model")
            self.model_label.setCursorPosition(0)
        finally:
            self._updating = False

    def choose_output_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.store.settings.output_dir)
        if folder:
            self.output_edit.setText(folder)
            self._set(output_dir=folder)

    def set_running(self, running: bool) -> None:
        """Settings are read when a batch starts; lock them while it runs."""
        self.setEnabled(not running)
        if not running:
            self.show_settings(self.store.settings)

