"""The training campaign: scale files over the recipes, and training/gpu_campaign.sh end to end on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from engine.bundle import DETECTOR, RESTORER, ModelBundle
from engine.training.campaign import load_plan, main, pack_photos, photomend
from engine.training.common import RecipeError
from tests.builders import photo_splits

ROOT = Path(__file__).resolve().parents[3]

TINY_SCALE = """
init = ""
detector_init = ""
ablation = true
eval_per_image = 1
eval_max_side = 96

[detector]
clip_model = "PhotoMend-RN-Tiny-Test"
crop = 32
pool_size = 6
region_min = 32
region_max = 64
max_side = 128
batch_size = 2
base_steps = 2
control_steps = 2
warmup_steps = 1
val_every = 0
minutes = 0
threads = 1
checkpoint_every = 2
log_every = 1

[restorer]
crop = 32
pool_size = 4
pool_processes = 1
region_min = 40
region_max = 64
max_side = 128
steps = 2
minutes = 0
batch_size = 2
val_images = 2
val_crop = 32
val_every = 2
log_every = 1
threads = 1
amp = false

[restorer.unet]
base_channels = 8
channel_mult = [1, 2]
attention_levels = [1]
attention_heads = 2
time_dim = 16

[restorer.sde]
num_train_timesteps = 10
"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_splits(tmp_path_factory.mktemp("campaign_photos"),
                        {"train": ("astronaut", "coffee", "chelsea"), "val": ("rocket", "cat")}, 128)


def test_the_gpu_scale_file_applies_to_both_v2_recipes():
    plan = load_plan(ROOT / "training" / "gpu_scale.toml")
    det, res = plan.detector, plan.restorer
    assert det.amp and res.amp and det.device == "cuda"  # bf16 autocast on CUDA
    assert det.presence and det.views == "pool"  # the rest is detector_v2.toml's
    assert res.pool_size > 0 and res.identity_fraction > 0 and res.crop == 256 and res.region_min >= res.crop
    assert res.unet.base_channels == 24  # [unet] from restorer_v2.toml, untouched
    assert ModelBundle(ROOT / plan.scale.detector_init).config_file(DETECTOR).is_file()  # the CPU campaign's detector goes on
    from engine.inference.restoration import RestorationModel

    assert RestorationModel.from_dir(ROOT / plan.scale.init).conditioned  # and both of its restorers
    assert not RestorationModel.from_dir(ROOT / plan.scale.ablation_init).conditioned
    total = det.minutes + res.minutes + (plan.scale.ablation_minutes if plan.scale.ablation else 0)
    assert 0 < total <= 10  # training minutes; fills, evaluation and the benchmark come on top


def test_the_ablation_warm_starts_from_its_own_restorer(tmp_path):
    from engine.training.campaign import restorer_runs

    scale = tmp_path / "scale.toml"
    scale.write_text(f'init = "{tmp_path / "line"}"\nablation_init = "{tmp_path / "blind"}"\nablation_minutes = 2.0\n')
    runs = restorer_runs(load_plan(scale), tmp_path / "bundle")
    assert [(name, det, warm) for name, det, _, warm in runs] == [
        ("restorer", tmp_path / "bundle", tmp_path / "line"), ("ablation", None, tmp_path / "blind")]
    assert runs[1][2].minutes == 2.0 and runs[0][2].minutes != 2.0
    scale.write_text("ablation = false\n")
    assert [name for name, *_ in restorer_runs(load_plan(scale), tmp_path / "bundle")] == ["restorer"]


def test_scale_files_are_checked(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[restorer]\nmystery = 1\n")
    with pytest.raises(RecipeError, match="mystery"):
        load_plan(bad)
    bad.write_text("wat = 1\n")
    with pytest.raises(RecipeError, match="wat"):
        load_plan(bad)
    nested = tmp_path / "nested.toml"
    nested.write_text("[restorer.unet]\nbase_channels = 8\n")
    plan = load_plan(nested)
    assert plan.restorer.unet.base_channels == 8 and plan.restorer.unet.channel_mult == (1, 2, 4, 8)
    assert main(["run", str(tmp_path), str(tmp_path / "w"), "--scale", str(nested)]) == 2  # no train/ val/


def test_the_campaign_runs_photomend_commands_as_child_processes(tmp_path):
    assert photomend(["train", "restorer", "--config", str(tmp_path / "missing.toml"), "--data", str(tmp_path)]) == 2


def test_pack_photos_writes_jpegs(photos, tmp_path):
    assert pack_photos(photos, tmp_path / "packed", max_side=64) == 5
    packed = sorted(p.relative_to(tmp_path / "packed").as_posix() for p in (tmp_path / "packed").rglob("*.jpg"))
    assert "train/astronaut.jpg" in packed and "val/rocket.jpg" in packed
    with Image.open(tmp_path / "packed" / "val" / "rocket.jpg") as im:
        assert max(im.size) == 64


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a few minutes on an idle machine; a shared one may take far longer
def test_gpu_campaign_script_runs_on_cpu_with_tiny_steps(photos, tmp_path):
    scale = tmp_path / "tiny.toml"
    scale.write_text(TINY_SCALE)
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out), "WORK": str(work), "SCALE": str(scale), "DEVICE": "cpu",
           "BENCH_SIZES": "none", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "training" / "gpu_campaign.sh"), str(photos)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert len(names) <= 8 and {"report.md", "campaign.log", "logs.tar.gz", "weights.tar.part00"} <= set(names)
    report = (out / "report.md").read_text()
    assert "project renderer" in report and "heldout renderer" in report
    assert report.count("guarded PSNR") == 2 and "ablation PSNR" in report
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert {"detector/log.jsonl", "restorer/log.jsonl", "ablation/log.jsonl"} <= set(tar.getnames())
    weights = tmp_path / "weights.tar"
    weights.write_bytes(b"".join(p.read_bytes() for p in sorted(out.glob("weights.tar.part*"))))
    with tarfile.open(weights) as tar:
        got = set(tar.getnames())
    bundle, ablation = ModelBundle(Path("bundle")), ModelBundle(Path("ablation"))
    names = {bundle.weights_file(DETECTOR), bundle.weights_file(RESTORER), ablation.weights_file(RESTORER)}
    assert {p.as_posix() for p in names} <= got
    from engine.inference.runtime import Restorer

    Restorer(work / "bundle", device="cpu")  # the bundle loads as a model folder
