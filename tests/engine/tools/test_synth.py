"""``photomend synth``: dataset layout, combinations, labels, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from engine.cli import main
from engine.degradations import preset_combinations
from engine.tools.synth import SynthSettings, synthesize
from engine.vocab import SEED24


@pytest.fixture
def clean_dir(tmp_path):
    folder = tmp_path / "clean"
    folder.mkdir()
    Image.fromarray(data.astronaut()[::4, ::4]).save(folder / "astronaut.png")
    Image.fromarray(data.chelsea()[::4, ::4]).save(folder / "chelsea.jpg")
    return folder


def read_labels(out):
    return [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]


def test_seed24_writes_all_24_combinations_per_photo(clean_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["synth", str(clean_dir), str(out), "--preset", "seed24", "--max-side", "64"]) == 0
    labels = read_labels(out)
    assert len(labels) == 48
    for source in ("astronaut.png", "chelsea.jpg"):
        combos = {frozenset(r["degradations"]) for r in labels if r["source"] == source}
        assert combos == {frozenset(p) for p in SEED24}
    for r in labels:
        lq, hq = out / r["file"], out / r["hq"]
        assert lq.is_file() and hq.is_file() and lq.name == hq.name
        assert "+".join(r["degradations"]) in lq.name
        assert [p["name"] for p in r["params"]] == r["degradations"]
        with Image.open(lq) as a, Image.open(hq) as b:
            assert a.size == b.size and max(a.size) <= 64
    assert "wrote 48 pairs" in capsys.readouterr().out


def test_per_image_rotates_so_all_combinations_appear(tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray((rng.uniform(size=(24, 32, 3)) * 255).astype(np.uint8)).save(clean / f"p{i}.png")
    report = synthesize(clean, tmp_path / "out", SynthSettings(preset="seed24", per_image=3))
    assert report.written == 24 and report.combinations == set(preset_combinations("seed24"))
    report = synthesize(clean, tmp_path / "out_all", SynthSettings(preset="all", per_image=5))
    assert report.written == 40 and report.combinations == set(preset_combinations("all"))
    assert any(r["degradations"] == [] and "__clean__" in r["file"] for r in read_labels(tmp_path / "out_all"))


def test_mixed_is_deterministic_for_a_seed(clean_dir, tmp_path):
    settings = SynthSettings(preset="mixed", per_image=4, seed=5, max_side=48)
    synthesize(clean_dir, tmp_path / "a", settings)
    synthesize(clean_dir, tmp_path / "b", settings)
    la, lb = read_labels(tmp_path / "a"), read_labels(tmp_path / "b")
    assert la == lb and len(la) == 8
    for r in la:
        assert (tmp_path / "a" / r["file"]).read_bytes() == (tmp_path / "b" / r["file"]).read_bytes()
        assert len(r["degradations"]) <= 3


def test_truncated_and_non_image_files_are_skipped_with_a_warning(clean_dir, tmp_path, capsys):
    (clean_dir / "truncated.png").write_bytes((clean_dir / "astronaut.png").read_bytes()[:200])
    (clean_dir / "notes.jpg").write_text("not an image")
    out = tmp_path / "out"
    code = main(["synth", str(clean_dir), str(out), "--preset", "seed24", "--per-image", "2", "--max-side", "48"])
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 2
    assert any("truncated.png" in w for w in warnings) and any("notes.jpg" in w for w in warnings)
    assert "Traceback" not in err
    assert code == 1  # partial failure
    assert len(read_labels(out)) == 4


def test_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing" in err and "Traceback" not in err


def test_empty_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no photos here")
    assert main(["synth", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no images" in err


def test_folder_of_only_broken_files_is_an_error(tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert main(["synth", str(tmp_path / "broken"), str(tmp_path / "out")]) == 2
    assert "could be read" in capsys.readouterr().err


def test_bad_per_image_is_a_usage_error(clean_dir, tmp_path):
    assert main(["synth", str(clean_dir), str(tmp_path / "out"), "--per-image", "0"]) == 2


def test_renderer_choice_draws_with_that_renderer(tmp_path):
    import json

    from engine.degradations.renderers import RENDERER_CHOICES
    from engine.tools.synth import SynthSettings, synthesize

    src = tmp_path / "clean"
    src.mkdir()
    yy, xx = np.mgrid[0:64, 0:80] / 64.0
    img = np.stack([xx, yy, 0.5 * np.ones_like(xx)], -1)
    Image.fromarray((img * 255).astype(np.uint8)).save(src / "a.png")
    for renderer in ("heldout", "albumentations"):
        out = tmp_path / renderer
        synthesize(src, out, SynthSettings(preset="seed24", per_image=2, renderer=renderer))
        records = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
        assert {p["renderer"] for r in records for p in r["params"]} == {renderer}
    with pytest.raises(ValueError, match="unknown renderer"):
        SynthSettings(renderer="imaginary")
    # the CLI lists the same choices without importing the renderers
    from engine.commands import synth as synth_command

    assert set(RENDERER_CHOICES) <= set(open(synth_command.__file__).read().split('"'))
