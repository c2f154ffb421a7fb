"""Evaluation: dataset reading, subset spreading, per-combination figures, reports, and the CLI."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.inference.restoration import RestorationModel, RestorerConfig
from engine.inference.sde import IRSDEConfig
from engine.models.unet import UNetConfig
from engine.tools.evaluate import (
    EvalDataError,
    Pair,
    PairResult,
    evaluate,
    group_figures,
    group_of,
    load_pairs,
    markdown_groups,
    markdown_report,
    spread_subset,
    summarize,
)

UNET = UNetConfig(base_channels=8, channel_mult=(1, 2), attention_levels=(1,), attention_heads=2, time_dim=16,
                  cond_dim=32)
COMBOS = [("hazy", "noisy"), ("low-light", "blurry"), ()]


def _save(arr, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    rng = np.random.default_rng(0)
    with open(root / "labels.jsonl", "w") as fh:
        for i in range(6):
            names = COMBOS[i % 3]
            hq = rng.random((20, 27, 3)) * 0.5 + 0.25
            lq = hq * 0.5 if names else hq
            stem = f"p{i}__{'+'.join(names) or 'clean'}__{i}.png"
            _save(hq, root / "hq" / stem)
            _save(lq, root / "lq" / stem)
            fh.write(json.dumps({"file": f"lq/{stem}", "hq": f"hq/{stem}", "degradations": list(names)}) + "\n")
    return root


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    from engine.models.daclip import DaClip, DaClipConfig, save_pretrained

    torch.manual_seed(0)
    cond = tmp_path_factory.mktemp("model")
    save_pretrained(DaClip(DaClipConfig.for_clip_model("PhotoMend-ViT-Tiny-Test")), cond)
    RestorationModel(RestorerConfig(UNET, IRSDEConfig(num_train_timesteps=10))).save(cond)
    abl = tmp_path_factory.mktemp("ablation")
    RestorationModel(RestorerConfig(UNetConfig(**{**UNET.__dict__, "conditioned": False}),
                                    IRSDEConfig(num_train_timesteps=10))).save(abl)
    return cond, abl


def test_load_pairs_and_errors(synth_dir, tmp_path):
    pairs = load_pairs(synth_dir)
    assert len(pairs) == 6 and pairs[0].combination == "hazy+noisy" and pairs[2].combination == "clean"
    with pytest.raises(EvalDataError, match="labels.jsonl"):
        load_pairs(tmp_path)
    (tmp_path / "labels.jsonl").write_text('{"file": "x"}\n')
    with pytest.raises(EvalDataError, match="labels.jsonl:1"):
        load_pairs(tmp_path)


def test_spread_subset_covers_every_combination():
    pairs = [Pair(f"{c}{k}", "", (c,)) for c in "abcd" for k in range(5)]
    sub = spread_subset(pairs, 4)
    assert sorted(p.combination for p in sub) == ["a", "b", "c", "d"]
    assert len({p.lq[-1] for p in sub}) > 1  # photos rotate across combinations
    assert len(spread_subset(pairs, 9)) == 9 and spread_subset(pairs, None) == pairs


def test_fresh_model_gives_zero_gain_and_reports(synth_dir, model_dirs):
    """An untrained restorer returns its input (zero-initialised head): gain exactly 0 dB."""
    from engine.inference.detect import Detector

    cond, _ = model_dirs
    model = RestorationModel.from_dir(cond)
    results = evaluate(model, load_pairs(synth_dir), 1, Detector.from_dir(cond))
    assert len(results) == 6
    for r in results:
        assert r.psnr_out == pytest.approx(r.psnr_in, abs=0.05) and r.seconds > 0
    summary = summarize(results)
    assert [s.combination for s in summary] == ["clean", "hazy+noisy", "low-light+blurry", "all"]
    assert summary[-1].n == 6
    assert summary[1].psnr_in == pytest.approx(np.mean([r.psnr_in for r in results if r.combination == "hazy+noisy"]))
    text = markdown_report(results, results)
    assert "| hazy+noisy | 2 |" in text and "ablation PSNR" in text and "**all (mean)**" in text


def test_conditioned_model_needs_a_detector(synth_dir, model_dirs):
    with pytest.raises(ValueError, match="detector"):
        evaluate(RestorationModel.from_dir(model_dirs[0]), load_pairs(synth_dir), 1, None)


def test_cli_writes_markdown_and_csv(synth_dir, model_dirs, tmp_path, capsys):
    from engine.cli import main

    cond, abl = model_dirs
    out = tmp_path / "report"
    code = main(["eval", "--model", str(cond), "--data", str(synth_dir), "--ablation", str(abl),
                 "--steps", "1,2", "--limit", "3", "--out", str(out), "--device", "cpu"])
    assert code == 0
    md = (tmp_path / "report.md").read_text()
    assert md.count("| **all (mean)** | 3 |") == 2 and "conditioning buys" in md
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert {r["model"] for r in rows} == {"model", "ablation"} and {r["steps"] for r in rows} == {"1", "2"}
    assert len(rows) == 2 * 2 * 4  # models x steps x (3 combinations + all)


def test_cli_usage_errors(synth_dir, model_dirs, tmp_path):
    from engine.cli import main

    cond, abl = model_dirs
    assert main(["eval", "--model", str(tmp_path), "--data", str(synth_dir)]) == 2
    assert main(["eval", "--model", str(cond), "--data", str(tmp_path)]) == 2
    assert main(["eval", "--model", str(cond), "--data", str(synth_dir), "--steps", "x"]) == 2
    assert main(["eval", "--model", str(cond), "--data", str(synth_dir), "--ablation", str(cond)]) == 2


class _Says:
    """A detector stub that sees ``names`` in every image (condition of the right width)."""

    def __init__(self, names, dim=32):
        from types import SimpleNamespace

        from engine.jobs.api import Detection

        self.result = SimpleNamespace(detection=Detection(tuple(names), {}), condition=torch.zeros(3, dim))

    def analyze(self, image):
        return self.result


class _Darkens:
    """A 'restorer' that halves every pixel: restoring is visible in the PSNR."""

    conditioned = False

    def predict(self, lq, cond=None, steps=1, generator=None):
        return lq * 0.5


def test_keep_clean_keeps_images_where_nothing_is_detected(synth_dir):
    pairs = load_pairs(synth_dir)
    kept = evaluate(_Darkens(), pairs, 1, _Says(()), keep_clean=True)
    assert all(r.psnr_out == r.psnr_in for r in kept)
    restored = evaluate(_Darkens(), pairs, 1, _Says(("noisy",)), keep_clean=True)
    assert all(r.psnr_out != r.psnr_in for r in restored)
    with pytest.raises(ValueError, match="detector"):
        evaluate(_Darkens(), pairs, 1, None, keep_clean=True)


class _Scores(_Says):
    """A detector stub whose detection comes with presence scores (what the guard reads)."""

    def __init__(self, names, scores, dim=32):
        super().__init__(names, dim)
        from engine.jobs.api import Detection

        self.result.detection = Detection(tuple(names), dict(scores))


def test_guard_scores_each_pair_with_and_without_it(synth_dir):
    from engine.inference.guard import GuardConfig

    pairs = load_pairs(synth_dir)
    unsure = evaluate(_Darkens(), pairs, 1, _Scores(("hazy",), {"hazy": 0.55}), guard=GuardConfig())
    for r in unsure:  # the guard lowers the strength to 0.2: the darkening is mostly undone
        assert r.guard_strength == pytest.approx(0.2) and r.psnr_in > r.psnr_guarded > r.psnr_out
    sure = evaluate(_Darkens(), pairs, 1, _Scores(("hazy",), {"hazy": 0.99}), guard=GuardConfig())
    assert all(r.guard_strength == 1.0 and r.psnr_guarded == pytest.approx(r.psnr_out) for r in sure)
    nothing = evaluate(_Darkens(), pairs, 1, _Scores((), {"hazy": 0.1}), guard=GuardConfig())
    assert all(r.psnr_guarded == r.psnr_in for r in nothing)
    text = markdown_report(unsure)
    assert "guarded PSNR" in text and "With the guard, worse than their input: " in text
    assert unsure[0].guarded().psnr_out == unsure[0].psnr_guarded
    with pytest.raises(ValueError, match="detector"):
        evaluate(_Darkens(), pairs, 1, None, guard=GuardConfig())


class _Names(_Says):
    """A detector stub whose conditions say where they come from: the detection (all 0) or forced names
    (as many 1s as names; -1 for none)."""

    def __init__(self, dim=32):
        super().__init__(("hazy",), dim)
        self.forced = []

    def condition_for(self, image, names):
        self.forced.append(tuple(names))
        return torch.full((3, 32), float(len(names) or -1))


class _ReadsCondition:
    """A conditioned 'restorer' that records the condition it gets and returns its input."""

    conditioned = True

    def __init__(self):
        self.seen = []

    def predict(self, lq, cond=None, steps=1, generator=None):
        self.seen.append(float(cond[0, 0, 0]))
        return lq


def test_true_names_condition_each_pair_on_its_own_degradations(synth_dir):
    pairs = load_pairs(synth_dir)
    det, model = _Names(), _ReadsCondition()
    evaluate(model, pairs, 1, det, true_names=True)
    assert det.forced == [p.degradations for p in pairs]  # every pair, its own names, clean ones too
    assert model.seen == [float(len(p.degradations) or -1) for p in pairs]
    detected_det, detected = _Names(), _ReadsCondition()
    evaluate(detected, pairs, 1, detected_det)
    assert detected_det.forced == [] and set(detected.seen) == {0.0}  # the default: the detection
    with pytest.raises(ValueError, match="exclude"):
        evaluate(_ReadsCondition(), pairs, 1, _Names(), true_names=True, keep_clean=True)


def test_cli_true_names(synth_dir, model_dirs, tmp_path, capsys):
    from engine.cli import main

    cond, _ = model_dirs
    assert main(["eval", "--model", str(cond), "--data", str(synth_dir), "--names", "true"]) == 0
    assert "(true names)" in capsys.readouterr().out
    assert main(["eval", "--model", str(cond), "--data", str(synth_dir), "--names", "true", "--guard", "on"]) == 2
    assert "excludes --guard" in capsys.readouterr().err


def test_cli_guard_both_and_on(synth_dir, model_dirs, tmp_path, capsys):
    from engine.cli import main

    cond, _ = model_dirs
    out = tmp_path / "g"
    assert main(["eval", "--model", str(cond), "--data", str(synth_dir), "--guard", "both", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "guarded PSNR" in (tmp_path / "g.md").read_text()
    rows = list(csv.DictReader(open(tmp_path / "g.csv")))
    assert all(r["psnr_guarded"] != "" and 0 <= float(r["guard_strength"]) <= 1 for r in rows)
    capsys.readouterr()
    assert main(["eval", "--model", str(cond), "--data", str(synth_dir), "--guard", "on", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "(guard on)" in printed and "guarded PSNR" not in printed  # one set of columns: the guarded ones


def test_cli_guard_ramp_tunes_the_guard(synth_dir, model_dirs, tmp_path):
    from engine.cli import main

    cond, _ = model_dirs
    base = ["eval", "--model", str(cond), "--data", str(synth_dir), "--device", "cpu", "--limit", "2"]
    # ramp 0-0.001: any detection's confidence is above it, nothing detected still keeps the input
    assert main(base + ["--guard", "both", "--guard-ramp", "0,0.001", "--out", str(tmp_path / "r")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert all(float(r["guard_strength"]) in (0.0, 1.0) for r in rows if r["n"] == "1")  # a step, not a ramp
    assert main(base + ["--guard-ramp", "0.5,0.75"]) == 2  # the guard is off
    assert main(base + ["--guard", "on", "--guard-ramp", "0.8,0.2"]) == 2
    assert main(base + ["--guard", "on", "--guard-ramp", "x"]) == 2


def _result(combination, psnr_in, psnr_out, guarded=None):
    return PairResult("f", combination, 1, psnr_in, psnr_out, 0.5, 0.5, 0.1, 1.0, psnr_guarded=guarded,
                      ssim_guarded=None if guarded is None else 0.5, guard_estimate=None,
                      guard_strength=None if guarded is None else 1.0)


def test_groups_follow_the_issue_order_free():
    assert group_of("noisy+hazy") == group_of("hazy+noisy") == "seed pairs"
    assert group_of("noisy+blurry") == "other" and group_of("snowy") == "singles"
    assert group_of("clean") == group_of("") == "clean"


def test_group_figures_count_images_and_combinations_below_input():
    results = [_result("hazy+noisy", 20, 25), _result("hazy+noisy", 20, 14),   # combo mean -0.5: below
               _result("blurry", 20, 22), _result("blurry", 20, 21),
               _result("clean", 40, 35)]
    by = {f.group: f for f in group_figures(results)}
    assert list(by) == ["seed pairs", "singles", "clean"]
    assert by["seed pairs"].gain == pytest.approx(-0.5) and by["seed pairs"].combinations_below == 1
    assert by["seed pairs"].images_below == 1 and by["seed pairs"].images == 2
    assert by["singles"].gain == pytest.approx(1.5) and by["singles"].images_below == 0
    assert by["clean"].psnr_out == pytest.approx(35) and by["clean"].images_below == 1
    assert by["clean"].guarded_gain is None
    text = "\n".join(markdown_groups(results))
    assert "| seed pairs | 2 | -0.50 | 19.50 | 1 of 1 | 1 of 2 |" in text and "guarded" not in text
    assert "| clean | 1 | - | 35.00 | 1 of 1 | 1 of 1 |" in text


def test_group_figures_with_the_guard():
    results = [_result("snowy", 20, 18, guarded=20.5), _result("clean", 40, 30, guarded=40)]
    by = {f.group: f for f in group_figures(results)}
    assert by["singles"].images_below == 1 and by["singles"].guarded_images_below == 0
    assert by["singles"].guarded_gain == pytest.approx(0.5) and by["clean"].guarded_psnr_out == 40
    assert "guarded: mean gain" in "\n".join(markdown_groups(results))
    assert "By group" in markdown_report(results)


def test_mixing_terms_give_the_psnr_of_any_strength(synth_dir):
    from engine.inference.guard import GuardConfig
    from engine.tools.metrics import psnr

    pairs = load_pairs(synth_dir)
    results = evaluate(_Darkens(), pairs, 1, _Scores(("hazy",), {"hazy": 0.55}), guard=GuardConfig())
    for r in results:
        assert r.psnr_at(1.0) == pytest.approx(r.psnr_out, abs=1e-3)
        assert r.psnr_at(r.guard_strength) == pytest.approx(r.psnr_guarded, abs=1e-3)
        assert r.psnr_at(0.0) == r.psnr_in  # exactly: a perfect guard that keeps the input is never below it
        assert r.psnr_at(r.best_strength) >= max(r.psnr_at(s) for s in np.linspace(0, 1, 21)) - 1e-6
    from engine.io.reader import read_rgb

    lq, hq = read_rgb(pairs[0].lq), read_rgb(pairs[0].hq)  # a half-way mix, measured on the images
    half = np.clip(lq + 0.5 * (lq * 0.5 - lq), 0, 1)
    assert results[0].psnr_at(0.5) == pytest.approx(psnr(half, hq), abs=0.05)


def test_images_csv_round_trips(synth_dir, tmp_path):
    from engine.inference.guard import GuardConfig
    from engine.tools.evaluate import read_images_csv, write_images_csv

    results = evaluate(_Darkens(), load_pairs(synth_dir), 1, _Scores(("hazy",), {"hazy": 0.7}), guard=GuardConfig())
    write_images_csv(tmp_path / "r_images.csv", {"model": results})
    back = read_images_csv(tmp_path / "r_images.csv")
    assert [r.file for r in back] == [r.file for r in results]
    for a, b in zip(results, back, strict=True):
        assert b.psnr_at(0.3) == pytest.approx(a.psnr_at(0.3), abs=1e-3)
        assert b.guard_strength == pytest.approx(a.guard_strength)
    assert read_images_csv(tmp_path / "r_images.csv", model="ablation") == []
    with pytest.raises(EvalDataError, match="not found"):
        read_images_csv(tmp_path / "missing.csv")
    (tmp_path / "bad_images.csv").write_text("model,steps,file\nmodel,one,x.png\n")
    with pytest.raises(EvalDataError, match="bad_images.csv:2: malformed row"):
        read_images_csv(tmp_path / "bad_images.csv")


def test_report_gives_the_bound_on_any_guard(synth_dir):
    from engine.tools.evaluate import best_strength_figures

    results = evaluate(_Darkens(), load_pairs(synth_dir), 1, None)
    bound = {f.group: f for f in best_strength_figures(results)}
    # darkening only harms: a perfect guard keeps every input, so nothing is below it and clean stays exact
    assert bound["seed pairs"].guarded_gain == pytest.approx(0.0, abs=1e-6)
    assert bound["seed pairs"].guarded_combinations_below == 0 and bound["clean"].guarded_psnr_out == 100.0
    assert "The bound on any guard" in markdown_report(results)
    assert best_strength_figures([dataclasses.replace(r, mse_in=None) for r in results]) == []
