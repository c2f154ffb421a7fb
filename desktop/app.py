"""``photomend-gui [PATHS...] [--verbose] [--self-test]``: start the desktop app.

Before the window is created, :func:`desktop.platform_check.platform_problem` checks that one can
open (on Linux: a display, and the system libraries of Qt's xcb plugin); when not, one line says
what is missing and the exit status is 2.

torch is imported before Qt on purpose: with recent torch on Windows, loading Qt's DLLs first makes
torch's DLL initialisation fail. Keep the ``engine.inference.device`` import above every PySide6 import.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import engine.inference.device  # noqa: F401  (imports torch before PySide6; see the module docstring)
from engine.resources import samples_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="photomend-gui", description="Restore photos in a window.")
    parser.add_argument("paths", nargs="*", type=Path, help="photos or folders to queue at start")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="open the window (offscreen without a display), restore one bundled sample, exit 0 on success",
    )
    parser.add_argument("--verbose", action="store_true", help="also print the log to stderr")
    return parser.parse_args(argv)


def _needs_offscreen() -> bool:
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def make_app(argv: list[str]):
    """The QApplication, high-DPI aware, with the platform's own style and palette."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(argv)
    app.setApplicationName("PhotoMend")
    app.setApplicationDisplayName("PhotoMend")
    app.setOrganizationName("PhotoMend")
    app.setDesktopFileName("photomend")
    return app


def self_test(timeout_s: float = 600.0) -> int:
    """Restore the first bundled sample through the real window and worker; 0 when its output exists."""
    from PySide6.QtCore import QTimer

    from desktop.main_window import MainWindow
    from desktop.state import SettingsStore
    from engine.io.reader import list_images

    samples = list_images(samples_dir()) if samples_dir().is_dir() else []
    if not samples:
        print(f"self-test: no sample photos in {samples_dir()}", file=sys.stderr)
        return 1
    app = make_app(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="photomend-gui-selftest-") as tmp:
        store = SettingsStore(Path(tmp) / "config")  # never touches the user's settings
        store.set(output_dir=str(Path(tmp) / "out"), preset="Fast", overwrite="overwrite")
        window = MainWindow(store)
        window.show()
        outcome: dict = {}

        def finished(results) -> None:
            outcome["results"] = results
            app.quit()

        window.batchFinished.connect(finished)
        QTimer.singleShot(int(timeout_s * 1000), app.quit)
        window.add_paths([samples[0]])
        if not window.start():
            print("self-test: the batch did not start", file=sys.stderr)
            return 1
        app.exec()
        job = window.queue.jobs[0]
        window.close()
        ok = job.status == "done" and job.output is not None and Path(job.output).is_file()
        if ok:
            found = job.degradations_text() or "none"
            print(f"self-test ok: {samples[0].name} restored in {job.seconds:.1f} s (detected: {found})")
            return 0
        reason = job.error or ("timed out" if "results" not in outcome else f"status {job.status}")
        print(f"self-test failed: {samples[0].name}: {reason}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``photomend-gui``."""
    args = parse_args(argv)
    if args.self_test and _needs_offscreen():
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from desktop.platform_check import platform_problem

    problem = platform_problem()
    if problem:  # Qt would abort with a long message; say what is missing in one line
        print(f"photomend-gui: {problem}", file=sys.stderr)
        return 2
    if args.self_test:
        return self_test()

    app = make_app(sys.argv[:1])
    window = open_window(args.paths, echo_log=args.verbose)
    code = app.exec()
    del window
    return code


def open_window(paths: list[Path], store=None, echo_log: bool = False):
    """Show the main window with ``paths`` queued (missing ones are reported in the log)."""
    from desktop.main_window import MainWindow

    window = MainWindow(store, echo_log=echo_log)
    window.show()
    for p in paths:
        if not p.exists():
            window.log(f"Cannot add {p}: no such file or folder")
    existing = [p for p in paths if p.exists()]
    if existing:
        window.add_paths(existing)
    return window


if __name__ == "__main__":
    sys.exit(main())
