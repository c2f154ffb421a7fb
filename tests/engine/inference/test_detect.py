"""Detector API (conditions for the restorer, full-size analysis), `photomend detect` and its evaluation."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from engine.bundle import DETECTOR, ModelBundle
from engine.cli import main as cli_main
from engine.inference.detect import Detector, crop_boxes
from engine.jobs.api import Detection
from engine.models.daclip import DaClip, DaClipConfig, load_pretrained, save_pretrained
from engine.models.serialization import ModelFileError
from engine.tools.detect_eval import DetectionReport, calibrate_thresholds
from engine.vocab import DEGRADATIONS, NONE, PHYSICAL_ORDER


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    m = DaClip(DaClipConfig.for_clip_model("PhotoMend-ViT-Tiny-Test"))
    with torch.no_grad():  # a controller that is not the identity, so slots differ per image
        for lin in m.zero_linears:
            lin.weight.normal_(std=0.05)
        m.slot_proj.normal_(std=0.3)
    d = tmp_path_factory.mktemp("model")
    save_pretrained(m, d)
    return d


@pytest.fixture(scope="module")
def detector(model_dir) -> Detector:
    return Detector.from_dir(model_dir, n_crops=4)


def _photo(h=120, w=90, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([yy, xx, 0.5 * (yy + xx)], axis=-1)
    return np.clip(base + 0.05 * rng.standard_normal((h, w, 3)), 0, 1).astype(np.float32)


def test_detector_attributes(detector):
    assert detector.embed_dim == 32
    assert detector.vocabulary == DEGRADATIONS
    assert detector.classes[-1] == NONE


def test_condition_batch_shape_norm_and_canonical_order(detector):
    images = torch.rand(6, 3, 48, 40)  # not the model size: resized inside
    cond = detector.condition_batch(images)
    assert cond.shape == (6, 3, detector.embed_dim)
    assert torch.allclose(cond.norm(dim=-1), torch.ones(6, 3), atol=1e-5)
    _, _, probs = detector._encode(images)
    labels = [[detector.classes[i] for i in row] for row in probs.argmax(-1).tolist()]
    key = {n: i for i, n in enumerate(PHYSICAL_ORDER + (NONE,))}
    for a, b in labels:
        assert key[a] <= key[b]  # physical order, none last
    assert not torch.is_grad_enabled() or not cond.requires_grad


def test_condition_batch_is_deterministic_and_per_image(detector):
    images = torch.rand(3, 3, 32, 32)
    a = detector.condition_batch(images)
    b = detector.condition_batch(images[[2, 0, 1]])
    assert torch.allclose(a[[2, 0, 1]], b, atol=1e-5)


def test_analyze_small_and_large_photos(detector):
    for h, w in ((20, 30), (120, 90), (400, 700)):
        result = detector.analyze(_photo(h, w))
        assert result.condition.shape == (3, detector.embed_dim)
        assert result.condition.device.type == "cpu"
        assert isinstance(result.detection, Detection)
        assert set(result.detection.scores) == set(DEGRADATIONS)
        assert all(0.0 <= p <= 1.0 for p in result.detection.scores.values())
        scores = [result.detection.scores[n] for n in result.detection.degradations]
        assert scores == sorted(scores, reverse=True) and len(scores) <= 2
        assert all(s >= 0.5 for s in scores)


def test_detection_rule_thresholds_and_orders(detector):
    score = torch.zeros(len(DEGRADATIONS))
    score[DEGRADATIONS.index("noisy")] = 0.7
    score[DEGRADATIONS.index("hazy")] = 0.9
    score[DEGRADATIONS.index("rainy")] = 0.6
    score[DEGRADATIONS.index("snowy")] = 0.4
    det = detector._detection(score)
    assert det.degradations == ("hazy", "noisy")  # top two above 0.5, most probable first
    assert det.as_set() == frozenset({"noisy", "hazy"})
    assert detector._detection(torch.full((len(DEGRADATIONS),), 0.2)).degradations == ()


def test_per_name_thresholds_decide_what_is_detected(model_dir):
    det = Detector.from_dir(model_dir)
    assert set(det.thresholds.values()) == {0.5}  # no calibration stored: 0.5 for every name
    score = torch.zeros(len(DEGRADATIONS))
    score[DEGRADATIONS.index("hazy")] = 0.7
    score[DEGRADATIONS.index("noisy")] = 0.6
    det.thresholds["hazy"] = 0.8
    assert det._detection(score).degradations == ("noisy",)


def _fake_encoding(det, slot_names, p_first):
    """One view whose two canonical slots are labelled ``slot_names``; slot 0 has probability ``p_first``."""
    d, c = det.embed_dim, len(det.classes)
    slots = torch.nn.functional.normalize(torch.randn(1, 2, d), dim=-1)
    probs = torch.zeros(1, 2, c)
    probs[0, 0, det.classes.index(slot_names[0])] = p_first
    probs[0, 0, det.classes.index(NONE) if slot_names[0] != NONE else 0] = 1 - p_first
    probs[0, 1, det.classes.index(slot_names[1])] = 1.0
    content = torch.nn.functional.normalize(torch.randn(1, d), dim=-1)
    return content, slots, probs


def test_a_rejected_name_does_not_condition_the_restorer(model_dir):
    torch.manual_seed(0)
    det = Detector.from_dir(model_dir, n_crops=0)  # one view: the global one
    content, slots, probs = _fake_encoding(det, ("hazy", NONE), 0.6)
    det._encode = lambda views: (content, slots, probs)
    img = _photo(40, 40)
    accepted = det.analyze(img)
    assert accepted.detection.degradations == ("hazy",)
    assert torch.allclose(accepted.condition[1], slots[0, 0], atol=1e-6)  # the hazy slot conditions
    det.thresholds["hazy"] = 0.7
    rejected = det.analyze(img)
    assert rejected.detection.degradations == ()
    # both rows come from the photo's own empty slot, not from the rejected hazy slot
    assert torch.allclose(rejected.condition[1], slots[0, 1], atol=1e-6)
    assert torch.allclose(rejected.condition[2], slots[0, 1], atol=1e-6)
    # no empty slot anywhere: the none text prototype
    content, slots, probs = _fake_encoding(det, ("hazy", "rainy"), 0.6)
    probs[0, 1] = 0.0
    probs[0, 1, det.classes.index("rainy")], probs[0, 1, det.classes.index(NONE)] = 0.6, 0.4
    det.thresholds.update(hazy=0.99, rainy=0.99)
    none_proto = det.prototypes[det.classes.index(NONE)].cpu()
    analysis = det.analyze(img)
    cond = analysis.condition
    assert analysis.detection.degradations == ()
    assert torch.allclose(cond[1], none_proto, atol=1e-6) and torch.allclose(cond[2], none_proto, atol=1e-6)


def test_a_detected_name_no_slot_is_labelled_with_conditions_through_its_prototype(model_dir):
    torch.manual_seed(1)
    det = Detector.from_dir(model_dir, n_crops=0)
    content, slots, probs = _fake_encoding(det, ("rainy", NONE), 0.65)
    probs[0, 0] = 0.0
    probs[0, 0, det.classes.index("rainy")], probs[0, 0, det.classes.index("hazy")] = 0.65, 0.35
    det._encode = lambda views: (content, slots, probs)
    det.thresholds.update(hazy=0.3, rainy=0.9)
    analysis = det.analyze(_photo(40, 40))
    assert analysis.detection.degradations == ("hazy",)  # detected, but every slot says rainy or none
    hazy_proto = det.prototypes[det.classes.index("hazy")].cpu()
    assert torch.allclose(analysis.condition[1], hazy_proto, atol=1e-6)  # not the rainy slot
    assert torch.allclose(analysis.condition[2], slots[0, 1], atol=1e-6)


def test_thresholds_are_stored_with_the_model_and_checked(model_dir, tmp_path):
    source, copy = ModelBundle(model_dir), ModelBundle(tmp_path)
    meta = json.loads(source.config_file(DETECTOR).read_text())
    assert meta["config"]["thresholds"] == []
    meta["config"]["thresholds"] = [0.6] * len(DEGRADATIONS)
    copy.config_file(DETECTOR).write_text(json.dumps(meta))
    copy.weights_file(DETECTOR).write_bytes(source.weights_file(DETECTOR).read_bytes())
    assert set(Detector.from_dir(tmp_path).thresholds.values()) == {0.6}
    for bad in ([0.6] * 3, [1.5] * len(DEGRADATIONS)):
        meta["config"]["thresholds"] = bad
        copy.config_file(DETECTOR).write_text(json.dumps(meta))
        with pytest.raises(ModelFileError, match=re.escape(copy.config_file(DETECTOR).name) + ": bad config"):
            load_pretrained(tmp_path)


def test_calibration_picks_the_best_f1_and_the_higher_of_ties():
    scores = [{"hazy": 0.8, "noisy": 0.55}, {"hazy": 0.9, "noisy": 0.6}, {"hazy": 0.6, "noisy": 0.4},
              {"hazy": 0.3, "noisy": 0.7}]
    truths = [["hazy"], ["hazy"], [], ["noisy"]]
    t = calibrate_thresholds(scores, truths, ("hazy", "noisy", "rainy"))
    assert t["hazy"] == pytest.approx(0.80)  # any value in (0.6, 0.8] separates; the highest is kept
    assert t["noisy"] == pytest.approx(0.70)
    assert t["rainy"] == pytest.approx(0.95)  # never present: as few false alarms as the grid allows
    with pytest.raises(ValueError):
        calibrate_thresholds(scores, truths[:2], ("hazy",))


def test_calibration_with_a_small_beta_prefers_precision():
    scores = [{"hazy": v} for v in (0.9, 0.8, 0.4, 0.5, 0.3)]
    truths = [["hazy"], ["hazy"], ["hazy"], [], []]
    assert calibrate_thresholds(scores, truths, ("hazy",))["hazy"] == pytest.approx(0.40)  # F1 0.86: all three found
    assert calibrate_thresholds(scores, truths, ("hazy",), beta=0.5)["hazy"] == pytest.approx(0.80)  # no false alarm
    with pytest.raises(ValueError):
        calibrate_thresholds(scores, truths, ("hazy",), beta=0)
    with pytest.raises(ValueError):
        calibrate_thresholds(scores, truths, ("hazy",), grid=[0.0, 0.5])  # 0 is not a storable threshold


def test_cli_calibrate_writes_a_calibrated_copy(model_dir, tmp_path, capsys):
    data = tmp_path / "set"
    (data / "lq").mkdir(parents=True)
    with open(data / "labels.jsonl", "w") as fh:
        for i, degs in enumerate([["hazy"], [], ["noisy", "rainy"], []]):
            _write(data / "lq" / f"{i}.png", _photo(60, 60, i))
            fh.write(json.dumps({"file": f"lq/{i}.png", "hq": f"hq/{i}.png", "degradations": degs}) + "\n")
    out = tmp_path / "calibrated"
    assert cli_main(["detect", "--calibrate", str(data), "--model", str(model_dir), "--out", str(out)]) == 0
    assert "| type | threshold |" in capsys.readouterr().out
    thresholds = json.loads(ModelBundle(out).config_file(DETECTOR).read_text())["config"]["thresholds"]
    assert len(thresholds) == len(DEGRADATIONS) and all(0 < v < 1 for v in thresholds)
    assert ModelBundle(out).weights_file(DETECTOR).read_bytes() == ModelBundle(model_dir).weights_file(DETECTOR).read_bytes()
    assert list(Detector.from_dir(out).thresholds.values()) == thresholds
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not mkdtemp's private one
    assert cli_main(["detect", "--calibrate", str(data), "--model", str(model_dir), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    (data / "lq" / "1.png").write_bytes(b"not a png")
    assert cli_main(["detect", "--calibrate", str(data), "--model", str(model_dir), "--out", str(tmp_path / "o2")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # beside the bar
    assert len(errors) == 1 and "1.png: not an image" in errors[0] and not (tmp_path / "o2").exists()
    (data / "labels.jsonl").write_text("")
    assert cli_main(["detect", "--calibrate", str(data), "--model", str(model_dir), "--out", str(tmp_path / "o3")]) == 2
    assert "no labelled images" in capsys.readouterr().err
    assert not list(tmp_path.glob(".calibrated.*"))  # no temporary folder left behind


def test_condition_for_uses_prototypes_in_physical_order(detector):
    img = _photo()
    cond = detector.condition_for(img, ("noisy", "hazy"))
    protos = detector.prototypes.cpu()
    assert torch.allclose(cond[1], protos[detector.classes.index("hazy")])
    assert torch.allclose(cond[2], protos[detector.classes.index("noisy")])
    single = detector.condition_for(img, ("noisy",))
    assert torch.allclose(single[2], protos[detector.classes.index(NONE)])
    assert torch.allclose(single[0], cond[0])  # content from the image only
    assert torch.allclose(cond[0], detector.analyze(img).condition[0], atol=1e-6)
    with pytest.raises(ValueError):
        detector.condition_for(img, ("noisy", "hazy", "rainy"))
    with pytest.raises(ValueError):
        detector.condition_for(img, ("sepia",))


def test_crop_boxes_stay_inside():
    boxes = crop_boxes(300, 500, 96, 8)
    assert 1 <= len(boxes) <= 8 and len(set(boxes)) == len(boxes)
    assert all(0 <= y <= 300 - 96 and 0 <= x <= 500 - 96 for y, x in boxes)
    assert crop_boxes(50, 500, 96, 8) == []


def test_crop_boxes_sit_on_the_jpeg_grid():
    from engine.inference.detect import CROP_GRID

    for h, w in ((300, 500), (1001, 777), (3000, 4000)):
        boxes = crop_boxes(h, w, 128, 8)
        assert boxes and all(y % CROP_GRID == 0 and x % CROP_GRID == 0 for y, x in boxes)


@pytest.fixture(scope="module")
def presence_dir(tmp_path_factory):
    torch.manual_seed(0)
    m = DaClip(DaClipConfig.for_clip_model("PhotoMend-RN-Tiny-Test", presence=True))
    d = tmp_path_factory.mktemp("presence")
    save_pretrained(m, d)
    return d


def test_a_presence_model_detects_with_its_head(presence_dir):
    model = load_pretrained(presence_dir)
    assert model.presence_head is not None
    with torch.no_grad():  # the head says "noisy" and "hazy" whatever it sees, "blurry" never
        last = model.presence_head.net[-1]
        last.weight.zero_()
        last.bias.fill_(-6.0)
        last.bias[DEGRADATIONS.index("noisy")] = 4.0
        last.bias[DEGRADATIONS.index("hazy")] = 2.0
    det = Detector(model, n_crops=3).detect(_photo(100, 140))
    assert det.degradations == ("noisy", "hazy")  # most probable first
    assert det.scores["noisy"] == pytest.approx(float(torch.sigmoid(torch.tensor(4.0))), abs=1e-5)
    assert det.scores["blurry"] < 0.01


def test_the_presence_head_reads_the_crops(presence_dir):
    """Damage in a native crop changes the score: the head sees more than the global view."""
    model = load_pretrained(presence_dir)
    det = Detector(model, n_crops=4)
    photo = _photo(160, 160)
    views, n = det._views(photo)
    _, pooled, _ = model.control_features(views)
    a = model.presence_logits(pooled, len(views))
    b = model.presence_head(pooled[:1], pooled[1:][None] * 0 + pooled[:1][None])
    assert n == 4 and not torch.allclose(a, b)


def test_detection_reads_as_many_crops_as_training_recorded(presence_dir, tmp_path):
    """A detector whose config records its training's crop count reads photos with that many; one
    without it uses the default; an explicit count wins."""
    import dataclasses

    from engine.inference.detect import DEFAULT_CROPS

    assert Detector(load_pretrained(presence_dir)).n_crops == DEFAULT_CROPS  # not recorded
    model = load_pretrained(presence_dir)
    model.cfg = dataclasses.replace(model.cfg, n_crops=3)
    save_pretrained(model, tmp_path)
    assert load_pretrained(tmp_path).cfg.n_crops == 3  # saved with the model
    assert Detector.from_dir(tmp_path).n_crops == 3
    assert len(Detector.from_dir(tmp_path)._views(_photo(400, 400))[0]) == 1 + 3
    assert Detector.from_dir(tmp_path, n_crops=5).n_crops == 5


# ---------------------------------------------------------------- CLI


def _write(path, arr):
    Image.fromarray((arr * 255).astype(np.uint8)).save(path)


def test_cli_detect_json_folder_and_bad_file(model_dir, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    _write(folder / "a.png", _photo(64, 80, 1))
    _write(folder / "b.jpg", _photo(100, 60, 2))
    (folder / "broken.png").write_bytes(b"not a png")
    code = cli_main(["detect", str(folder), "--json", "--model", str(model_dir)])
    out, err = capsys.readouterr()
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["path"].rsplit("/", 1)[-1] for r in lines] == ["a.png", "b.jpg"]
    for r in lines:
        assert set(r) == {"path", "degradations", "scores"}
        assert NONE not in r["degradations"] and set(r["scores"]) == set(DEGRADATIONS)
    assert "broken.png" in err and len(err.strip().splitlines()) == 1


def test_cli_detect_text_and_missing_model(model_dir, tmp_path, capsys):
    _write(tmp_path / "a.png", _photo(50, 50))
    assert cli_main(["detect", str(tmp_path / "a.png"), "--model", str(model_dir)]) == 0
    assert capsys.readouterr().out.startswith(str(tmp_path / "a.png") + ": ")
    assert cli_main(["detect", str(tmp_path / "a.png"), "--model", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_eval_reads_synth_labels(model_dir, tmp_path, capsys):
    (tmp_path / "lq").mkdir()
    records = [("x.png", ["hazy", "noisy"]), ("y.png", []), ("z.png", ["rainy"])]
    with open(tmp_path / "labels.jsonl", "w") as fh:
        for i, (name, degs) in enumerate(records):
            _write(tmp_path / "lq" / name, _photo(60, 60, i))
            fh.write(json.dumps({"file": f"lq/{name}", "hq": f"hq/{name}", "degradations": degs}) + "\n")
    report = tmp_path / "report.md"
    assert cli_main(["detect", "--eval", str(tmp_path), "--model", str(model_dir), "--report", str(report)]) == 0
    text = report.read_text()
    assert "Images: 3." in text and "Exact-set accuracy" in text and "| true \\ detected |" in text


# ---------------------------------------------------------------- metrics


def test_report_metrics():
    r = DetectionReport(vocabulary=("hazy", "noisy", "rainy"))
    r.add(["hazy", "noisy"], ["noisy", "hazy"])  # order-free: exact
    r.add([], [])  # clean
    r.add(["rainy"], ["rainy", "noisy"])  # one false positive
    r.add(["noisy"], [])  # one miss
    assert r.exact_accuracy == 0.5
    per = r.per_type()
    assert per["hazy"]["f1"] == 1.0
    assert per["noisy"]["precision"] == 0.5 and per["noisy"]["recall"] == 0.5
    assert per["rainy"]["f1"] == 1.0
    assert r.mean_f1 == pytest.approx((1 + 0.5 + 1) / 3)
    labels, mat = r.confusion()
    assert mat[labels.index("noisy"), labels.index(NONE)] == 1
    assert mat[labels.index(NONE), labels.index(NONE)] == 1
    assert "clean" in r.to_markdown()
