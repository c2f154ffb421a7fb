"""Fixtures for the reliability tests: a tiny random-init model bundle, one torch thread, figures.

Torch runs on one thread here: on a loaded 2-core machine oneDNN's thread pool spends far more
time waiting than computing for 64-pixel photos (measured: ~1 s per photo on two threads against
~10 ms on one), and these tests are about behaviour, not speed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.bundles import build_tiny_bundle

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


build_bundle = build_tiny_bundle


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("reliability-models") / "tiny")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def restorer(bundle):
    from engine.inference.runtime import Restorer

    return Restorer(bundle, "cpu")


def subprocess_env() -> dict[str, str]:
    """Environment for ``photomend`` child processes: one compute thread, this checkout importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def record_figure(name: str, value) -> None:
    """Print a measured figure and, when ``PHOTOMEND_FIGURES`` names a file, append it there as JSON."""
    print(f"FIGURE {name} = {value}")
    target = os.environ.get("PHOTOMEND_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"name": name, "value": value}) + "\n")
