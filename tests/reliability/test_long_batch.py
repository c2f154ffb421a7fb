"""Long batches: resident memory stays flat over hundreds of photos.

RSS is read with psutil from the batch's event callback after every photo. The always-run test
restores ``PHOTOMEND_LONG_FAST`` photos (default 150) and compares photo 50 with the rest; the slow
one restores ``PHOTOMEND_LONG_PHOTOS`` (default 500), the figure in docs/RELIABILITY.md::

    PHOTOMEND_FIGURES=figures.jsonl .venv/bin/pytest tests/reliability/test_long_batch.py -m slow -s
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import psutil
import pytest
from PIL import Image

from engine.jobs.batch import collect_inputs, run_batch
from engine.jobs.events import BatchSettings
from tests.reliability.conftest import record_figure
from tests.reliability.corpus import photo_pixels

MB = 1 << 20
FAST_PHOTOS = int(os.environ.get("PHOTOMEND_LONG_FAST", "150"))
SLOW_PHOTOS = int(os.environ.get("PHOTOMEND_LONG_PHOTOS", "500"))
PROBE_AT = 50  # photos restored before the baseline is taken (caches, allocator pools warmed up)


def make_photos(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(photo_pixels(64, 64, seed=i)).save(folder / f"p{i:04d}{'.jpg' if i % 2 else '.png'}")


def rss_over_batch(tmp_path: Path, restorer, n: int) -> dict:
    inputs, out = tmp_path / "in", tmp_path / "out"
    make_photos(inputs, n)
    gc.collect()
    process = psutil.Process()
    rss: list[int] = []

    def on_event(event) -> None:
        if event.kind in ("done", "failed", "skipped"):
            rss.append(process.memory_info().rss)

    results = run_batch(collect_inputs([inputs]), BatchSettings(output_dir=out), restorer, on_event)
    assert [r.status for r in results] == ["done"] * n, [r.error for r in results if r.error][:3]
    base = rss[PROBE_AT - 1]
    growth = max(rss[PROBE_AT:]) - base
    return {"photos": n, "rss_at_photo_50_mb": round(base / MB, 1), "peak_after_mb": round(max(rss[PROBE_AT:]) / MB, 1),
            "growth_mb": round(growth / MB, 1), "end_minus_50_mb": round((rss[-1] - base) / MB, 1)}


@pytest.mark.timeout(600)
def test_memory_stays_flat_over_a_batch(tmp_path, restorer):
    figures = rss_over_batch(tmp_path, restorer, FAST_PHOTOS)
    assert figures["growth_mb"] < 100, figures
    record_figure("long_batch_fast", figures)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_memory_stays_flat_over_500_photos(tmp_path, restorer):
    figures = rss_over_batch(tmp_path, restorer, SLOW_PHOTOS)
    assert figures["growth_mb"] < 100, figures
    record_figure("long_batch_500", figures)
