"""Analysis before restoring: detected once, reused by the batch, redone for an edited file."""

from __future__ import annotations

import os

import pytest

from engine.inference.analysis import AnalysisCache
from engine.jobs.batch import run_batch
from engine.jobs.events import BatchSettings
from tests.builders import write_photo
from tests.engine.inference.test_runtime import fake_restorer


class CountingDetector:
    """Wraps a detector and counts its full analyses."""

    def __init__(self, inner):
        self.inner, self.analyses = inner, 0

    def analyze(self, image):
        self.analyses += 1
        return self.inner.analyze(image)

    def condition_for(self, image, names):
        return self.inner.condition_for(image, names)

    def detect(self, image):
        return self.analyze(image).detection


@pytest.fixture
def restorer():
    r = fake_restorer()
    r.detector = CountingDetector(r.detector)
    return r


def test_the_batch_reuses_the_analysis(tmp_path, restorer):
    photos = [write_photo(tmp_path / "in" / f"{n}.png", seed=i) for i, n in enumerate("ab")]
    cache = AnalysisCache(restorer)
    detections = [cache.analyze(p) for p in photos]
    assert [d.degradations for d in detections] == [("noisy",), ("noisy",)]
    assert restorer.detector.analyses == 2 and len(cache) == 2
    assert cache.analyze(photos[0]) == detections[0] and restorer.detector.analyses == 2  # kept

    events = []
    results = run_batch([(p, p.parent) for p in photos], BatchSettings(tmp_path / "out"), restorer,
                        events.append, analyses=cache)
    assert [r.status for r in results] == ["done", "done"]
    assert restorer.detector.analyses == 2  # not detected again
    assert [e.detection for e in events if e.kind == "detected"] == detections
    assert results[0].degradations == ["noisy"] and results[0].scores["noisy"] == pytest.approx(0.9)


def test_an_edited_photo_or_another_restorer_is_analysed_again(tmp_path, restorer):
    photo = write_photo(tmp_path / "a.png")
    cache = AnalysisCache(restorer)
    cache.analyze(photo)
    assert cache.lookup(photo, restorer) is not None
    assert cache.lookup(photo, fake_restorer()) is None  # the condition is this model's embedding
    st = photo.stat()
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cache.lookup(photo, restorer) is None
    run_batch([(photo, photo.parent)], BatchSettings(tmp_path / "out"), restorer, analyses=cache)
    assert restorer.detector.analyses == 2
    assert cache.lookup(tmp_path / "missing.png", restorer) is None


def test_an_override_skips_the_analysis(tmp_path, restorer):
    photo = write_photo(tmp_path / "a.png")
    cache = AnalysisCache(restorer)
    cache.analyze(photo)
    results = run_batch([(photo, photo.parent)], BatchSettings(tmp_path / "out", degradations=("hazy",)),
                        restorer, analyses=cache)
    assert results[0].degradations == ["hazy"]
    assert restorer.detector.inner.override_calls == 1


def test_the_cache_keeps_the_newest_when_full(tmp_path, restorer):
    photos = [write_photo(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    cache = AnalysisCache(restorer, limit=2)
    for p in photos:
        cache.analyze(p)
    assert len(cache) == 2
    assert cache.lookup(photos[0], restorer) is None and cache.lookup(photos[2], restorer) is not None


def test_an_unreadable_file_raises_and_is_not_kept(tmp_path, restorer):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    cache = AnalysisCache(restorer)
    with pytest.raises(Exception, match="bad.png"):
        cache.analyze(bad)
    assert len(cache) == 0
