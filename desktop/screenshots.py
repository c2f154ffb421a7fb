"""Take the README's screenshots: the main window after a finished batch, and the comparison view.

``python -m desktop.screenshots --out docs/screenshots [--model DIR] PHOTO...`` (run it under
``xvfb-run`` on a machine without a display; ``QT_QPA_PLATFORM=offscreen`` works too but draws
without the platform's fonts). Settings go to a temporary folder: the user's are not touched.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import engine.device  # noqa: F401  (torch before Qt, as in desktop.app)


def settle(app, ms: int = 300) -> None:
    """Let layouts and paints run (a hidden dock resizes its neighbours only after a few events)."""
    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m desktop.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+", type=Path, help="photos (or folders) to restore")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="where the PNGs go")
    parser.add_argument("--model", type=Path, default=None, help="model bundle (default: the bundled one)")
    parser.add_argument("--select", type=int, default=0, help="queue row shown in the comparison")
    parser.add_argument("--zoom", type=float, default=1.0, help="zoom of the comparison shot, relative to fit")
    args = parser.parse_args(argv)

    from PySide6.QtCore import QPointF, QTimer

    from desktop.app import make_app
    from desktop.compare_view import ComparePanel
    from desktop.main_window import MainWindow
    from desktop.state import SettingsStore

    app = make_app(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="photomend-shots-") as tmp:
        store = SettingsStore(Path(tmp) / "config")
        store.set(output_dir=str(Path(tmp) / "restored"), preset="Fast", overwrite="overwrite",
                  model_dir=str(args.model.resolve()) if args.model else "")
        window = MainWindow(store)
        window.resize(1440, 900)
        window.show()
        window.add_paths(list(args.photos))
        window.batchFinished.connect(lambda _results: app.quit())
        QTimer.singleShot(30 * 60 * 1000, app.quit)
        if not window.start():
            print("screenshots: nothing to restore", file=sys.stderr)
            return 1
        app.exec()
        failed = [j for j in window.queue.jobs if j.status != "done"]
        if failed:
            print(f"screenshots: {failed[0].path.name}: {failed[0].status} {failed[0].error}", file=sys.stderr)
            return 1
        window.table.selectRow(args.select)
        window.comparison.set_split(0.5)
        window.compare.view.wait_loaded()
        settle(app)
        args.out.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(args.out / "main-window.png"))

        # the comparison on its own, large: a second view of the same Comparison state
        panel = ComparePanel(window.comparison)
        panel.resize(1200, 800)
        panel.show()
        window.comparison.set_images(window.comparison.before, window.comparison.after)
        panel.view.wait_loaded()
        settle(app)
        view = panel.view
        if args.zoom != 1.0:
            view.zoom_at(QPointF(view.width() / 2, view.height() / 2), args.zoom)
        window.comparison.set_split(0.5)
        settle(app)
        panel.grab().save(str(args.out / "compare.png"))
        panel.close()
        print(f"wrote {args.out / 'main-window.png'} and {args.out / 'compare.png'}")
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
