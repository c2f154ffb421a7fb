"""Checks of the PyInstaller build (build.spec, packaging/).

The frozen self-tests need an existing ``dist/photomend`` (``make package``, several minutes and
about 5 GB): they are marked slow and skip with an explicit reason when the folder is absent, so
CI's ``make test`` stays within its time budget; ``make package-test`` builds then runs them.
Set PHOTOMEND_DIST to test a bundle somewhere else; PHOTOMEND_REQUIRE_DIST=1 turns the skip into a
failure.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIST = Path(os.environ.get("PHOTOMEND_DIST", ROOT / "dist" / "photomend"))
EXE_SUFFIX = ".exe" if sys.platform == "win32" else ""


def _top_level_imports(path: Path) -> list[str]:
    """Module names imported by ``path``, in execution order (nested blocks included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append((node.lineno, node.module))
    return [name for _, name in sorted(names)]


def test_gui_entry_imports_torch_before_qt():
    names = _top_level_imports(ROOT / "packaging" / "photomend_gui.py")
    first_qt = next(i for i, n in enumerate(names) if n.startswith(("PySide6", "desktop")))
    assert "torch" in names[:first_qt], names


@pytest.mark.parametrize("script", ["photomend_cli.py", "photomend_gui.py"])
def test_entry_scripts_call_freeze_support(script):
    text = (ROOT / "packaging" / script).read_text(encoding="utf-8")
    assert "multiprocessing.freeze_support()" in text


def test_spec_bundles_resources_and_both_executables():
    spec = (ROOT / "build.spec").read_text(encoding="utf-8")
    ast.parse(spec)
    for needle in ('collect_data_files("open_clip")', '"resources")', 'name="photomend"', 'name="photomend-gui"'):
        assert needle in spec, needle


def _copy_bundle(dst: Path) -> Path:
    """Copy the bundle elsewhere (hard links when possible: same bytes, different path, instant)."""
    try:
        shutil.copytree(DIST, dst, symlinks=True, copy_function=os.link)
    except OSError:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(DIST, dst, symlinks=True)
    return dst


def _run_clean(exe: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``exe`` with no Python environment: no VIRTUAL_ENV, PYTHONPATH, PYTHONHOME or venv on PATH.

    No DISPLAY either: the GUI's self-test must pick Qt's offscreen platform by itself.
    """
    env = {"HOME": str(cwd), "PATH": "/usr/bin:/bin"}
    if sys.platform == "win32":
        env = {"SYSTEMROOT": os.environ.get("SYSTEMROOT", r"C:\Windows"), "USERPROFILE": str(cwd)}
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def moved_bundle(tmp_path_factory):
    if not (DIST / f"photomend{EXE_SUFFIX}").is_file():
        if os.environ.get("PHOTOMEND_REQUIRE_DIST") == "1":  # set by `make package-test`
            pytest.fail(f"no PyInstaller bundle at {DIST}")
        pytest.skip(f"no PyInstaller bundle at {DIST}: run `make package` (or `make package-test`) first")
    return _copy_bundle(tmp_path_factory.mktemp("moved") / "photomend")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["photomend", "photomend-gui"])
def test_frozen_self_test_passes_from_moved_copy(moved_bundle, name, tmp_path):
    result = _run_clean(moved_bundle / f"{name}{EXE_SUFFIX}", "--self-test", cwd=tmp_path)
    assert result.returncode == 0, f"{name} --self-test exit {result.returncode}\n{result.stdout}\n{result.stderr}"


@pytest.mark.slow
def test_frozen_cli_lists_every_command(moved_bundle, tmp_path):
    result = _run_clean(moved_bundle / f"photomend{EXE_SUFFIX}", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from engine.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    missing = [name for name in subparsers.choices if name not in result.stdout]
    assert not missing, f"commands missing from the frozen CLI (rebuild the bundle?): {missing}"
