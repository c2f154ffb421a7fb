"""Paths from real archives: unicode, spaces and undecodable bytes in names, symlink loops in a
recursive scan, and an output folder inside the input folder (its files are never restored again)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.cli import main as photomend
from engine.jobs.batch import collect_inputs
from tests.reliability.conftest import subprocess_env
from tests.reliability.corpus import photo_pixels

NAMES = [
    "Été 2019 — plage #1.jpg",
    "写真/おばあちゃん 1962.png",
    "фото/с  двумя  пробелами .tif",
    "🌅 sunset (copy).webp",
    "it's \"quoted\" & [odd] {chars};.png",
    " leading space.jpg",
    "deep/a b/c d/e f.bmp",
]


def write(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo_pixels(40, 48, seed)).save(path)
    return path


@pytest.fixture
def archive(tmp_path) -> Path:
    """A recursive input tree with awkward names and symlink loops."""
    root = tmp_path / "Фотоархив 2024"
    for i, name in enumerate(NAMES):
        write(root / name, i)
    raw = os.fsencode(root) + b"/caf\xe9 latin-1.png"  # a name that is not UTF-8 at all
    write(Path(os.fsdecode(raw)), 9)
    (root / "deep" / "loop to top").symlink_to(root, target_is_directory=True)
    (root / "deep" / "a b" / "loop to self").symlink_to(root / "deep" / "a b", target_is_directory=True)
    (root / ".hidden").mkdir()
    write(root / ".hidden" / "not me.png")
    return root


def test_collect_handles_loops_and_names(archive):
    found = collect_inputs([archive], recursive=True)
    names = sorted(str(p.relative_to(archive)) for p, _ in found)
    assert len(names) == len(NAMES) + 1 == len({p.resolve() for p, _ in found})  # each photo once
    assert sorted(NAMES + [os.fsdecode(b"caf\xe9 latin-1.png")]) == names


@pytest.mark.timeout(180)
def test_cli_restores_awkward_names_and_never_reprocesses_its_outputs(archive, bundle, tmp_path):
    out = archive / "restored"  # the output folder lives inside the input folder
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "engine", "restore", str(archive), "-o", str(out), "--recursive",
           "--suffix", " (restored)", "--model", str(bundle), "--no-progress", "--summary", "--report", str(report)]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, timeout=170)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    files = json.loads(report.read_text())["files"]
    assert len(files) == len(NAMES) + 1 and {f["status"] for f in files} == {"done"}
    for f in files:
        rel = Path(f["path"]).relative_to(archive)
        assert Path(f["output"]) == out / rel.parent / f"{rel.stem} (restored){rel.suffix}"
        with Image.open(f["output"]) as im:
            im.load()

    # a second and a third run (one forced) see the same inputs: outputs are never taken as inputs
    for extra in ([], ["--overwrite"]):
        assert photomend(cmd[3:] + extra) == 0
        again = json.loads(report.read_text())["files"]
        assert sorted(f["path"] for f in again) == sorted(f["path"] for f in files)
        assert {f["status"] for f in again} == ({"skipped"} if not extra else {"done"})
    assert not (out / "restored").exists()
    outputs = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(outputs) == len(NAMES) + 1


def test_output_folder_equal_to_input_folder_is_a_clear_usage_error(tmp_path, bundle, capsys):
    folder = tmp_path / "photos"
    write(folder / "a.png")
    rc = photomend(["restore", str(folder), "-o", str(folder), "--suffix", "_r", "--model", str(bundle)])
    err = capsys.readouterr().err
    assert rc == 2 and "the output folder is the input folder" in err and len(err.strip().splitlines()) == 1


def test_single_files_inside_the_output_folder_are_left_out(tmp_path, bundle):
    folder = tmp_path / "photos"
    photo = write(folder / "a.png")
    out = folder / "out"
    assert photomend(["restore", str(photo), "-o", str(out), "--suffix", "_r", "--model", str(bundle),
                      "--no-progress"]) == 0
    produced = out / "a_r.png"
    assert produced.is_file()
    found = collect_inputs([folder, produced], recursive=True, exclude=out)
    assert [p for p, _ in found] == [photo]
