"""The two walls of the house: engine never imports Qt, desktop never imports torch."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_top_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _files("engine"), ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_never_imports_qt(path):
    bad = _imported_top_modules(path) & {"PySide6", "PyQt5", "PyQt6", "shiboken6", "desktop"}
    assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", _files("desktop"), ids=lambda p: str(p.relative_to(ROOT)))
def test_desktop_never_imports_torch(path):
    bad = _imported_top_modules(path) & {"torch", "torchvision", "open_clip", "safetensors"}
    assert not bad, f"{path} imports {bad}"


def test_scanner_detects_a_forbidden_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom torch import nn\n")
    assert "torch" in _imported_top_modules(probe)


def test_engine_import_does_not_load_qt():
    import subprocess
    import sys

    code = "import sys, engine.api, engine.cli; engine.cli.build_parser(); print('PySide6' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
