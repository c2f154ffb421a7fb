"""Held-out figures of detector training: the scores, and both region sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.training.detector_validation import ValidationSets, set_scores

VOCAB = ("hazy", "noisy", "blurry")


def test_set_scores_counts_exact_sets_f1_and_clean_false_alarms():
    true = [frozenset(), frozenset({"noisy"}), frozenset({"noisy", "hazy"}), frozenset()]
    pred = [frozenset(), frozenset({"noisy"}), frozenset({"noisy"}), frozenset({"blurry"})]
    s = set_scores(pred, true, VOCAB)
    assert s["exact"] == 0.5
    # hazy: tp 0 fn 1 -> 0; noisy: tp 2 -> 1.0; blurry never true: not averaged
    assert s["f1"] == pytest.approx(0.5)
    assert s["clean_false"] == 0.5


def test_validation_sets_use_both_renderers_and_score_a_model(tmp_path):
    from engine.models.daclip import DaClip, DaClipConfig
    from engine.training.region_pool import PoolSpec

    for i in range(2):
        rng = np.random.default_rng(i)
        Image.fromarray((rng.random((90, 120, 3)) * 255).astype(np.uint8)).save(tmp_path / f"p{i}.png")
    spec = PoolSpec(size=32, n_crops=2, region_min=48, region_max=64, renderers=("project",))
    sets = ValidationSets(tmp_path, spec, 6, seed=3)
    assert set(sets.sets) == {"train_renderers", "heldout_renderer"}
    views, true = sets.sets["heldout_renderer"]
    assert views.shape == (6, 3, 3, 32, 32) and len(true) == 6
    assert not torch.equal(views, sets.sets["train_renderers"][0])
    model = DaClip(DaClipConfig.for_clip_model("PhotoMend-RN-Tiny-Test", presence=True)).eval()
    for stage in ("base", "control"):
        figures = sets.evaluate(model, stage=stage)
        assert 0.0 <= figures["heldout_renderer"]["exact"] <= 1.0


def test_validation_sets_show_the_photos_as_they_are(tmp_path):
    """The training-only augmentations (recolour, turns, over-exposure) never reach the validation regions."""
    import dataclasses

    from engine.training.region_pool import PoolSpec

    Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)).save(tmp_path / "p.png")
    spec = PoolSpec(size=32, n_crops=1, region_min=48, region_max=64, renderers=("project",))
    augmented = dataclasses.replace(spec, photo_jitter=1.0, photo_turns=True, photo_highlights=1.0)
    plain, other = ValidationSets(tmp_path, spec, 4, seed=3), ValidationSets(tmp_path, augmented, 4, seed=3)
    for name in ("train_renderers", "heldout_renderer"):
        assert torch.equal(plain.sets[name][0], other.sets[name][0])
