"""Fixtures for the desktop tests: offscreen Qt, a private config folder, three small photos, an engine."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from tests.bundles import build_tiny_bundle  # noqa: E402


@pytest.fixture(autouse=True)
def private_config(tmp_path, monkeypatch) -> Path:
    """Every test gets its own config folder: the user's real settings are never touched."""
    folder = tmp_path / "config"
    monkeypatch.setenv("PHOTOMEND_CONFIG_DIR", str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return folder


def make_photo(path: Path, size: tuple[int, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin(x / 7.0)], axis=-1)
    img = np.clip(base + rng.normal(0, 0.08, base.shape), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """A folder of three small photos (one in a subfolder)."""
    folder = tmp_path / "photos"
    make_photo(folder / "a.png", (96, 128), 1)
    make_photo(folder / "b.jpg", (112, 96), 2)
    make_photo(folder / "sub" / "c.png", (128, 128), 3)
    return folder


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("models") / "tiny")


class EngineKit:
    """How the window reaches the real engine in tests: ``factory(model_dir, device)`` builds a
    :class:`engine.inference.runtime.Restorer` on the tiny bundle; ``slow_tile`` makes a photo take many tiles."""

    def __init__(self, factory, slow_tile: int):
        self.factory, self.slow_tile = factory, slow_tile


@pytest.fixture
def engine_kit(tiny_bundle) -> EngineKit:
    from engine.inference.runtime import Restorer

    return EngineKit(lambda model_dir, device: Restorer(tiny_bundle, "cpu"), slow_tile=32)


@pytest.fixture
def store(private_config):
    from desktop.state import SettingsStore

    return SettingsStore(private_config)


@pytest.fixture
def make_window(qtbot, store, engine_kit):
    """``make_window(slow=False, store=None)`` -> a shown MainWindow closed at teardown."""
    from desktop.main_window import MainWindow

    windows = []

    def make(slow: bool = False, store_=None):
        if slow:
            (store_ or store).set(tile=engine_kit.slow_tile)
        w = MainWindow(store_ or store, restorer_factory=engine_kit.factory, devices=["auto", "cpu"])
        qtbot.addWidget(w)
        w.show()
        windows.append(w)
        return w

    yield make
    for w in windows:
        if w.host.thread.isRunning():
            w.close()
