"""Crashes and hostile disks: SIGKILL in the middle of a batch, a read-only output folder, a full disk.

While a ``photomend restore`` child runs, the test polls the output folder and fully decodes every
visible output file the moment it appears (and the manifest, which must always parse). After each
SIGKILL the batch is started again; the final rerun must skip exactly the outputs that were
recorded as finished, restore exactly the rest, and leave every input byte-for-byte unchanged.

Figures: ``PHOTOMEND_FIGURES=figures.jsonl .venv/bin/pytest tests/reliability/test_crash.py -s``
(always-run: 2 kills; ``-m slow``: ``PHOTOMEND_KILLS`` kills, default 10, and a kill that lands
while an output is being written).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import main as photomend
from engine.jobs.batch import MANIFEST_NAME
from tests.reliability.conftest import record_figure, subprocess_env
from tests.reliability.corpus import photo_pixels

SLOW_KILLS = int(os.environ.get("PHOTOMEND_KILLS", "10"))


def make_inputs(folder: Path, n: int, size=(96, 128)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        ext = (".png", ".jpg", ".tif")[i % 3]
        path = folder / f"photo {i:03d}{ext}"
        Image.fromarray(photo_pixels(*size, seed=i)).save(path)
        paths.append(path)
    return paths


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def visible_outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))


class Watcher:
    """Decodes every visible output (each new inode/size/mtime once) and parses the manifest."""

    def __init__(self, out: Path):
        self.out, self.seen, self.decoded, self.manifests = out, set(), 0, 0

    def poll(self) -> int:
        if not self.out.exists():
            return 0
        files = visible_outputs(self.out)
        for path in files:
            try:
                st = path.stat()
            except FileNotFoundError:  # replaced between listing and stat: the next poll sees it
                continue
            key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
            if key in self.seen:
                continue
            with Image.open(path) as im:  # a partial file would raise here
                im.load()
            self.seen.add(key)
            self.decoded += 1
        manifest = self.out / MANIFEST_NAME
        if manifest.exists():
            try:
                json.loads(manifest.read_text())
            except FileNotFoundError:
                pass
            self.manifests += 1
        return len(files)


def restore_cmd(inputs: Path, out: Path, bundle: Path, report: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "engine", "restore", str(inputs), "-o", str(out), "--model", str(bundle),
           "--no-progress", "--tile", "64"]
    return cmd + (["--report", str(report)] if report else [])


def kill_mid_batch(cmd: list[str], watcher: Watcher, target: int, delay: float, log: Path) -> bool:
    """Start ``cmd``, wait until ``target`` outputs are visible, wait ``delay`` more, SIGKILL it.
    Returns whether it was still running when killed."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh, env=subprocess_env())
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and watcher.poll() < target and time.monotonic() < deadline:
            time.sleep(0.005)
        end = time.monotonic() + delay
        while proc.poll() is None and time.monotonic() < end:
            watcher.poll()
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    watcher.poll()
    return alive


