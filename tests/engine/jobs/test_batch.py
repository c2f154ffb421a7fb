"""Batch runs: input collection, mirrored outputs, skip on rerun, bad files, cancellation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.jobs.api import CancelToken
from engine.jobs.batch import MANIFEST_NAME, collect_inputs, plan_output, run_batch, settings_record
from engine.jobs.events import BatchSettings
from tests.builders import write_photo
from tests.engine.inference.test_runtime import fake_restorer


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "photos"
    write_photo(root / "a.jpg")
    write_photo(root / "b.png", seed=1)
    write_photo(root / "trip" / "c.jpg", seed=2)
    write_photo(root / ".hidden.jpg")
    (root / "notes.txt").write_text("not a photo")
    return root


def test_collect_inputs_flat_and_recursive(tree):
    flat = collect_inputs([tree])
    assert [p.name for p, _ in flat] == ["a.jpg", "b.png"]
    assert all(root == tree for _, root in flat)
    deep = collect_inputs([tree], recursive=True)
    assert sorted(p.name for p, _ in deep) == ["a.jpg", "b.png", "c.jpg"]
    single = collect_inputs([tree / "trip" / "c.jpg", tree / "trip" / "c.jpg"])
    assert single == [(tree / "trip" / "c.jpg", tree / "trip")]
    with pytest.raises(FileNotFoundError):
        collect_inputs([tree / "missing"])


def test_collect_survives_symlink_loops_and_skips_the_output_folder(tree):
    os.symlink(tree, tree / "trip" / "loop")
    out = tree / "restored"
    write_photo(out / "a.jpg")
    found = collect_inputs([tree], recursive=True, exclude=out)
    assert sorted(p.name for p, _ in found) == ["a.jpg", "b.png", "c.jpg"]
    assert not any(out in p.parents for p, _ in found)


def test_plan_output_mirrors_the_tree(tree, tmp_path):
    out = tmp_path / "out"
    c = tree / "trip" / "c.jpg"
    assert plan_output(c, tree, BatchSettings(out)) == out / "trip" / "c.jpg"
    assert plan_output(c, tree, BatchSettings(out, suffix="_r", format="png")) == out / "trip" / "c_r.png"
    assert plan_output(c, tree, BatchSettings(out, naming="subfolder")) == out / "restored" / "trip" / "c.jpg"
    assert plan_output(tree / "x.JPEG", tree, BatchSettings(out, format="jpeg")).name == "x.JPEG"


def test_batch_restores_mirrors_and_reports(tree, tmp_path):
    out = tmp_path / "out"
    events = []
    inputs = collect_inputs([tree], recursive=True)
    results = run_batch(inputs, BatchSettings(out, tile=128), fake_restorer(), on_event=events.append)
    assert [r.status for r in results] == ["done"] * 3
    assert (out / "a.jpg").is_file() and (out / "b.png").is_file() and (out / "trip" / "c.jpg").is_file()
    with Image.open(out / "trip" / "c.jpg") as im:
        assert im.size == (48, 40) and im.format == "JPEG"
    r = results[0]
    assert r.degradations == ["noisy"] and r.scores["noisy"] == pytest.approx(0.9)
    assert r.settings["steps"] == 1 and r.settings["tile"] == 128 and r.seconds > 0 and r.error is None
    kinds = [e.kind for e in events if e.index == 0]
    assert kinds[:2] == ["started", "detected"] and "progress" in kinds and kinds[-1] == "done"
    progress = [e for e in events if e.kind == "progress"]
    assert all(e.todo >= 1 and 1 <= e.done <= e.todo for e in progress)


def test_rerun_skips_finished_files_and_continues(tree, tmp_path):
    out = tmp_path / "out"
    inputs = collect_inputs([tree], recursive=True)
    settings = BatchSettings(out, tile=128)
    restorer = fake_restorer()
    run_batch(inputs, settings, restorer)
    assert (out / MANIFEST_NAME).is_file()
    calls = restorer.model.calls

    again = run_batch(inputs, settings, restorer)
    assert [r.status for r in again] == ["skipped"] * 3 and restorer.model.calls == calls
    assert again[0].degradations == ["noisy"]

    (out / "b.png").unlink()  # as if the first run had crashed before b.png
    third = run_batch(inputs, settings, restorer)
    assert [r.status for r in third] == ["skipped", "done", "skipped"]

    other = run_batch(inputs, BatchSettings(out, tile=128, steps=2), restorer)  # new settings: redo
    assert [r.status for r in other] == ["done"] * 3
    forced = run_batch(inputs, BatchSettings(out, tile=128, steps=2, overwrite="overwrite"), restorer)
    assert [r.status for r in forced] == ["done"] * 3


def test_strength_reaches_the_outputs_and_a_new_strength_redoes_them(tree, tmp_path):
    out = tmp_path / "out"
    inputs = collect_inputs([tree], recursive=True)
    with Image.open(tree / "b.png") as im:
        original = np.asarray(im)
    kept = run_batch(inputs, BatchSettings(out, tile=128, strength=0.0), fake_restorer())
    assert kept[1].settings["strength"] == 0.0
    # full strength leaves the record (and the skip-on-rerun key) as it was before the option existed
    assert "strength" not in settings_record(BatchSettings(out, tile=128))
    with Image.open(out / "b.png") as im:
        assert np.array_equal(np.asarray(im), original)  # lossless output of 0 % restoration
    full = run_batch(inputs, BatchSettings(out, tile=128), fake_restorer())
    assert [r.status for r in full] == ["done"] * 3
    with Image.open(out / "b.png") as im:
        assert not np.array_equal(np.asarray(im), original)


def test_a_bad_file_is_reported_and_the_batch_goes_on(tree, tmp_path):
    (tree / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    results = run_batch(collect_inputs([tree]), BatchSettings(out, tile=128), fake_restorer())
    status = {Path(r.path).name: r for r in results}
    assert status["broken.jpg"].status == "failed"
    assert "broken.jpg" in status["broken.jpg"].error and "\n" not in status["broken.jpg"].error
    assert status["a.jpg"].status == status["b.png"].status == "done"
    assert not (out / "broken.jpg").exists()


def test_cancel_stops_the_current_file_and_the_rest(tree, tmp_path):
    out = tmp_path / "out"
    token = CancelToken()

    def on_event(event):
        if event.kind == "progress" and event.index == 1:
            token.cancel()

    inputs = collect_inputs([tree], recursive=True)
    results = run_batch(inputs, BatchSettings(out, tile=128), fake_restorer(), on_event, token)
    assert [r.status for r in results] == ["done", "cancelled", "cancelled"]
    assert (out / "a.jpg").exists() and not (out / "b.png").exists()
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "a.jpg"]  # no partial file


def test_never_overwrites_an_input(tree):
    results = run_batch(collect_inputs([tree]), BatchSettings(tree, tile=128), fake_restorer())
    assert all(r.status == "failed" and "overwrite the input" in r.error for r in results)


def test_rename_policy_and_colliding_outputs(tree, tmp_path):
    write_photo(tree / "a.png", seed=5)  # a.jpg and a.png both become a.jpg as JPEG
    out = tmp_path / "out"
    settings = BatchSettings(out, tile=128, format="jpeg")
    results = run_batch(collect_inputs([tree]), settings, fake_restorer())
    outputs = sorted(Path(r.output).name for r in results)
    assert outputs == ["a (1).jpg", "a.jpg", "b.jpg"]
    renamed = run_batch(collect_inputs([tree]), BatchSettings(out, tile=128, overwrite="rename"), fake_restorer())
    names = {Path(r.path).name: Path(r.output).name for r in renamed}
    assert names == {"a.jpg": "a (2).jpg", "a.png": "a.png", "b.png": "b.png"}  # existing a.jpg kept


# --------------------------------------------------------------------------- overlap (reader and writer threads)


class WatchedRestorer:
    """Wraps a restorer and calls ``before_restore(name)`` as each photo's restoration begins (the
    name comes from the batch's ``started`` events: pass :meth:`on_event` to ``run_batch``)."""

    def __init__(self, restorer, before_restore):
        self._inner, self.before_restore, self.current = restorer, before_restore, None

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def on_event(self, event):
        if event.kind == "started":
            self.current = event.path.name

    def restore_prepared(self, image, prepared, options, progress=None, cancel=None):
        self.before_restore(self.current)
        return self._inner.restore_prepared(image, prepared, options, progress, cancel)


