"""The main window: queue, comparison, per-photo degradation override, settings, log and progress.

The photo gets the window: the comparison fills everything right of one column that holds the
common settings (the rest collapsed under *More settings*), the queue, and a tab pair of the
degradation override and the log. Photos are analysed as soon as they are queued, so each row shows
what was detected before *Start*, and *Start* reuses that analysis. Keys: arrows move through the
queue, Space toggles before/after.

Widgets receive the plain state objects (:mod:`desktop.state`) and subscribe to them; what a batch
does (its tasks, the rows' states from the worker's events, the time left) is the
:class:`~desktop.controller.BatchController`'s, and the engine is reached only through the worker
thread (:mod:`desktop.worker`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QSplitter,
    QStyle,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.analyser import Analyser
from desktop.compare_view import ComparePanel
from desktop.controller import BatchController
from desktop.model_manager import ModelManager
from desktop.override_panel import MAX_DEGRADATIONS, OverridePanel
from desktop.queue_table import QueueTable
from desktop.settings_panel import SettingsPanel
from desktop.state import DONE, SKIPPED, Comparison, JobQueue, SettingsStore
from desktop.worker import RestorerFactory, WorkerHost
from engine.resources import resources_dir


def icon_path(name: str) -> Path:
    """Path of an icon shipped in ``resources/icons``."""
    return resources_dir() / "icons" / name


class MainWindow(QMainWindow):
    """PhotoMend's window. ``restorer_factory`` lets tests choose the model; ``devices`` the device list;
    ``echo_log`` also prints each log line to stderr (``photomend-gui --verbose``)."""

    batchFinished = Signal(object)  # list[FileResult], also after a cancel or a failure ([])
    analysisFinished = Signal()  # no photo waits for analysis any more

    LEFT_WIDTH = 440  # the column of settings, queue and override; the comparison takes the rest

    def __init__(
        self,
        store: SettingsStore | None = None,
        restorer_factory: RestorerFactory | None = None,
        devices: list[str] | None = None,
        echo_log: bool = False,
    ) -> None:
        super().__init__()
        self.echo_log = echo_log
        self._log_errors = 0
        self.store = store or SettingsStore()
        self.queue = JobQueue()
        self.comparison = Comparison()
        self.host = WorkerHost(restorer_factory, parent=self)
        if devices is None:
            from engine.inference.device import available_devices

            devices = available_devices()

        self.setWindowTitle("PhotoMend")
        icon = icon_path("photomend.svg")
        if icon.exists():
            self.setWindowIcon(QIcon(str(icon)))
        self.setAcceptDrops(True)

        self.table = QueueTable(self.queue)
        self.compare = ComparePanel(self.comparison)
        self.override = OverridePanel()
        self.settings_panel = SettingsPanel(self.store, devices)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)

        # left: settings, the queue, then the override and the log as tabs; right: the comparison
        self.side_tabs = QTabWidget()
        self.side_tabs.addTab(self.override, "Degradations")
        self.side_tabs.addTab(self.log_view, "Log")
        self.side_tabs.currentChanged.connect(self._on_side_tab)
        self.queue_splitter = QSplitter(Qt.Orientation.Vertical)
        self.queue_splitter.addWidget(self.table)
        self.queue_splitter.addWidget(self.side_tabs)
        self.queue_splitter.setStretchFactor(0, 1)
        self.queue_splitter.setStretchFactor(1, 0)
        self.queue_splitter.setSizes([460, 180])
        left = QWidget()
        column = QVBoxLayout(left)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.settings_panel)
        column.addWidget(self.queue_splitter, 1)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.compare)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setCollapsible(1, False)
        self.splitter.setSizes([self.LEFT_WIDTH, 1000])
        self.setCentralWidget(self.splitter)

        self.overall_bar = QProgressBar()
        self.overall_bar.setFormat("%p%")
        self.overall_bar.setMaximumWidth(260)
        self.photo_bar = QProgressBar()
        self.photo_bar.setFormat("photo %p%")
        self.photo_bar.setMaximumWidth(160)
        self.eta_label = QLabel()
        self.statusBar().addPermanentWidget(self.eta_label)
        self.statusBar().addPermanentWidget(self.photo_bar)
        self.statusBar().addPermanentWidget(self.overall_bar)

        self._make_actions()
        self._eta_timer = QTimer(self)
        self._eta_timer.setInterval(1000)
        self._eta_timer.timeout.connect(self._update_progress)

        self.host.worker.log.connect(self.log)
        self.analyser = Analyser(self.queue, self.store, self.host, self)
        self.controller = BatchController(self.queue, self.store, self.host, self.analyser,
                                          ask_output_dir=self.settings_panel.choose_output_dir, parent=self)
        self.controller.log.connect(self.log)
        self.controller.status.connect(self.statusBar().showMessage)
        self.controller.runningChanged.connect(self._set_running)
        self.controller.progressChanged.connect(self._update_progress)
        self.controller.finished.connect(self._on_finished)
        self.analyser.message.connect(self.log)
        self.analyser.status.connect(self.statusBar().showMessage)
        self.analyser.changed.connect(self._update_cancel)
        self.analyser.finished.connect(self.analysisFinished)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_row)
        self.table.toggleRequested.connect(self.comparison.toggle_before_after)
        self.compare.view.stepRequested.connect(self.table.step)
        self.override.list.itemChanged.connect(self._on_override_checked)
        self.override.detected_button.clicked.connect(self._use_detected)
        self.override.restore_button.clicked.connect(self.restore_selected_again)
        self.settings_panel.manageModelsRequested.connect(self.open_model_manager)
        self.queue.subscribe(self._on_queue_changed)

        self._fit_to_screen()
        self._restore_window_state()
        self.table.setFocus()
        self._set_running(False)
        self.statusBar().showMessage("Add photos with Ctrl+O, a folder with Ctrl+Shift+O, or drop them here.")

    # ------------------------------------------------------------------ construction helpers

    def _fit_to_screen(self) -> None:
        """The first size: 1440 x 900 or the screen's free area when smaller (a 1366 x 768 laptop)."""
        screen = self.screen()
        free = screen.availableGeometry() if screen is not None else None
        if free is None or free.isEmpty():
            self.resize(1280, 800)
            return
        self.resize(min(1440, free.width()), min(900, free.height()))

    def _action(self, text: str, shortcut, slot, icon=None, tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        if icon is not None:
            act.setIcon(self.style().standardIcon(icon))
        tip = tip or text.replace("&", "").rstrip("…")
        if shortcut:
            tip += f" ({act.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})"
        act.setToolTip(tip)
        act.triggered.connect(slot)
        self.addAction(act)
        return act

    def _make_actions(self) -> None:
        sp = QStyle.StandardPixmap
        self.add_files_action = self._action("Add &files…", QKeySequence.StandardKey.Open, self.choose_files, sp.SP_FileIcon)
        self.add_folder_action = self._action("Add f&older…", "Ctrl+Shift+O", self.choose_folder, sp.SP_DirIcon)
        self.start_action = self._action("&Start", "Ctrl+R", self.start, sp.SP_MediaPlay, "Restore the queued photos")
        self.cancel_action = self._action("&Cancel", "Esc", self.cancel, sp.SP_MediaStop, "Stop after the current tile")
        self.again_action = self._action("Restore selected &again", "Ctrl+Shift+R", self.restore_selected_again, sp.SP_BrowserReload)
        self.remove_action = self._action("&Remove from queue", QKeySequence.StandardKey.Delete, self.remove_selected, sp.SP_TrashIcon)
        self.clear_action = self._action("C&lear queue", "Ctrl+Shift+Del", self.clear_queue, sp.SP_DialogResetButton)
        self.open_output_action = self._action("&Open output folder", "Ctrl+Shift+E", self.open_output_folder, sp.SP_DirOpenIcon)
        self.models_action = self._action("&Models…", "Ctrl+M", self.open_model_manager, sp.SP_FileDialogDetailedView)
        self.quit_action = self._action("&Quit", QKeySequence.StandardKey.Quit, self.close)
        self.toggle_mode_action = self._action("Split / side by side", "Ctrl+T", self._toggle_mode)
        self.log_action = self._action("Show the &log", "Ctrl+L", lambda: self.side_tabs.setCurrentWidget(self.log_view))
        self.fit_action = self._action("&Fit", "Ctrl+0", self.comparison.fit)
        self.one_action = self._action("&1:1", "Ctrl+1", self.compare.view.actual_size)
        self.compare.fit_button.setShortcut(QKeySequence())  # the actions own these shortcuts
        self.compare.one_button.setShortcut(QKeySequence())

        bar = self.addToolBar("Main")
        bar.setObjectName("main-toolbar")
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for act in (self.add_files_action, self.add_folder_action, None, self.start_action, self.cancel_action,
                    self.again_action, None, self.open_output_action, self.models_action):
            bar.addSeparator() if act is None else bar.addAction(act)

        menus = self.menuBar()
        file_menu = menus.addMenu("&File")
        for act in (self.add_files_action, self.add_folder_action, None, self.open_output_action, None, self.quit_action):
            file_menu.addSeparator() if act is None else file_menu.addAction(act)
        batch_menu = menus.addMenu("&Batch")
        for act in (self.start_action, self.cancel_action, self.again_action, None, self.remove_action, self.clear_action):
            batch_menu.addSeparator() if act is None else batch_menu.addAction(act)
        view_menu = menus.addMenu("&View")
        for act in (self.toggle_mode_action, self.fit_action, self.one_action, None, self.log_action):
            view_menu.addSeparator() if act is None else view_menu.addAction(act)
        menus.addMenu("&Models").addAction(self.models_action)
        help_menu = menus.addMenu("&Help")
        help_menu.addAction(self._action("&Keyboard shortcuts", "F1", self.show_shortcuts))

    # ------------------------------------------------------------------ adding photos

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.add_paths(paths)

    def add_paths(self, paths: list[Path]) -> int:
        """Queue image files and the images inside folders (drag and drop, dialogs, command line)."""
        from engine.jobs.batch import collect_inputs

        s = self.store.settings
        exclude = Path(s.output_dir) if s.output_dir else None
        found: list[tuple[Path, Path]] = []
        for p in paths:
            try:
                found += collect_inputs([Path(p)], s.recursive, exclude)
            except (OSError, ValueError) as exc:
                self.log(f"Cannot add {p}: {exc}")
        new = [path for path, _root in found if self.queue.index_of(path) < 0]
        added = self.queue.add(found)
        self.log(f"Added {added} photo(s)" + (f" ({len(found) - added} already queued)" if len(found) > added else ""))
        if added and self.table.currentIndex().row() < 0:
            self.table.selectRow(0)
        self.analyze(new)
        return added

    def choose_files(self) -> None:
        from engine.io.reader import IMAGE_SUFFIXES

        pattern = " ".join(f"*{s}" for s in IMAGE_SUFFIXES)
        files, _ = QFileDialog.getOpenFileNames(self, "Add photos", "", f"Images ({pattern});;All files (*)")
        if files:
            self.add_paths([Path(f) for f in files])

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of photos")
        if folder:
            self.add_paths([Path(folder)])

    def remove_selected(self) -> None:
        if not self.running:
            rows = self.table.selected_rows()
            self.analyser.discard([self.queue.jobs[r].path for r in rows])
            self.queue.remove(rows)

    def clear_queue(self) -> None:
        if not self.running:
            self.analyser.cancel()
            self.queue.clear()
            self.comparison.set_images(None, None)

    # ------------------------------------------------------------------ analysis before Start

    def analyze(self, paths) -> None:
        """Detect the degradations of ``paths`` in the worker, in this order (after a running batch)."""
        self.analyser.analyze(paths)

    @property
    def analysing(self) -> bool:
        """Photos wait for analysis, or one is being analysed."""
        return self.controller.analysing

    def _update_cancel(self) -> None:
        self.cancel_action.setEnabled(self.running or self.analysing)

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        return self.controller.running

    def start(self) -> bool:
        """Restore every queued photo not yet done (all of them when every one is done)."""
        return self.controller.start()

    def restore_selected_again(self) -> bool:
        """Restore the selected photos again with their chosen degradations, replacing earlier outputs."""
        if self.running:
            return False
        jobs = [self.queue.jobs[r] for r in self.table.selected_rows()]
        if not jobs and self.table.current_job() is not None:
            jobs = [self.table.current_job()]
        return self.controller.restore_again(jobs)

    def cancel(self) -> None:
        """Stop the batch within a tile; without one, stop analysing after the current photo."""
        self.controller.cancel()

    def _set_running(self, running: bool) -> None:
        self.start_action.setEnabled(not running)
        self.again_action.setEnabled(not running)
        self.override.restore_button.setEnabled(not running)
        self.remove_action.setEnabled(not running)
        self.clear_action.setEnabled(not running)
        self.add_files_action.setEnabled(True)
        self.cancel_action.setEnabled(running or self.analysing)
        self.settings_panel.set_running(running)
        if running:
            self._eta_timer.start()
        else:
            self._eta_timer.stop()
        self._update_progress()

    def _on_finished(self, results) -> None:
        self.show_selected()
        self.batchFinished.emit(results)

    def _update_progress(self) -> None:
        p = self.controller.progress()
        self.overall_bar.setValue(int(p.overall * 100))
        self.photo_bar.setValue(int(p.photo * 100))
        self.eta_label.setText(p.text)
        if p.current is not None:
            self.statusBar().showMessage(f"Restoring {p.current.path.name}…")

    # ------------------------------------------------------------------ selection, comparison, override

    def _on_queue_changed(self, kind: str, index: int) -> None:
        current = self.table.currentIndex().row()
        if kind == "changed" and index == current:
            job = self.queue.jobs[index]
            if job.status in (DONE, SKIPPED) and job.output is not None and self.comparison.after != job.output:
                self.show_selected()
            elif job.override is None:
                self._show_override(job)

    def _on_current_row(self, current, _previous) -> None:
        if current.isValid():
            self.table.scrollTo(current)
        self.show_selected()

    def show_selected(self) -> None:
        """Show the current row's before/after and its degradations."""
        job = self.table.current_job()
        if job is None:
            return
        after = job.output if job.output is not None and Path(job.output).exists() else None
        if self.comparison.before != job.path or self.comparison.after != after:
            self.comparison.set_images(job.path, after)
        self._show_override(job)
        if job.error:
            self.statusBar().showMessage(job.error)

    def _show_override(self, job) -> None:
        if job.override is not None:
            names = job.override
        else:
            names = job.detection.degradations if job.detection is not None else ()
        self.override.set_checked(names)
        self.override.set_scores(job.detection.scores if job.detection is not None else {})

    def _on_override_checked(self, item: QListWidgetItem) -> None:
        job = self.table.current_job()
        if job is None:
            return
        names = self.override.checked()
        if len(names) > MAX_DEGRADATIONS:
            self.override.list.blockSignals(True)
            item.setCheckState(Qt.CheckState.Unchecked)
            self.override.list.blockSignals(False)
            self.statusBar().showMessage(f"At most {MAX_DEGRADATIONS} degradations per photo.")
            names = self.override.checked()
        for row in self.table.selected_rows() or [self.queue.index_of(job.path)]:
            self.queue.set_override(self.queue.jobs[row].path, names)

    def _use_detected(self) -> None:
        for row in self.table.selected_rows():
            self.queue.set_override(self.queue.jobs[row].path, None)
        job = self.table.current_job()
        if job is not None:
            self.queue.set_override(job.path, None)
            self._show_override(job)

    def _toggle_mode(self) -> None:
        self.comparison.set_mode("side" if self.comparison.mode == "split" else "split")

    # ------------------------------------------------------------------ misc actions

    def log(self, message: str, error: bool = False) -> None:
        """Append a line to the log tab (its title counts errors while it is not shown)."""
        line = f"{time.strftime('%H:%M:%S')}  {message}"
        self.log_view.appendPlainText(line)
        if self.echo_log and sys.stderr is not None:
            print(line, file=sys.stderr, flush=True)
        if error and self.side_tabs.currentWidget() is not self.log_view:
            self._log_errors += 1
            self.side_tabs.setTabText(self.side_tabs.indexOf(self.log_view), f"Log ({self._log_errors} errors)"
                                      if self._log_errors > 1 else "Log (1 error)")

    def _on_side_tab(self, index: int) -> None:
        if self.side_tabs.widget(index) is self.log_view:
            self._log_errors = 0
            self.side_tabs.setTabText(index, "Log")

    def open_output_folder(self) -> None:
        folder = self.store.settings.output_dir
        if not folder:
            self.statusBar().showMessage("No output folder chosen yet.")
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(folder))

    def open_model_manager(self) -> None:
        ModelManager(self.store, self).exec()

    def show_shortcuts(self) -> None:
        lines = [
            f"{a.text().replace('&', '').rstrip('…')}: {a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)}"
            for a in self.actions()
            if not a.shortcut().isEmpty()
        ]
        QMessageBox.information(self, "Keyboard shortcuts", "\n".join(lines))

    # ------------------------------------------------------------------ persistence

    def qsettings(self) -> QSettings:
        """Window geometry and layout only (everything else is in the platformdirs JSON)."""
        return QSettings(str(self.store.folder / "window.ini"), QSettings.Format.IniFormat)

    def _restore_window_state(self) -> None:
        qs = self.qsettings()
        geometry = qs.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = qs.value("state")
        if state is not None:
            self.restoreState(state)
        # "layout/": the splitters of this layout (those of the earlier one, saved at the top level, are ignored)
        for key, splitter in (("layout/splitter", self.splitter), ("layout/queue_splitter", self.queue_splitter)):
            state = qs.value(key)
            if state is not None:
                splitter.restoreState(state)
        self.settings_panel.set_expanded(qs.value("layout/more_settings", False, type=bool))
        mode = qs.value("compare_mode")
        if mode in ("split", "side"):  # the before/after toggle is a moment's look, not a way to start
            self.comparison.set_mode(mode)

    def save_window_state(self) -> None:
        self.store.folder.mkdir(parents=True, exist_ok=True)
        qs = self.qsettings()
        qs.setValue("geometry", self.saveGeometry())
        qs.setValue("state", self.saveState())
        qs.setValue("layout/splitter", self.splitter.saveState())
        qs.setValue("layout/queue_splitter", self.queue_splitter.saveState())
        qs.setValue("layout/more_settings", self.settings_panel.expanded)
        if self.comparison.mode in ("split", "side"):
            qs.setValue("compare_mode", self.comparison.mode)
        qs.sync()

    def closeEvent(self, event) -> None:
        self.save_window_state()
        self.host.shutdown()
        self.table.queue_model.thumbs.wait(2000)
        super().closeEvent(event)