def crash_and_rerun(tmp_path: Path, bundle: Path, kills: int, n_photos: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    inputs, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "report.json"
    make_inputs(inputs, n_photos)
    before = checksums(inputs)
    watcher = Watcher(out)
    survived = 0
    for _ in range(kills):
        done_so_far = len(visible_outputs(out)) if out.exists() else 0
        remaining = n_photos - done_so_far
        if remaining <= 2:
            break
        target = done_so_far + int(rng.integers(1, max(2, min(remaining - 1, n_photos // kills))))
        survived += kill_mid_batch(restore_cmd(inputs, out, bundle), watcher, target,
                                   float(rng.uniform(0, 0.05)), tmp_path / "child.log")
    assert survived >= 1, (tmp_path / "child.log").read_text()[-2000:]
    assert checksums(inputs) == before

    entries = json.loads((out / MANIFEST_NAME).read_text())["entries"]
    recorded = {str(out / rel) for rel in entries if (out / rel).exists()}
    outputs_before = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in visible_outputs(out)}
    assert len(outputs_before) < n_photos  # the kills really left work to do

    proc = subprocess.run(restore_cmd(inputs, out, bundle, report), env=subprocess_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    watcher.poll()
    files = json.loads(report.read_text())["files"]
    skipped = {f["output"] for f in files if f["status"] == "skipped"}
    done = {f["output"] for f in files if f["status"] == "done"}
    assert skipped == recorded  # exactly the finished ones are skipped...
    assert len(done) == n_photos - len(recorded)  # ...and exactly the rest restored
    assert {str(p) for p in visible_outputs(out)} == skipped | done
    for path in skipped:
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == outputs_before[path]
    assert checksums(inputs) == before
    stale = [p.name for p in out.rglob(".*.part")]
    return {"kills": survived, "photos": n_photos, "skipped_on_rerun": len(skipped), "restored_on_rerun": len(done),
            "unrecorded_outputs_redone": len(set(outputs_before) - recorded), "outputs_decoded_while_running":
            watcher.decoded, "manifest_reads": watcher.manifests, "inputs_checked": len(before),
            "stale_hidden_part_files": len(stale)}


@pytest.mark.timeout(300)
def test_sigkill_mid_batch_then_rerun(tmp_path, bundle):
    figures = crash_and_rerun(tmp_path, bundle, kills=2, n_photos=24, seed=0)
    record_figure("sigkill_fast", figures)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_many_sigkills_then_rerun(tmp_path, bundle):
    figures = crash_and_rerun(tmp_path, bundle, kills=SLOW_KILLS, n_photos=120, seed=int(time.time()))
    record_figure("sigkill_slow", figures)


def kill_when_a_temporary_output_appears(inputs: Path, out: Path, bundle: Path, log: Path) -> tuple[bool, Watcher]:
    """Run a batch and SIGKILL it as soon as a ``.*.part`` appears; True when the kill left that file behind.

    The write can finish (rename) between seeing the temporary file and the kill landing, so a False
    means "the kill came just too late", not a failure.
    """
    watcher = Watcher(out)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(restore_cmd(inputs, out, bundle), stdout=fh, stderr=fh, env=subprocess_env())
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and any(out.glob(".*.part")):
                proc.send_signal(signal.SIGKILL)
                break
            watcher.poll()
    finally:
        proc.kill()
        proc.wait(timeout=60)
    watcher.poll()  # whatever is visible after the kill must decode
    return bool(list(out.glob(".*.part"))), watcher


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_while_an_output_is_being_written(tmp_path, bundle):
    """Kill while a temporary output exists: no visible file is partial, the rerun finishes it."""
    inputs = tmp_path / "in"
    make_inputs(inputs, 2, size=(600, 800))  # large enough that encoding takes a while
    before = checksums(inputs)
    for attempt in range(4):  # each attempt races the kill against the rename; retry when the rename won
        out = tmp_path / f"out{attempt}"
        mid_write, watcher = kill_when_a_temporary_output_appears(inputs, out, bundle, tmp_path / "child.log")
        if mid_write:
            break
    else:
        pytest.skip("no kill landed while a temporary output existed in 4 attempts")
    report = tmp_path / "report.json"
    rerun = subprocess.run(restore_cmd(inputs, out, bundle, report), env=subprocess_env(), capture_output=True,
                           timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert watcher.poll() == 2
    assert checksums(inputs) == before
    record_figure("sigkill_mid_write", {"killed_mid_write": 1, "attempts": attempt + 1, "visible_partial_files": 0,
                                        "stale_hidden_part_files": len(list(out.glob(".*.part")))})


# --------------------------------------------------------------------------- hostile disks


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(options) -> folder``: a small tmpfs, unmounted afterwards; skipped when mount is refused."""
    mounted = []

    def mount(options: str, name: str = "disk") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_read_only_output_folder_is_one_clear_error(tmp_path, bundle, tmpfs, capsys):
    inputs = tmp_path / "in"
    make_inputs(inputs, 3)
    before = checksums(inputs)
    ro = tmpfs("ro,size=1m", "readonly")
    for out in (ro, ro / "new sub folder"):
        rc = photomend(["restore", str(inputs), "-o", str(out), "--model", str(bundle), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert str(out) in err and "Read-only file system" in err
    assert checksums(inputs) == before


def test_report_on_a_read_only_disk_is_one_clear_error(tmp_path, bundle, tmpfs, capsys):
    inputs = tmp_path / "in"
    make_inputs(inputs, 2)
    ro = tmpfs("ro,size=1m", "readonly")
    rc = photomend(["restore", str(inputs), "-o", str(tmp_path / "out"), "--model", str(bundle), "--no-progress",
                    "--report", str(ro / "report.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "cannot write the report" in err and "Traceback" not in err
    assert len(visible_outputs(tmp_path / "out")) == 2


def test_full_disk_fails_file_by_file_then_a_rerun_finishes(tmp_path, bundle, tmpfs, capsys):
    inputs = tmp_path / "in"
    rng = np.random.default_rng(0)
    inputs.mkdir()
    for i in range(8):  # noise does not compress: each PNG is about 150 kB
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(inputs / f"noise {i}.png")
    before = checksums(inputs)
    disk = tmpfs("size=2m", "small disk")
    filler = disk / "filler.bin"
    filler.write_bytes(b"\0" * 1_400_000)
    out, report = disk / "out", tmp_path / "report.json"
    args = ["restore", str(inputs), "-o", str(out), "--model", str(bundle), "--no-progress", "--format", "png",
            "--report", str(report)]
    assert photomend(args) == 1
    capsys.readouterr()
    files = json.loads(report.read_text())["files"]
    failed = [f for f in files if f["status"] == "failed"]
    assert failed and len(failed) < len(files)
    for f in failed:
        assert "\n" not in f["error"] and "No space left on device" in f["error"], f["error"]
    for path in visible_outputs(out):
        with Image.open(path) as im:
            im.load()
    assert [p.name for p in out.glob(".*.part")] == []
    json.loads((out / MANIFEST_NAME).read_text())
    assert checksums(inputs) == before

    filler.unlink()  # free the space: the rerun restores only what failed
    assert photomend(args) == 0
    files = json.loads(report.read_text())["files"]
    assert sorted(f["status"] for f in files).count("done") == len(failed)
    assert len(visible_outputs(out)) == len(files)
    assert checksums(inputs) == before
    record_figure("full_disk", {"photos": len(files), "failed_when_full": len(failed), "rerun_restored": len(failed)})
