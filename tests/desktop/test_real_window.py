"""The real app in a real X server: ``photomend-gui FOLDER`` under Xvfb, driven with xdotool.

It queues a folder, waits for the detections (before Start), presses Ctrl+R in the window, checks
the restored files on disk and saves a screenshot of the screen (ImageMagick's ``import``) as a
test artifact: ``$PHOTOMEND_TEST_ARTIFACTS`` or ``build/test-artifacts/``. The offscreen tests
cover the window's logic; this one covers what they cannot: the xcb plugin, its system libraries,
fonts, focus and keyboard shortcuts in a real window system.

Skipped, with the reason, when Xvfb is not installed; under ``CI=true`` it fails instead, since
``.ci/run`` installs Xvfb, xdotool, ImageMagick and the libraries with apt-get.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from tests.desktop.conftest import make_photo

ROOT = Path(__file__).resolve().parents[2]
SCREEN = (1366, 768)
TIMEOUT_S = 180
INSTALL_HINT = ("apt-get install xvfb xdotool imagemagick and the libraries in the README "
                "(.ci/run installs them)")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(tool: str, skip_allowed: bool) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed: {INSTALL_HINT}"
        if skip_allowed and not in_ci():
            pytest.skip(message)
        pytest.fail(message + ("; CI=true, so this fails instead of skipping" if in_ci() else ""))
    return path


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("PHOTOMEND_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def xvfb(tmp_path):
    """A fresh Xvfb server on a free display number; yields ``":N"``."""
    binary = require("Xvfb", skip_allowed=True)
    if not sys.platform.startswith("linux"):
        pytest.skip("the Xvfb window test runs on Linux")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        [binary, "-displayfd", str(write_fd), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=open(tmp_path / "xvfb.log", "wb"))
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()  # written once the server accepts connections
        if not number.isdigit():
            pytest.fail(f"Xvfb did not start: {(tmp_path / 'xvfb.log').read_text(errors='replace')[-1500:]}")
        yield f":{number}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def wait_for_line(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = TIMEOUT_S) -> str:
    """The app's log (``--verbose`` prints it to stderr) up to the first line matching ``pattern``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log.read_text(errors="replace") if log.exists() else ""
        if re.search(pattern, text):
            return text
        if proc.poll() is not None:
            pytest.fail(f"the app exited with {proc.returncode} before {pattern!r}:\n{text[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"no {pattern!r} in the app's log after {timeout:.0f} s:\n{text[-3000:]}")


def xdotool(*args: str, env: dict) -> str:
    out = subprocess.run(["xdotool", *args], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, f"xdotool {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


@pytest.mark.slow
def test_the_real_window_restores_a_folder_under_xvfb(xvfb, tmp_path, tiny_bundle):
    require("xdotool", skip_allowed=False)
    require("import", skip_allowed=False)
    photos = tmp_path / "photos"
    sizes = {"a.png": (96, 128), "b.jpg": (112, 96), "sub/c.png": (128, 128)}
    for i, (name, size) in enumerate(sizes.items()):
        make_photo(photos / name, size, i + 1)
    out = tmp_path / "restored"
    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.json").write_text(json.dumps(
        {"output_dir": str(out), "preset": "Fast", "recursive": True, "model_dir": str(tiny_bundle)}))
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=xvfb, PHOTOMEND_CONFIG_DIR=str(config))
    log = tmp_path / "app.log"
    with open(log, "wb") as stderr:
        app = subprocess.Popen([sys.executable, "-m", "desktop.app", "--verbose", str(photos)], cwd=ROOT, env=env,
                               stdout=stderr, stderr=subprocess.STDOUT)
    try:
        text = wait_for_line(log, r"Analysis finished: 3 of 3", app)
        for name in ("a.png", "b.jpg", "c.png"):
            assert re.search(rf"Detected in {re.escape(name)}: \S", text), text
        assert "Restoring" not in text  # detections came before Start

        window = xdotool("search", "--sync", "--onlyvisible", "--name", "^PhotoMend$", env=env).split()[0]
        xdotool("windowfocus", "--sync", window, env=env)
        xdotool("key", "--clearmodifiers", "ctrl+r", env=env)  # Start, as a user would
        text = wait_for_line(log, r"Batch finished in .*: 3 done", app)
        for name, (h, w) in sizes.items():
            restored = out / Path(name).parent / f"{Path(name).stem}_restored{Path(name).suffix}"
            assert restored.is_file(), f"{restored} missing; log:\n{text[-2000:]}"
            with Image.open(restored) as im:
                assert im.size == (w, h)

        time.sleep(0.5)  # let the last repaint reach the server
        shot = artifacts_dir() / "real-window-xvfb.png"
        subprocess.run(["import", "-display", xvfb, "-window", "root", str(shot)], check=True, env=env, timeout=60)
        with Image.open(shot) as im:
            assert im.size == SCREEN
            assert max(ImageStat.Stat(im.convert("L")).stddev) > 20  # a painted window, not a blank screen
        print(f"screenshot: {shot}")

        xdotool("key", "--clearmodifiers", "ctrl+q", env=env)
        assert app.wait(60) == 0, log.read_text(errors="replace")[-2000:]
    finally:
        if app.poll() is None:
            app.terminate()
            app.wait(30)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "Could not load the Qt platform plugin" not in text, text[-3000:]


def test_without_xvfb_it_skips_locally_and_fails_under_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Xvfb is not installed: apt-get install xvfb"):
        require("Xvfb", skip_allowed=True)
    with pytest.raises(pytest.fail.Exception, match="xdotool is not installed"):
        require("xdotool", skip_allowed=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true, so this fails instead of skipping"):
        require("Xvfb", skip_allowed=True)