def test_the_next_photo_is_decoded_while_the_current_one_is_restored(tree, tmp_path, monkeypatch):
    import threading

    import engine.jobs.batch as batch

    decoded_b, threads, seen = threading.Event(), set(), {}
    real_load = batch.load_image

    def load(path):
        threads.add(threading.current_thread().name)
        loaded = real_load(path)
        if Path(path).name == "b.png":
            decoded_b.set()
        return loaded

    def before_restore(name):
        if name == "a.jpg":  # restoring a.jpg waits for b.png's decoding: it must run meanwhile
            seen["b decoded"] = decoded_b.wait(10)

    monkeypatch.setattr(batch, "load_image", load)
    restorer = WatchedRestorer(fake_restorer(), before_restore)
    callers = set()

    def on_event(event):
        callers.add(threading.current_thread().name)
        restorer.on_event(event)

    results = run_batch(collect_inputs([tree], recursive=True), BatchSettings(tmp_path / "out", tile=128), restorer,
                        on_event)
    assert [r.status for r in results] == ["done"] * 3 and seen == {"b decoded": True}
    assert all(name.startswith("photomend-read") for name in threads)
    assert callers == {threading.current_thread().name}  # every event from the calling thread


def test_a_photo_is_written_while_the_next_one_is_restored(tree, tmp_path, monkeypatch):
    import threading

    import engine.jobs.batch as batch

    b_restoring, seen = threading.Event(), {}
    real_save = batch.save_image

    def save(pixels, path, **kwargs):
        if Path(path).name == "a.jpg":  # a.jpg's write waits for b.png's restoration to begin
            seen["b restoring"] = b_restoring.wait(10)
        return real_save(pixels, path, **kwargs)

    def before_restore(name):
        if name == "b.png":
            b_restoring.set()

    monkeypatch.setattr(batch, "save_image", save)
    restorer = WatchedRestorer(fake_restorer(), before_restore)
    order = []

    def on_event(event):
        order.append((event.kind, event.path.name))
        restorer.on_event(event)

    results = run_batch(collect_inputs([tree], recursive=True), BatchSettings(tmp_path / "out", tile=128), restorer,
                        on_event)
    assert [r.status for r in results] == ["done"] * 3 and seen == {"b restoring": True}
    assert order.index(("done", "a.jpg")) > order.index(("started", "b.png"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST_NAME, "a.jpg", "b.png", "trip"]


def test_a_failed_write_fails_that_photo_only(tree, tmp_path, monkeypatch):
    import engine.jobs.batch as batch

    real_save = batch.save_image

    def save(pixels, path, **kwargs):
        if Path(path).name == "b.png":
            raise OSError(28, "No space left on device")
        return real_save(pixels, path, **kwargs)

    monkeypatch.setattr(batch, "save_image", save)
    events, restorer = [], fake_restorer()
    inputs, settings = collect_inputs([tree], recursive=True), BatchSettings(tmp_path / "out", tile=128)
    results = run_batch(inputs, settings, restorer, events.append)
    assert [r.status for r in results] == ["done", "failed", "done"]
    assert "No space left on device" in results[1].error and "b.png" in results[1].error
    assert [e.kind for e in events if e.path.name == "b.png"][-1] == "failed"
    monkeypatch.setattr(batch, "save_image", real_save)
    rerun = run_batch(inputs, settings, restorer)
    assert [r.status for r in rerun] == ["skipped", "done", "skipped"]  # only b.png was left undone


def test_skipped_photos_are_not_decoded(tree, tmp_path, monkeypatch):
    import engine.jobs.batch as batch

    inputs = collect_inputs([tree], recursive=True)
    settings, restorer = BatchSettings(tmp_path / "out", tile=128), fake_restorer()
    run_batch(inputs, settings, restorer)
    (tmp_path / "out" / "trip" / "c.jpg").unlink()
    loaded = []
    real_load = batch.load_image
    monkeypatch.setattr(batch, "load_image", lambda path: loaded.append(Path(path).name) or real_load(path))
    again = run_batch(inputs, settings, restorer)
    assert [r.status for r in again] == ["skipped", "skipped", "done"] and loaded == ["c.jpg"]
