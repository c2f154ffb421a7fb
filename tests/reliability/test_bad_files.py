"""Bad files inside a batch: each one fails with one clear line in the report, the good files beside
them are restored, nothing hangs, and the batch path survives hypothesis-generated corruptions.

Figures: ``PHOTOMEND_FIGURES=figures.jsonl .venv/bin/pytest tests/reliability/test_bad_files.py -s``
(``PHOTOMEND_FUZZ_BATCH_CASES`` sets the number of fuzzed batches, default 25; slow run: ``PHOTOMEND_FUZZ_BATCH_SLOW``, default 1000).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.cli import main as photomend
from engine.io.reader import IMAGE_SUFFIXES
from engine.jobs.batch import MANIFEST_NAME, collect_inputs, run_batch
from engine.jobs.events import BatchSettings
from tests.reliability.conftest import record_figure
from tests.reliability.corpus import (
    check_one_line_error,
    corrupted_file,
    seed_files,
    with_declared_size,
)

BATCH_CASES = int(os.environ.get("PHOTOMEND_FUZZ_BATCH_CASES", "25"))
SLOW_BATCH_CASES = int(os.environ.get("PHOTOMEND_FUZZ_BATCH_SLOW", "1000"))

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def gif_declaring(data: bytes, width: int, height: int) -> bytes:
    """A GIF whose screen and first image descriptor declare ``width`` x ``height``."""
    buf = bytearray(data)
    buf[6:10] = struct.pack("<HH", width, height)
    at = buf.index(b"\x2c", 13)  # the first image descriptor (after the global palette)
    buf[at + 5:at + 9] = struct.pack("<HH", width, height)
    return bytes(buf)


def tiff_declaring_height(data: bytes, height: int) -> bytes:
    """A little-endian TIFF whose ImageLength tag (257) says ``height`` (its strips stay as they are)."""
    buf = bytearray(data)
    assert buf[:4] == b"II*\0"
    ifd = struct.unpack("<I", buf[4:8])[0]
    for i in range(struct.unpack("<H", buf[ifd:ifd + 2])[0]):
        at = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", buf[at:at + 4])
        if tag == 257:
            buf[at + 8:at + 12] = struct.pack("<HH", min(height, 65535), 0) if kind == 3 else struct.pack("<I", height)
    return bytes(buf)


def bad_folder(folder: Path) -> tuple[set[str], set[str]]:
    """Write good and bad files into ``folder``; return (names that must be restored, names that must fail)."""
    seeds = seed_files()
    folder.mkdir(parents=True)
    good = {
        "good photo.jpg": seeds["photo.jpg"], "good.png": seeds["photo.png"], "good.tif": seeds["photo.tif"],
        "good.webp": seeds["photo.webp"], "1x1.png": seeds["one-pixel.png"], "1x1.jpg": seeds["one-pixel.jpg"],
        "animated gif named.png": seeds["animated.gif"], "sixteen.png": seeds["sixteen-bit.png"],
    }
    bad = {
        "zero bytes.jpg": b"",
        "text.jpg": b"this is a shopping list, not a photo\n",
        "huge declared.png": with_declared_size(seeds["photo.png"], 100_000, 100_000),
        "huge declared.jpg": with_declared_size(seeds["photo.jpg"], 65_535, 65_535),
        "blank bomb.jpg": with_declared_size(seeds["one-pixel.jpg"], 17_409, 8_566),  # found by the fuzzer
        "blank bomb gif.tif": gif_declaring(seeds["animated.gif"], 4_112, 34_304),  # found by the fuzzer
        "sliver.tif": tiff_declaring_height(seeds["multipage.tif"], 4_194_336),  # found by the fuzzer
        "truncated.jpg": seeds["photo.jpg"][: len(seeds["photo.jpg"]) // 2],
        "truncated.png": seeds["photo.png"][: len(seeds["photo.png"]) // 2],
        "truncated.tif": seeds["photo.tif"][: len(seeds["photo.tif"]) // 2],
        "truncated.webp": seeds["photo.webp"][: len(seeds["photo.webp"]) // 2],
    }
    for name, data in {**good, **bad}.items():
        (folder / name).write_bytes(data)
    (folder / "animated.gif").write_bytes(seeds["animated.gif"])  # not a supported suffix: not picked
    os.mkfifo(folder / "named pipe.jpg")  # would block a naive reader forever
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "folder.jpg").mkdir()
    return set(good), set(bad) | {"named pipe.jpg", "dangling.jpg"}


@pytest.mark.timeout(180)
def test_bad_files_fail_one_line_each_and_good_ones_are_restored(tmp_path, bundle):
    inputs, out, report_path = tmp_path / "in", tmp_path / "out", tmp_path / "report.json"
    good, bad = bad_folder(inputs)
    rc = photomend(["restore", str(inputs), "-o", str(out), "--model", str(bundle), "--report", str(report_path),
                    "--no-progress"])
    assert rc == 1
    report = json.loads(report_path.read_text())
    files = {Path(f["path"]).name: f for f in report["files"]}
    assert set(files) == good | bad  # the .gif and the folder named .jpg are not picked
    for name in good:
        entry = files[name]
        assert entry["status"] == "done", entry
        with Image.open(entry["output"]) as im:
            im.load()
    for name in bad:
        entry = files[name]
        assert entry["status"] == "failed" and entry["output"] is None or not Path(entry["output"]).exists()
        check_one_line_error(entry["error"], inputs / name)
    assert "limit" in files["huge declared.png"]["error"]
    assert "limit" in files["huge declared.jpg"]["error"]
    assert "not a regular file" in files["named pipe.jpg"]["error"]
    assert "corrupt JPEG" in files["blank bomb.jpg"]["error"]
    assert "corrupt GIF" in files["blank bomb gif.tif"]["error"]
    assert "corrupt TIFF" in files["sliver.tif"]["error"]
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != MANIFEST_NAME]
    assert leftovers == []
    record_figure("named_bad_files", {"restored": len(good), "failed_one_line": len(bad),
                                      "worst_seconds": max(f["seconds"] for f in report["files"])})


def fuzz_batches(tmp_path: Path, restorer, cases: int, derandomize: bool) -> Counter:
    tally: Counter = Counter()
    good_bytes = seed_files()["photo.png"]

    @settings(max_examples=cases, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(corrupted_file(), min_size=1, max_size=4))
    def case(samples):
        folder = tmp_path / "batch"
        shutil.rmtree(folder, ignore_errors=True)
        inputs, out = folder / "in", folder / "out"
        inputs.mkdir(parents=True)
        (inputs / "a good one.png").write_bytes(good_bytes)
        for i, (seed, data, suffix) in enumerate(samples):
            suffix = suffix if suffix in IMAGE_SUFFIXES else ".png"  # .gif is not collected
            (inputs / f"bad {i} {seed}{suffix}").write_bytes(data)
        pairs = collect_inputs([inputs])
        results = run_batch(pairs, BatchSettings(output_dir=out, tile=64), restorer)  # never raises
        assert len(pairs) == len(results) == len(samples) + 1
        for r in results:
            tally["files"] += 1
            tally[r.status] += 1
            tally["worst_seconds"] = max(tally.get("worst_seconds", 0.0), round(r.seconds, 2))  # a figure
            if r.status == "done":
                with Image.open(r.output) as im:
                    im.load()
            else:
                assert r.status == "failed", r
                check_one_line_error(r.error, Path(r.path))
        assert next(r for r in results if r.path.endswith("a good one.png")).status == "done"
        assert not [p for p in out.rglob(".*.part")]
        tally["batches"] += 1

    case()
    return tally


@pytest.mark.timeout(300)
def test_batch_survives_fuzzed_files(tmp_path, restorer):
    tally = fuzz_batches(tmp_path, restorer, BATCH_CASES, derandomize=True)
    assert tally["batches"] >= BATCH_CASES and tally["failed"] > 0
    record_figure("batch_fuzz_fast", dict(tally))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_batch_survives_fuzzed_files_long(tmp_path, restorer):
    tally = fuzz_batches(tmp_path, restorer, SLOW_BATCH_CASES, derandomize=False)
    assert tally["batches"] >= SLOW_BATCH_CASES
    record_figure("batch_fuzz_cases", dict(tally))


@pytest.mark.parametrize("kind", ["baseline", "progressive", "gif", "tiff strips", "tiff tiles", "tiff g4"])
def test_the_size_guards_pass_real_files(tmp_path, kind):
    """Flat gray is the smallest a real JPEG (~255 pixels a byte) or GIF (~1,200) gets; TIFF strips
    and tiles of every layout cover the whole declared image."""
    import tifffile

    from engine.io.reader import load_image

    path = tmp_path / {"gif": "flat.gif"}.get(kind, "flat.tif" if kind.startswith("tiff") else "flat.jpg")
    flat = Image.new("L", (1500, 1400), 128)
    if kind == "gif":
        flat.convert("P").save(path)
    elif kind == "tiff strips":
        tifffile.imwrite(path, np.asarray(flat.convert("RGB")), rowsperstrip=7)
    elif kind == "tiff tiles":
        tifffile.imwrite(path, np.asarray(flat.convert("RGB")), tile=(256, 256), compression="zlib")
    elif kind == "tiff g4":
        flat.convert("1").save(path, compression="group4")
    else:
        flat.save(path, quality=10, progressive=kind == "progressive", optimize=True)
    assert load_image(path).pixels.shape == (1400, 1500, 3)
