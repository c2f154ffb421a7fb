"""``photomend-gui`` without a usable display: one line naming what is missing, exit 2, no abort."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop import platform_check as pc

ROOT = Path(__file__).resolve().parents[2]


def run_gui(tmp_path, **env_changes) -> subprocess.CompletedProcess:
    env = dict(os.environ, PHOTOMEND_CONFIG_DIR=str(tmp_path / "cfg"))
    for key in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        env.pop(key, None)
    env.update(env_changes)
    return subprocess.run([sys.executable, "-m", "desktop.app"], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


def assert_one_line_and_rc_2(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr and "Could not load the Qt platform plugin" not in out.stderr
    assert lines[0].startswith("photomend-gui: ") and "QT_QPA_PLATFORM=offscreen" in lines[0]
    return lines[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is Linux's")
def test_without_a_display_it_says_so_in_one_line_and_exits_2(tmp_path):
    line = assert_one_line_and_rc_2(run_gui(tmp_path))
    assert "DISPLAY is not set" in line and "xvfb-run" in line
    assert not (tmp_path / "cfg").exists()  # it stopped before the window


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is Linux's")
def test_with_a_display_that_does_not_answer_it_says_so_in_one_line_and_exits_2(tmp_path):
    line = assert_one_line_and_rc_2(run_gui(tmp_path, DISPLAY=":187"))
    # without the xcb libraries it names their packages, with them it names the display
    assert "apt-get install lib" in line or "cannot connect to the X display ':187'" in line


def test_missing_libraries_are_named_with_their_packages(monkeypatch):
    monkeypatch.setattr(pc, "missing_xcb_libraries", lambda plugin=None: ["libxcb-cursor.so.0", "libGL.so.1"])
    line = pc.platform_problem({"DISPLAY": ":0"}, "linux")
    assert "libxcb-cursor.so.0, libGL.so.1 missing" in line
    assert "apt-get install libxcb-cursor0 libgl1" in line and pc.HEADLESS_HINT in line


def test_a_chosen_platform_or_another_system_is_trusted(monkeypatch):
    monkeypatch.setattr(pc, "missing_xcb_libraries", lambda plugin=None: ["libxcb-cursor.so.0"])
    assert pc.platform_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert pc.platform_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert pc.platform_problem({}, "win32") is None and pc.platform_problem({}, "darwin") is None
    assert "DISPLAY is not set" in pc.platform_problem({"QT_QPA_PLATFORM": "xcb"}, "linux")
    assert "cannot load" in pc.platform_problem({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":0"}, "linux")


def test_debian_package_names():
    assert [pc.debian_package(s) for s in ("libxkbcommon-x11.so.0", "libxcb-sync.so.1", "libX11-xcb.so.1",
                                           "libdbus-1.so.3", "libEGL.so.1")] == [
        "libxkbcommon-x11-0", "libxcb-sync1", "libx11-xcb1", "libdbus-1-3", "libegl1"]
    assert set(pc.APT_PACKAGES) >= {"libxcb-cursor0", "libxkbcommon-x11-0", "libegl1", "libfontconfig1"}


@pytest.mark.skipif(pc.xcb_plugin() is None, reason="this PySide6 has no xcb plugin")
def test_the_plugin_check_agrees_with_loading_it():
    by_ldd = pc._missing_by_ldd(pc.xcb_plugin())
    by_loading = pc._missing_by_loading(pc.xcb_plugin())
    if by_ldd is not None:
        assert bool(by_ldd) == bool(by_loading)
        assert set(by_ldd) & set(pc.XCB_LIBRARIES) <= set(by_loading)
