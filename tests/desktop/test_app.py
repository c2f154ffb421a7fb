"""The entry point: arguments, paths queued at start, torch before Qt, and ``--self-test``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desktop import app

ROOT = Path(__file__).resolve().parents[2]


def test_arguments():
    args = app.parse_args(["a.jpg", "folder", "--self-test"])
    assert args.paths == [Path("a.jpg"), Path("folder")] and args.self_test


def test_paths_given_at_start_are_queued(qtbot, store, photo_folder, tmp_path, engine_kit):
    window = app.open_window([photo_folder / "a.png", tmp_path / "missing.jpg"], store)
    qtbot.addWidget(window)
    assert [j.path.name for j in window.queue.jobs] == ["a.png"]
    assert "missing.jpg" in window.log_view.toPlainText()


def test_entry_point_imports_torch_before_qt():
    code = "import sys, desktop.app; mods = list(sys.modules); print(mods.index('torch') < mods.index('PySide6') if 'PySide6' in mods else 'no-qt')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() in ("True", "no-qt")


@pytest.mark.slow
def test_self_test_restores_a_sample_through_the_window(tmp_path, tiny_bundle):
    resources = tmp_path / "resources"
    from engine.bundle import bundled_model_dir

    shutil.copytree(tiny_bundle, bundled_model_dir(resources))
    from tests.desktop.conftest import make_photo

    make_photo(resources / "samples" / "sample.png", (96, 128), 7)
    env = dict(os.environ, PHOTOMEND_RESOURCES=str(resources), PHOTOMEND_CONFIG_DIR=str(tmp_path / "cfg"))
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("QT_QPA_PLATFORM", None)  # --self-test must choose offscreen by itself
    out = subprocess.run([sys.executable, "-m", "desktop.app", "--self-test"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "self-test ok: sample.png" in out.stdout
    assert not (tmp_path / "cfg").exists()  # the user's settings are not touched
