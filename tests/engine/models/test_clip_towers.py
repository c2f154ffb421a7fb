"""What a restore imports: open_clip's towers without torchvision, ``torch._dynamo`` or timm, and the
rest of open_clip (and torchvision) intact for whoever needs them afterwards.

Each check runs in a fresh interpreter: the test process itself has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bundles import build_tiny_bundle

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("torchvision", "torch._dynamo", "timm", "open_clip.factory", "open_clip.coca_model")


def run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def test_loading_a_restorer_leaves_torchvision_dynamo_and_timm_out(bundle):
    got = run_python(f"""
import json, sys
import numpy as np
from engine.jobs.api import RestoreOptions
from engine.inference.runtime import Restorer
restorer = Restorer({str(bundle)!r}, device="cpu")
out = restorer.restore(np.random.default_rng(0).random((64, 80, 3), dtype=np.float32), RestoreOptions(tile=64))
print(json.dumps({{"shape": list(out.image.shape), "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
""")
    assert got == {"shape": [64, 80, 3], "loaded": []}


def test_the_whole_of_open_clip_and_torchvision_still_import_afterwards():
    got = run_python("""
import json, sys
from engine.models.clip_towers import import_open_clip
lean = import_open_clip()
lean_only = "open_clip.factory" not in sys.modules and "torchvision" not in sys.modules
import open_clip
import open_clip.model
import torchvision
import torchvision.ops
names = open_clip.list_models()  # runs open_clip's __init__ in the same module
print(json.dumps({"lean_only": lean_only, "same_module": open_clip is lean,
                  "same_class": open_clip.CLIP is open_clip.model.CLIP,
                  "has_models": "ViT-B-32" in names, "factory": callable(open_clip.create_model),
                  "nms": callable(torchvision.ops.nms), "transforms": hasattr(torchvision, "transforms")}))
""")
    assert got == {"lean_only": True, "same_module": True, "same_class": True, "has_models": True, "factory": True,
                   "nms": True, "transforms": True}


def test_an_already_imported_open_clip_is_returned_as_it_is():
    import open_clip

    from engine.models.clip_towers import import_open_clip

    assert import_open_clip() is open_clip


def test_a_failing_shortcut_falls_back_to_the_ordinary_import():
    got = run_python("""
import json, sys
from engine.models import clip_towers
def broken():
    import open_clip.model  # part of the way, then a failure: sys.modules must be put back
    raise ImportError("simulated")
clip_towers._lean_import = broken
module = clip_towers.import_open_clip()
print(json.dumps({"full": "open_clip.factory" in sys.modules, "registered": sys.modules["open_clip"] is module,
                  "clip": hasattr(module, "CLIP") and hasattr(module, "create_model")}))
""")
    assert got == {"full": True, "registered": True, "clip": True}


def test_the_command_line_parses_without_torch():
    got = run_python("""
import contextlib, io, json, sys
from engine.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
    try:
        main(["restore", "--help"])
    except SystemExit:
        pass
with contextlib.redirect_stderr(io.StringIO()):
    usage = main(["restore", "missing.jpg", "-o", "out", "--steps", "0"])  # a usage error, exit status 2
print(json.dumps({"usage": usage, "torch": "torch" in sys.modules, "numpy_ok": True}))
""")
    assert got == {"usage": 2, "torch": False, "numpy_ok": True}
