"""The do-no-harm guard: its rule, and how the runtime, the batch and its report apply it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from engine.inference.detect import select_names
from engine.inference.guard import GuardConfig, GuardDecision, applied_strength, confidence, decide
from engine.inference.runtime import Restorer
from engine.jobs.api import Detection, RestoreOptions
from engine.jobs.batch import collect_inputs, run_batch, settings_record
from engine.jobs.events import BatchSettings
from tests.engine.inference.test_runtime import BlurModel, photo


class ScoredDetector:
    """A detector stub with fixed presence scores, detecting as the real one does (per-name thresholds)."""

    def __init__(self, scores: dict[str, float], thresholds: dict[str, float] | None = None):
        self.scores = dict(scores)
        self.thresholds = dict(thresholds or {})

    def analyze(self, image):
        names = select_names(self.scores, self.thresholds, 2)
        return SimpleNamespace(detection=Detection(names, self.scores), condition=torch.zeros(3, 4))

    def condition_for(self, image, names):
        return torch.ones(3, 4)

    def detect(self, image):
        return self.analyze(image).detection


def restorer_for(scores, thresholds=None) -> Restorer:
    return Restorer.from_parts(ScoredDetector(scores, thresholds), BlurModel(), "cpu")


# ------------------------------------------------------------------ the rule


def test_confidence_puts_every_threshold_at_one_half():
    assert confidence(0.5) == pytest.approx(0.5) and confidence(1.0) == pytest.approx(1.0)
    assert confidence(0.0) == 0.0
    assert confidence(0.2, threshold=0.2) == pytest.approx(0.5)
    assert confidence(0.6, threshold=0.2) == pytest.approx(0.75)  # halfway from the threshold to 1
    assert confidence(0.1, threshold=0.2) == pytest.approx(0.25)
    assert confidence(0.9, threshold=0.9) == pytest.approx(0.5)


def test_decide_keeps_the_input_without_a_confident_detection():
    assert decide((), {"hazy": 0.3}) == GuardDecision(0.0, 0.0, None)
    just = decide(("hazy",), {"hazy": 0.5})
    assert just.strength == 0.0 and just.keeps_input and "kept as is" in just.describe()
    sure = decide(("noisy", "hazy"), {"noisy": 0.95, "hazy": 0.55})
    assert sure.name == "noisy" and sure.strength == 1.0 and sure.estimate == pytest.approx(0.95)
    halfway = decide(("hazy",), {"hazy": 0.625})  # confidence 0.625: halfway up the 0.5-0.75 ramp
    assert halfway.strength == pytest.approx(0.5)


def test_decide_uses_the_calibrated_thresholds():
    scores = {"jpeg-compressed": 0.4}
    assert decide(("jpeg-compressed",), scores).strength == 0.0  # below the default 0.5
    calibrated = decide(("jpeg-compressed",), scores, {"jpeg-compressed": 0.2})
    assert calibrated.estimate == pytest.approx(0.625) and calibrated.strength == pytest.approx(0.5)


def test_config_is_checked_and_sets_the_ramp():
    with pytest.raises(ValueError, match="keep_below < full_above"):
        GuardConfig(keep_below=0.8, full_above=0.6)
    lenient = GuardConfig(keep_below=0.0, full_above=0.5)
    assert decide(("hazy",), {"hazy": 0.5}, config=lenient).strength == 1.0


def test_the_users_strength_is_a_cap():
    d = GuardDecision(0.9, 0.8, "noisy")
    assert applied_strength(1.0, d) == 0.8 and applied_strength(0.5, d) == 0.5
    assert applied_strength(0.7, None) == 0.7


# ------------------------------------------------------------------ the runtime


def test_guard_keeps_a_clean_photo():
    img = photo(96, 128)
    restorer = restorer_for({"hazy": 0.2, "noisy": 0.1})  # nothing detected
    events = []
    result = restorer.restore(img, RestoreOptions(), progress=events.append)
    assert np.array_equal(result.image, img) and restorer.model.calls == 0
    assert result.strength == 0.0 and result.guard.estimate == 0.0
    assert events[-1].message.startswith("guard: nothing detected")
    # the same photo with the guard off goes through the restorer
    assert not np.array_equal(restorer.restore(img, RestoreOptions(guard=None)).image, img)


def test_guard_leaves_a_confident_detection_alone():
    img = photo(96, 128)
    restorer = restorer_for({"noisy": 0.93, "hazy": 0.1})
    guarded = restorer.restore(img, RestoreOptions())
    unguarded = restorer.restore(img, RestoreOptions(guard=None))
    assert guarded.guard.strength == 1.0 and guarded.strength == 1.0 and unguarded.guard is None
    assert np.array_equal(guarded.image, unguarded.image) and not np.array_equal(guarded.image, img)


def test_an_unsure_detection_is_restored_part_way():
    img = photo(96, 128)
    restorer = restorer_for({"hazy": 0.625})
    full = restorer.restore(img, RestoreOptions(guard=None)).image
    part = restorer.restore(img, RestoreOptions())
    assert part.strength == pytest.approx(0.5)
    np.testing.assert_allclose(part.image, img + 0.5 * (full - img), atol=1e-6)
    capped = restorer.restore(img, RestoreOptions(strength=0.2))
    assert capped.strength == pytest.approx(0.2)
    np.testing.assert_allclose(capped.image, img + 0.2 * (full - img), atol=1e-6)


def test_forced_degradations_are_not_guarded():
    img = photo(96, 128)
    restorer = restorer_for({"hazy": 0.1})
    forced = restorer.restore(img, RestoreOptions(degradations=("noisy",)))
    assert forced.guard is None and forced.strength == 1.0 and not np.array_equal(forced.image, img)


def test_prepared_carries_the_estimate_and_a_later_option_decides_again():
    img = photo(64, 64)
    restorer = restorer_for({"hazy": 0.625})
    prepared = restorer.prepare(img, RestoreOptions())
    assert prepared.guard.estimate == pytest.approx(0.625)  # what the desktop row shows
    assert restorer.guard_decision(prepared, RestoreOptions(guard=None)) is None
    lenient = restorer.guard_decision(prepared, RestoreOptions(guard=GuardConfig(0.0, 0.5)))
    assert lenient.strength == 1.0
    assert restorer.prepare(img, RestoreOptions(guard=None)).guard is None


# ------------------------------------------------------------------ the batch and its report


def _write(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((photo(64, 80, seed) * 255).round().astype(np.uint8)).save(path)


def test_batch_reports_the_estimate_and_the_applied_strength(tmp_path):
    _write(tmp_path / "in" / "a.png")
    inputs = collect_inputs([tmp_path / "in"])
    events = []
    restorer = restorer_for({"hazy": 0.2})
    kept = run_batch(inputs, BatchSettings(tmp_path / "kept", tile=128), restorer, on_event=events.append)
    assert kept[0].status == "done" and kept[0].strength == 0.0
    assert kept[0].guard == {"estimate": 0.0, "strength": 0.0, "name": None}
    same = np.asarray(Image.open(tmp_path / "kept" / "a.png"))
    assert np.array_equal(same, np.asarray(Image.open(tmp_path / "in" / "a.png")))  # the photo kept
    detected = [e for e in events if e.kind == "detected"]
    assert detected[0].guard is not None and detected[0].guard.keeps_input
    json.dumps(kept[0].to_json())  # the report row serialises

    off = run_batch(inputs, BatchSettings(tmp_path / "off", tile=128, guard=None), restorer)
    assert off[0].guard is None and off[0].strength == 1.0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "off" / "a.png")), same)

    # a rerun skips with the stored decision; the guard's setting is part of the skip key
    again = run_batch(inputs, BatchSettings(tmp_path / "kept", tile=128), restorer)
    assert again[0].status == "skipped" and again[0].guard == kept[0].guard and again[0].strength == 0.0
    assert settings_record(BatchSettings(tmp_path, guard=None))["guard"] is None
    assert settings_record(BatchSettings(tmp_path)) != settings_record(BatchSettings(tmp_path, guard=None))


def test_the_analysis_cache_gives_the_estimate_for_the_queue_row(tmp_path):
    from engine.inference.analysis import AnalysisCache

    _write(tmp_path / "a.png")
    cache = AnalysisCache(restorer_for({"hazy": 0.625}))
    assert cache.guard(tmp_path / "a.png") is None  # not analysed yet
    cache.analyze(tmp_path / "a.png")
    decision = cache.guard(tmp_path / "a.png")
    assert decision.estimate == pytest.approx(0.625) and decision.strength == pytest.approx(0.5)
    assert "hazy 0.62" in decision.describe() or "hazy 0.63" in decision.describe()
    assert cache.guard(tmp_path / "missing.png") is None
