"""Fuzz the image reader with hypothesis-generated corruptions of real JPEG, PNG, TIFF, WebP, BMP
and GIF files: every read returns a well-formed image or one ImageReadError line naming the file,
within 30 s, and every image that decodes can be written back.

The always-run test draws ``PHOTOMEND_FUZZ_FAST`` cases (default 1,000, derandomized); the slow one
``PHOTOMEND_FUZZ_CASES`` (default 10,000, random). Cases slower than 1 s are kept in ``PHOTOMEND_FUZZ_KEEP_SLOW`` when it names a folder.
The figures in docs/RELIABILITY.md come from::

    PHOTOMEND_FIGURES=figures.jsonl .venv/bin/pytest tests/reliability/test_fuzz_reader.py -m slow -s
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.reliability.conftest import record_figure
from tests.reliability.corpus import check_read, corrupted_file

FAST_CASES = int(os.environ.get("PHOTOMEND_FUZZ_FAST", "1000"))
SLOW_CASES = int(os.environ.get("PHOTOMEND_FUZZ_CASES", "10000"))

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about every odd tag


def fuzz_reader(folder: Path, cases: int, derandomize: bool) -> Counter:
    folder.mkdir(parents=True, exist_ok=True)
    tally: Counter = Counter()
    worst = [0.0]

    @settings(max_examples=cases, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck))
    @given(corrupted_file())
    def case(sample):
        seed, data, suffix = sample
        path = folder / f"fuzz case {seed}{suffix}"
        path.write_bytes(data)
        outcome, seconds = check_read(path, folder)
        tally[outcome] += 1
        tally["cases"] += 1
        if seconds > worst[0]:
            worst[0] = seconds
            tally["worst_case"] = f"{seed} -> {len(data)} bytes as {suffix}: {outcome}"
        if seconds > 1.0 and os.environ.get("PHOTOMEND_FUZZ_KEEP_SLOW"):  # keep slow cases to study
            keep = Path(os.environ["PHOTOMEND_FUZZ_KEEP_SLOW"])
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{seconds:06.2f}s {seed}{suffix}").write_bytes(data)

    case()
    tally["worst_ms"] = round(worst[0] * 1000)
    return tally


@pytest.mark.timeout(300)
def test_reader_fuzz_fast(tmp_path):
    tally = fuzz_reader(tmp_path / "fuzz", FAST_CASES, derandomize=True)
    assert tally["cases"] >= FAST_CASES
    assert tally["ok"] > 0 and tally["error"] > 0  # both paths really exercised
    record_figure("reader_fuzz_fast", dict(tally))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_reader_fuzz_10k(tmp_path):
    tally = fuzz_reader(tmp_path / "fuzz", SLOW_CASES, derandomize=False)
    assert tally["cases"] >= SLOW_CASES
    record_figure("reader_fuzz_cases", dict(tally))
