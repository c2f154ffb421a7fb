"""The walls of the house, as code (docs/ARCHITECTURE.md draws them):

- engine never imports Qt; desktop never imports torch;
- inference (engine/inference, engine/jobs, engine/io) never imports training, tools or the CLI;
- engine/training never imports the CLI (engine.cli, engine.commands);
- engine/models defines no loss;
- the bundle's file names are written in engine/bundle.py only;
- no module in engine/ or desktop/ is over 600 lines.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600


def _imports(path: Path) -> set[str]:
    """Every absolute module named by an import anywhere in the file (lazy imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def _under(modules: set[str], *prefixes: str) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)}


def _files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", _files("engine"), ids=_ids)
def test_engine_never_imports_qt(path):
    bad = _top(_imports(path)) & {"PySide6", "PyQt5", "PyQt6", "shiboken6", "desktop"}
    assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", _files("desktop"), ids=_ids)
def test_desktop_never_imports_torch(path):
    bad = _top(_imports(path)) & {"torch", "torchvision", "open_clip", "safetensors"}
    assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", _files("engine/inference", "engine/jobs", "engine/io"), ids=_ids)
def test_inference_never_imports_training_tools_or_the_cli(path):
    bad = _under(_imports(path), "engine.training", "engine.tools", "engine.cli", "engine.commands")
    assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", _files("engine/training"), ids=_ids)
def test_training_never_imports_the_cli(path):
    bad = _under(_imports(path), "engine.cli", "engine.commands")
    assert not bad, f"{path} imports {bad}"


_LOSS_CALLS = {"cross_entropy", "binary_cross_entropy", "binary_cross_entropy_with_logits", "mse_loss",
               "l1_loss", "smooth_l1_loss", "nll_loss", "kl_div", "logsigmoid"}


def _losses_defined(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and "loss" in node.name.lower():
            found.append(node.name)
        elif isinstance(node, ast.Attribute) and (node.attr in _LOSS_CALLS or node.attr.endswith("Loss")):
            found.append(node.attr)
    return found


@pytest.mark.parametrize("path", _files("engine/models"), ids=_ids)
def test_models_define_no_loss(path):
    assert not _losses_defined(path), f"{path} defines or calls a loss: {_losses_defined(path)}"


@pytest.mark.parametrize("path", _files("engine", "desktop"), ids=_ids)
def test_no_module_is_over_600_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path}: {n} lines (at most {MAX_LINES})"


def test_the_scanners_see_what_they_look_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom torch import nn\n\ndef f():\n    from engine.cli import UsageError\n"
                     "    import engine.training.common\n\n"
                     "def slot_loss(x):\n    return nn.functional.cross_entropy(x, x)\n")
    found = _imports(probe)
    assert "torch" in _top(found)
    assert _under(found, "engine.cli") == {"engine.cli", "engine.cli.UsageError"}
    assert _under(found, "engine.training") == {"engine.training.common"}
    assert set(_losses_defined(probe)) == {"slot_loss", "cross_entropy"}


def test_engine_import_does_not_load_qt():
    import subprocess
    import sys

    code = ("import sys, engine.jobs.api, engine.cli; engine.cli.build_parser(); print('PySide6' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
