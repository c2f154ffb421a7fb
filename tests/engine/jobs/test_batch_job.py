"""The batch job (engine.jobs.batch.BatchJob): its pre-flight checks, its run and report; the settings schema."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from engine.jobs.api import JobError, RestoreOptions, SettingError
from engine.jobs.batch import BatchJob, NoBundledModel
from engine.jobs.events import BatchSettings
from tests.builders import write_photo
from tests.engine.inference.test_runtime import fake_restorer


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    write_photo(root / "a.jpg")
    write_photo(root / "trip" / "b.png", seed=1)
    return root


@pytest.mark.parametrize("change,message", [
    ({"steps": 0}, "steps must be at least 1"),
    ({"tile": 16}, "tile must be at least 32 pixels"),
    ({"quality": 0}, "quality must be between 1 and 100"),
    ({"format": "gif"}, "format must be one of jpeg, png, webp, tiff, bmp"),
    ({"naming": "flat"}, "naming must be one of suffix, subfolder"),
    ({"overwrite": "always"}, "overwrite must be one of skip, overwrite, rename"),
    ({"degradations": ("noisy", "hazy", "blurry")}, "degradations takes at most two names"),
    ({"suffix": "a/b"}, "suffix must not contain a path separator"),
])
def test_each_setting_out_of_range_is_one_named_error(tmp_path, change, message):
    settings = BatchSettings(tmp_path / "out", **change)
    with pytest.raises(SettingError) as caught:
        settings.validate()
    assert str(caught.value) == message
    assert caught.value.for_flag("--x") == "--x " + message.split(" ", 1)[1]
    BatchSettings(tmp_path / "out").validate()  # the defaults pass


def test_strength_is_checked_when_the_settings_are_made(tmp_path):
    with pytest.raises(SettingError, match="strength must be between 0 and 1") as caught:
        BatchSettings(tmp_path, strength=1.5)
    assert caught.value.name == "strength"


def test_batch_settings_are_the_restore_options_plus_the_output_plan(tmp_path):
    settings = BatchSettings(tmp_path, steps=4, tile=64, keep_clean=True, strength=0.5, guard=None)
    options = settings.restore_options()
    assert type(options) is RestoreOptions
    assert options == RestoreOptions(steps=4, tile=64, keep_clean=True, strength=0.5, guard=None)
    names = {f.name for f in fields(BatchSettings)}
    assert {f.name for f in fields(RestoreOptions)} <= names
    assert not names & {"device", "model_dir", "recursive"}  # how a job is built, not its settings


def test_validate_finds_the_inputs_and_checks_them(photos, tmp_path):
    flat = BatchJob.from_paths([photos], BatchSettings(tmp_path / "out"), restorer=fake_restorer())
    flat.validate()
    assert [p.name for p, _root in flat.inputs] == ["a.jpg"]
    deep = BatchJob.from_paths([photos], BatchSettings(tmp_path / "out"), recursive=True, restorer=fake_restorer())
    deep.validate()
    assert [p.name for p, _root in deep.inputs] == ["a.jpg", "b.png"]
    assert (tmp_path / "out").is_dir()  # created by the check that it can be written

    with pytest.raises(JobError, match="no such file or folder"):
        BatchJob.from_paths([tmp_path / "missing"], BatchSettings(tmp_path / "out"), restorer=fake_restorer()).validate()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(JobError, match="no images found"):
        BatchJob.from_paths([empty], BatchSettings(tmp_path / "out"), restorer=fake_restorer()).validate()
    with pytest.raises(JobError, match="the output folder is the input folder"):
        BatchJob.from_paths([photos], BatchSettings(photos), restorer=fake_restorer()).validate()


def test_validate_refuses_an_output_over_its_input_or_an_unwritable_folder(photos, tmp_path):
    photo = photos / "a.jpg"
    with pytest.raises(JobError, match="would overwrite the input"):
        BatchJob([(photo, photos)], BatchSettings(photos), fake_restorer()).validate()
    BatchJob([(photo, photos)], BatchSettings(photos, suffix="_r"), fake_restorer()).validate()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(JobError, match="cannot write to the output folder"):
        BatchJob([(photo, photos)], BatchSettings(blocked / "out"), fake_restorer()).validate()
    with pytest.raises(SettingError, match="steps"):  # the settings come first
        BatchJob([(photo, photos)], BatchSettings(blocked / "out", steps=0), fake_restorer()).validate()


def test_validate_checks_the_model_only_when_none_is_loaded(photos, tmp_path, monkeypatch):
    not_a_bundle = tmp_path / "model"
    not_a_bundle.mkdir()
    with pytest.raises(JobError, match="not a model bundle"):
        BatchJob.from_paths([photos], BatchSettings(tmp_path / "out"), model_dir=not_a_bundle).validate()
    monkeypatch.setattr("engine.bundle.bundled_model_dir", lambda: tmp_path / "nothing")
    with pytest.raises(NoBundledModel, match="no model is bundled"):
        BatchJob.from_paths([photos], BatchSettings(tmp_path / "out")).validate()
    BatchJob.from_paths([photos], BatchSettings(tmp_path / "out"), restorer=fake_restorer()).validate()


def test_run_and_report(photos, tmp_path):
    job = BatchJob.from_paths([photos], BatchSettings(tmp_path / "out", tile=128), recursive=True,
                              restorer=fake_restorer())
    job.validate()
    events = []
    results = job.run(events.append)
    assert [r.status for r in results] == ["done", "done"]
    assert {e.kind for e in events} >= {"started", "detected", "done"}
    report = job.report(results, seconds=1.23456)
    assert set(report) == {"version", "model", "settings", "summary", "seconds", "files"}
    assert report["version"] == 1 and report["seconds"] == 1.235
    assert report["summary"] == {"done": 2, "skipped": 0, "failed": 0, "cancelled": 0}
    assert report["model"]["device"] == "cpu" and report["settings"]["tile"] == 128
    assert [Path(f["output"]).name for f in report["files"]] == ["a.jpg", "b.png"]
    again = job.run()
    assert [r.status for r in again] == ["skipped", "skipped"]
