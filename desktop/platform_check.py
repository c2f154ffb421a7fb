"""Can a window open here? Checked before the QApplication exists, because Qt aborts when it cannot.

On Linux, Qt's xcb platform plugin needs a reachable X display and a dozen system libraries that a
minimal install lacks; without them Qt prints "Could not load the Qt platform plugin" and aborts
(exit 134). :func:`platform_problem` finds these cases first and returns one line saying what is
missing (the Debian/Ubuntu packages, or ``QT_QPA_PLATFORM=offscreen`` for headless use), so
``photomend-gui`` can print it and exit 2. Windows and macOS need nothing: Qt's plugins ship in the
PySide6 wheel, and the system libraries they use are always there.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# System libraries of Qt's xcb plugin that minimal Debian/Ubuntu installs lack, with their packages.
XCB_LIBRARIES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}
APT_PACKAGES = tuple(XCB_LIBRARIES.values())
NOT_NEEDED_BY_QT6 = {"libxcb-xinerama.so.0"}  # listed for Qt 5 builds; not required when checking by loading
HEADLESS_HINT = "QT_QPA_PLATFORM=offscreen for headless use"


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package that ships ``soname`` (the policy's naming rule when not listed).

    ``libxcb-sync.so.1`` -> ``libxcb-sync1``; a name ending in a digit takes a hyphen:
    ``libxkbcommon-x11.so.0`` -> ``libxkbcommon-x11-0``.
    """
    if soname in XCB_LIBRARIES:
        return XCB_LIBRARIES[soname]
    m = re.fullmatch(r"(lib.+?)\.so\.(\d+)(?:\..*)?", soname)
    if not m:
        return soname
    name, major = m.group(1).lower(), m.group(2)
    return f"{name}-{major}" if name[-1].isdigit() else f"{name}{major}"


def xcb_plugin() -> Path | None:
    """PySide6's ``libqxcb.so``, found without loading Qt (None when PySide6 has none)."""
    import importlib.util

    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        plugin = Path(folder) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
        if plugin.is_file():
            return plugin
    return None


def _missing_by_ldd(plugin: Path) -> list[str] | None:
    """Libraries ``ldd`` reports "not found" for the plugin and its dependencies (None without ldd)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return None
    try:
        out = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    missing = [m.group(1) for m in re.finditer(r"^\s*(\S+)\s*=>\s*not found", out, re.MULTILINE)]
    return list(dict.fromkeys(missing))


def _missing_by_loading(plugin: Path | None) -> list[str]:
    """Libraries that fail to load, trying each known one and then the plugin itself."""
    missing = []
    for soname in [s for s in XCB_LIBRARIES if s not in NOT_NEEDED_BY_QT6]:
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(soname)
    if plugin is not None and not missing:
        try:
            ctypes.CDLL(str(plugin), mode=os.RTLD_LAZY)
        except OSError as exc:  # "libfoo.so.1: cannot open shared object file: ..."
            m = re.search(r"(lib[^\s:/]+\.so[.\d]*): cannot open", str(exc))
            missing.append(m.group(1) if m else str(exc).split(":")[0])
    return missing


def missing_xcb_libraries(plugin: Path | None = None) -> list[str]:
    """The sonames the xcb plugin needs and cannot find (empty when it can load)."""
    plugin = plugin if plugin is not None else xcb_plugin()
    found = _missing_by_ldd(plugin) if plugin is not None else None
    return found if found is not None else _missing_by_loading(plugin)


def display_error(display: str) -> str | None:
    """Why no X connection to ``display`` can be made, or None when one can (it is closed again)."""
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return "libxcb.so.1 is missing (package libxcb1)"
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    conn = xcb.xcb_connect(display.encode(), None)
    try:
        if not conn or xcb.xcb_connection_has_error(conn):
            return f"cannot connect to the X display {display!r}"
    finally:
        if conn:
            xcb.xcb_disconnect(conn)
    return None


def _platform_requested(environ) -> str:
    """The platform Qt will use: the first of ``QT_QPA_PLATFORM`` ("xcb;offscreen" -> "xcb"), or ""."""
    value = environ.get("QT_QPA_PLATFORM", "").strip()
    return value.split(";")[0].split(":")[0].strip().lower()


def platform_problem(environ=None, platform: str | None = None) -> str | None:
    """One line saying why the window cannot open, or None when it can (or when we cannot tell).

    Linux only: checks that a display is given, that the xcb plugin's libraries are installed and
    that the X display answers. A platform set in ``QT_QPA_PLATFORM`` other than xcb is trusted.
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return None
    requested = _platform_requested(environ)
    if requested and requested != "xcb":
        return None  # offscreen, wayland, vnc, eglfs...: the user chose it
    if environ.get("WAYLAND_DISPLAY") and not requested:
        return None  # a Wayland session: Qt picks its wayland plugin (xcb only as a fallback)
    display = environ.get("DISPLAY", "")
    if not display:
        return ("no display to open the window on (DISPLAY is not set): start photomend-gui in a desktop "
                f"session, under xvfb-run, or set {HEADLESS_HINT}")
    missing = missing_xcb_libraries()
    if missing:
        packages = " ".join(dict.fromkeys(debian_package(s) for s in missing))
        return (f"Qt's xcb platform plugin cannot load: {', '.join(missing)} missing; on Debian/Ubuntu "
                f"install them with: apt-get install {packages} (or set {HEADLESS_HINT})")
    problem = display_error(display)
    if problem:
        return f"{problem}: start an X server (or xvfb-run), fix DISPLAY, or set {HEADLESS_HINT}"
    return None
