"""The plain-Python state objects: queue, settings file, comparison (no Qt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desktop.state import Comparison, JobQueue, Settings, SettingsStore
from engine.inference.guard import GuardDecision
from engine.jobs.api import Detection


def test_queue_adds_once_and_notifies():
    q = JobQueue()
    seen = []
    q.subscribe(lambda kind, i: seen.append((kind, i)))
    assert q.add([(Path("/p/a.jpg"), Path("/p")), (Path("/p/b.jpg"), Path("/p"))]) == 2
    assert q.add([(Path("/p/a.jpg"), Path("/p"))]) == 0
    assert len(q) == 2 and seen == [("reset", -1)]
    q.update(Path("/p/b.jpg"), status="running", tiles_done=1, tiles_todo=4)
    assert seen[-1] == ("changed", 1)
    assert q.jobs[1].fraction == 0.25
    assert q.overall_fraction() == pytest.approx(0.125)
    q.remove([0])
    assert q.index_of(Path("/p/b.jpg")) == 0 and q.job(Path("/p/a.jpg")) is None


def test_degradations_text_shows_confidence_and_override():
    q = JobQueue()
    q.add([(Path("a.png"), Path("."))])
    job = q.jobs[0]
    assert job.degradations_text() == ""
    job.detection = Detection(("noisy", "hazy"), {"noisy": 0.92, "hazy": 0.705})
    assert job.degradations_text() == "noisy 92%, hazy 70%"
    job.detection = Detection((), {"noisy": 0.1})
    assert job.degradations_text() == "none"
    q.set_override(job.path, ("blurry",))
    assert job.degradations_text() == "blurry (chosen)"
    q.set_override(job.path, None)
    job.detection, job.analysing = None, True
    assert job.degradations_text() == "analysing…"
    assert job.guard_text() == ""
    job.guard = GuardDecision(estimate=0.83, strength=1.0, name="noisy")
    assert job.guard_text() == "83%"
    job.guard = GuardDecision(estimate=0.3, strength=0.0, name="noisy")
    assert job.guard_text() == "kept"


def test_space_toggles_before_and_after():
    c = Comparison()
    seen = []
    c.subscribe(seen.append)
    c.toggle_before_after()
    assert (c.mode, c.showing) == ("toggle", "before")
    c.toggle_before_after()
    assert c.showing == "after"
    c.toggle_before_after()
    assert c.showing == "before" and seen == ["mode"] * 3
    c.set_mode("side")
    c.toggle_before_after()  # from a split or side view: the before first
    assert (c.mode, c.showing) == ("toggle", "before")
    with pytest.raises(ValueError):
        c.set_mode("flip")


def test_settings_round_trip_and_batch_settings(tmp_path):
    store = SettingsStore(tmp_path)
    calls = []
    store.subscribe(calls.append)
    store.set(output_dir=str(tmp_path / "out"), preset="Balanced", format="png", tile=256, naming="subfolder")
    assert len(calls) == 1
    again = SettingsStore(tmp_path)
    assert again.settings == store.settings
    bs = again.settings.batch_settings(("noisy",))
    assert (bs.steps, bs.format, bs.tile, bs.naming, bs.degradations) == (4, "png", 256, "subfolder", ("noisy",))
    assert bs.output_dir == tmp_path / "out" and bs.model_dir is None
    assert Settings().batch_settings.__doc__  # documented public API
    with pytest.raises(ValueError, match="output folder"):
        Settings().batch_settings()


def test_broken_or_hand_edited_settings_fall_back_to_defaults(tmp_path):
    (tmp_path / "settings.json").write_text("{not json")
    assert SettingsStore(tmp_path).settings == Settings()
    (tmp_path / "settings.json").write_text(json.dumps({"preset": "Ultra", "quality": 500, "unknown": 1, "tile": 64,
                                                        "strength": 250}))
    s = SettingsStore(tmp_path).settings
    assert (s.preset, s.quality, s.tile, s.strength) == ("Fast", 100, 64, 100)
    (tmp_path / "settings.json").write_text(json.dumps({"keep_clean": "yes", "recursive": 0}))
    s = SettingsStore(tmp_path).settings
    assert (s.keep_clean, s.recursive) == (Settings().keep_clean, Settings().recursive)
    (tmp_path / "settings.json").write_text(json.dumps({"strength": True, "tile": 64}))
    assert (SettingsStore(tmp_path).settings.strength, SettingsStore(tmp_path).settings.tile) == (100, 64)
    (tmp_path / "settings.json").write_text(json.dumps({"quality": float("inf")}))  # written as Infinity
    assert SettingsStore(tmp_path).settings == Settings()


def test_default_config_folder_honours_the_override(private_config):
    assert SettingsStore().folder == private_config


def test_comparison_clamps_and_notifies():
    c = Comparison()
    seen = []
    c.subscribe(seen.append)
    c.set_split(1.7)
    assert c.split == 1.0
    c.set_mode("side")
    with pytest.raises(ValueError):
        c.set_mode("stacked")
    c.set_view(1000.0, (1.0, 2.0))
    assert c.zoom == 32.0
    c.set_images(Path("a"), Path("b"))
    assert c.zoom is None and c.center is None
    assert seen == ["split", "mode", "view", "images"]


def test_settings_take_the_engines_schema(tmp_path):
    from engine.jobs.events import BatchSettings

    engine = BatchSettings(tmp_path)
    d = Settings()
    assert (d.naming, d.subfolder, d.quality, d.overwrite, d.keep_clean) == (
        engine.naming, engine.subfolder, engine.quality, engine.overwrite, engine.keep_clean)
    bs = Settings(output_dir=str(tmp_path), model_dir=str(tmp_path / "m"), device="cpu", strength=40).batch_settings()
    assert (bs.model_dir, bs.device, bs.strength) == (tmp_path / "m", "cpu", 0.4)
    job = bs.job_settings()
    assert type(job) is BatchSettings and job.strength == 0.4 and job.suffix == "_restored"
    assert not hasattr(job, "model_dir") and not hasattr(job, "device")
    (tmp_path / "settings.json").write_text(json.dumps({"naming": "flat", "overwrite": "always", "quality": 0}))
    s = SettingsStore(tmp_path).settings
    assert (s.naming, s.overwrite, s.quality) == (d.naming, d.overwrite, 1)
