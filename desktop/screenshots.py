"""Take the README's screenshots: the main window after a finished batch, and a comparison, per size.

``python -m desktop.screenshots --out docs/screenshots --size 1366x768 --size 1920x1080 PHOTO...``
writes ``main-window-WxH.png`` and ``compare-WxH.png`` for each size (run it under ``xvfb-run`` on a
machine without a display; ``QT_QPA_PLATFORM=offscreen`` works too but draws without the
platform's fonts). Settings go to a temporary folder: the user's are not touched.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import engine.inference.device  # noqa: F401  (torch before Qt, as in desktop.app)


def settle(app, ms: int = 300) -> None:
    """Let layouts and paints run (a resized splitter lays out its children only after a few events)."""
    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    try:
        size = int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if min(size) < 200:
        raise argparse.ArgumentTypeError(f"{text}: too small for the window")
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m desktop.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+", type=Path, help="photos (or folders) to restore")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="where the PNGs go")
    parser.add_argument("--model", type=Path, default=None, help="model bundle (default: the bundled one)")
    parser.add_argument("--size", type=parse_size, action="append", help="window size, e.g. 1366x768 (repeatable)")
    parser.add_argument("--select", type=int, default=0, help="queue row shown in the main-window shot")
    parser.add_argument("--compare", type=int, default=None, help="queue row of the comparison (default: --select)")
    parser.add_argument("--zoom", type=float, default=1.0, help="zoom of the comparison shot, relative to fit")
    parser.add_argument("--mode", choices=("split", "side"), default="side", help="mode of the comparison shot")
    args = parser.parse_args(argv)
    sizes = args.size or [(1366, 768), (1920, 1080)]

    from PySide6.QtCore import QPointF, QTimer

    from desktop.app import make_app
    from desktop.main_window import MainWindow
    from desktop.state import SettingsStore

    app = make_app(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="photomend-shots-") as tmp:
        store = SettingsStore(Path(tmp) / "config")
        store.set(output_dir=str(Path(tmp) / "restored"), preset="Fast", overwrite="overwrite",
                  model_dir=str(args.model.resolve()) if args.model else "")
        window = MainWindow(store)
        window.resize(*sizes[0])
        window.move(0, 0)
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
        args.out.mkdir(parents=True, exist_ok=True)
        written = []
        for w, h in sizes:
            window.resize(w, h)
            window.comparison.set_mode("split")
            window.table.selectRow(args.select)
            window.comparison.set_images(window.comparison.before, window.comparison.after)
            window.compare.view.wait_loaded()
            settle(app)
            window.comparison.set_split(0.5)
            settle(app)
            written.append(args.out / f"main-window-{w}x{h}.png")
            window.grab().save(str(written[-1]))

            window.table.selectRow(args.select if args.compare is None else args.compare)
            window.comparison.set_mode(args.mode)
            window.compare.view.wait_loaded()
            settle(app)
            view = window.compare.view
            if args.zoom != 1.0:
                view.zoom_at(QPointF(view.width() / 4, view.height() / 2), args.zoom)
            settle(app)
            written.append(args.out / f"compare-{w}x{h}.png")
            window.grab().save(str(written[-1]))
        print("wrote " + ", ".join(str(p) for p in written))
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
