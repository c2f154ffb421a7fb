"""Restorer training: a tiny run whose validation PSNR rises, resume, the ablation, and DDP (gloo)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.inference.restoration import RestorationModel
from engine.inference.sde import IRSDEConfig
from engine.models.unet import UNetConfig
from engine.training.common import load_trainer_state
from engine.training.recipes import RestorerRecipe
from engine.training.restorer import lr_factor, swap_conditions, train
from tests.builders import photo_splits

ROOT = Path(__file__).resolve().parents[3]
TINY_UNET = UNetConfig(base_channels=8, channel_mult=(1, 2, 4), attention_levels=(2,), attention_heads=2,
                       time_dim=16, cond_dim=32)
RECIPE = RestorerRecipe(unet=TINY_UNET, sde=IRSDEConfig(num_train_timesteps=20), steps=120, batch_size=8, crop=32,
                        preset="seed24", lr=3e-3, warmup_steps=5, val_images=12, val_crop=32, val_every=40,
                        ema_decay=0.9, deterministic_fraction=1.0, checkpoint_minutes=100.0, threads=1, amp=False)

TOML = """steps = {steps}
batch_size = 2
crop = 32
preset = "seed24"
lr = 3e-3
warmup_steps = 2
val_images = 4
val_crop = 32
val_every = {steps}
threads = 1
amp = false

[unet]
base_channels = 8
channel_mult = [1, 2, 4]
attention_levels = [2]
attention_heads = 2
time_dim = 16

[sde]
num_train_timesteps = 20
"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_splits(tmp_path_factory.mktemp("photos"),
                        {"train": ("astronaut", "coffee", "chelsea"), "val": ("rocket",)}, 96)


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
    from engine.models.daclip import DaClip, DaClipConfig, save_pretrained

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("daclip")
    save_pretrained(DaClip(DaClipConfig.for_clip_model("PhotoMend-ViT-Tiny-Test")), out)
    return out


def test_lr_schedule_warmup_then_cosine():
    r = RestorerRecipe(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, r) == pytest.approx(0.1)
    assert lr_factor(10, r) == pytest.approx(1.0)
    assert lr_factor(100, r) == pytest.approx(0.1)
    assert lr_factor(40, r) > lr_factor(70, r)




def test_swap_conditions_gives_some_samples_another_samples_condition():
    cond = torch.arange(8, dtype=torch.float32).view(8, 1, 1).expand(8, 3, 4).clone()
    assert torch.equal(swap_conditions(cond, 0.0), cond)
    assert torch.equal(swap_conditions(cond, 1.0), cond.roll(1, dims=0))  # every sample: its neighbour's
    assert torch.equal(swap_conditions(cond[:1], 1.0), cond[:1])  # nothing to swap with
    g = torch.Generator().manual_seed(0)
    mixed = swap_conditions(cond.repeat(50, 1, 1), 0.25, g)
    swapped = (mixed[:, 0, 0] != cond.repeat(50, 1, 1)[:, 0, 0]).float().mean()
    assert 0.15 < swapped < 0.35
    assert all(torch.equal(row, row[0, 0].expand_as(row)) for row in mixed)  # whole conditions, not parts




def test_tiny_conditioned_run_improves_validation_psnr(photos, detector_dir, tmp_path):
    seen = []
    # three tiny photos cannot generalise to a fourth: validate on fixed crops of the training photos
    result = train(RECIPE, photos / "train", photos / "train", tmp_path, daclip_dir=detector_dir, device="cpu",
                   progress=seen.append)
    assert [s.step for s in seen] == list(range(1, RECIPE.steps + 1))
    history = [psnr for _, psnr in result["history"]]
    assert len(history) == 3 and history[-1] > history[0] + 0.3
    # the fresh network returns its input (zero-initialised head): training must beat that start
    assert result["val_psnr"] > result["input_psnr"] + 0.3
    assert [s.val_psnr is not None for s in seen].count(True) == 3
    model = RestorationModel.from_dir(tmp_path)
    assert model.conditioned and model.cond_dim == 32
    assert load_trainer_state(tmp_path)["step"] == RECIPE.steps


def test_resume_continues_from_the_saved_step(photos, detector_dir, tmp_path):
    import dataclasses

    short = dataclasses.replace(RECIPE, steps=10, val_every=10, batch_size=2)
    train(short, photos / "train", photos / "val", tmp_path, daclip_dir=None, device="cpu")
    assert load_trainer_state(tmp_path)["step"] == 10
    seen = []
    longer = dataclasses.replace(short, steps=14)
    train(longer, photos / "train", photos / "val", tmp_path, daclip_dir=None, resume=True, device="cpu",
          progress=seen.append)
    assert [s.step for s in seen] == [11, 12, 13, 14]
    assert load_trainer_state(tmp_path)["step"] == 14
    assert not RestorationModel.from_dir(tmp_path).conditioned
    with pytest.raises(ValueError, match="conditioning"):
        train(longer, photos / "train", photos / "val", tmp_path, daclip_dir=detector_dir, resume=True,
              device="cpu")


def test_init_fine_tunes_from_an_existing_restorer(photos, detector_dir, tmp_path):
    import dataclasses

    short = dataclasses.replace(RECIPE, steps=6, val_every=6, batch_size=2)
    train(short, photos / "train", photos / "val", tmp_path / "first", daclip_dir=detector_dir, device="cpu")
    first = RestorationModel.from_dir(tmp_path / "first")
    # the recipe's network differs: the initial restorer's configuration wins
    other = dataclasses.replace(short, steps=2, val_every=2, unet=dataclasses.replace(TINY_UNET, base_channels=4))
    seen = []
    train(other, photos / "train", photos / "val", tmp_path / "tuned", daclip_dir=detector_dir, device="cpu",
          init_dir=tmp_path / "first", progress=seen.append)
    assert [s.step for s in seen] == [1, 2]  # fresh schedule
    tuned = RestorationModel.from_dir(tmp_path / "tuned")
    assert tuned.config == first.config
    a, b = first.net.state_dict(), tuned.net.state_dict()
    diffs = [float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point()]
    assert max(diffs) > 0 and sorted(diffs)[len(diffs) // 2] < 0.05  # moved a little from the start, not re-initialised
    with pytest.raises(ValueError, match="conditioning"):
        train(other, photos / "train", photos / "val", tmp_path / "bad", daclip_dir=None, device="cpu",
              init_dir=tmp_path / "first")


def test_resume_without_state_is_an_error(photos, tmp_path):
    with pytest.raises(ValueError, match="nothing to resume"):
        train(RECIPE, photos / "train", photos / "val", tmp_path / "empty", resume=True, device="cpu")


def test_cli_and_ddp_with_gloo(photos, detector_dir, tmp_path):
    """``torchrun --nproc-per-node 2`` on CPU (gloo) through the real CLI, a few steps."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TOML.format(steps=4))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "engine", "train", "restorer", "--config", str(cfg), "--data", str(photos / "train"),
           "--daclip", str(detector_dir), "--out", str(out), "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "validation PSNR" in proc.stdout + proc.stderr
    assert load_trainer_state(out)["step"] == 4
    RestorationModel.from_dir(out)


def test_cli_usage_errors(photos, tmp_path):
    from engine.cli import main

    assert main(["train", "restorer", "--config", str(tmp_path / "missing.toml"), "--data", str(photos)]) == 2
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TOML.format(steps=2))
    assert main(["train", "restorer", "--config", str(cfg), "--data", str(photos / "train")]) == 2  # no --daclip


def test_region_training_conditions_each_crop_on_its_whole_region(photos, detector_dir, tmp_path, monkeypatch):
    import dataclasses

    from engine.inference.detect import Detector

    shapes = []
    real = Detector.analyze

    def spy(self, image):
        shapes.append(image.shape)
        return real(self, image)

    monkeypatch.setattr(Detector, "analyze", spy)
    recipe = dataclasses.replace(RECIPE, steps=3, batch_size=2, val_images=2, val_every=3, region_max=80)
    result = train(recipe, photos / "train", photos / "val", tmp_path, daclip_dir=detector_dir, device="cpu")
    regions = shapes  # validation crops are conditioned as one view each, not analysed
    assert len(regions) == recipe.steps * recipe.batch_size  # one analysis per training sample
    assert all(32 <= min(s[:2]) <= 80 for s in regions) and any(min(s[:2]) > 32 for s in regions)
    assert result["val_psnr"] > 0


# ------------------------------------------------------------------ restorer v2: the shared region pool


@pytest.fixture(scope="module")
def presence_detector_dir(tmp_path_factory):
    """A tiny detector v2 (ResNet tower with a presence head), as the restorer v2 is conditioned on."""
    from engine.models.daclip import DaClip, DaClipConfig, save_pretrained

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("daclip_v2")
    save_pretrained(DaClip(DaClipConfig.for_clip_model("PhotoMend-RN-Tiny-Test", presence=True)), out)
    return out


POOL = dict(pool_size=6, pool_refresh=1, region_min=40, region_max=64, renderers=("project",), val_images=3,
            val_crop=32, identity_fraction=0.3, seed24_fraction=0.3, max_side=96)


def test_pool_training_conditions_each_region_on_the_detectors_output(photos, presence_detector_dir, tmp_path,
                                                                       monkeypatch):
    import dataclasses
    import json

    from engine.inference.detect import Detector

    shapes = []
    real = Detector.analyze

    def spy(self, image):
        shapes.append(image.shape)
        return real(self, image)

    monkeypatch.setattr(Detector, "analyze", spy)
    recipe = dataclasses.replace(RECIPE, steps=4, batch_size=3, val_every=4, **POOL)
    result = train(recipe, photos / "train", photos / "val", tmp_path, daclip_dir=presence_detector_dir,
                   device="cpu")
    # 6 pool regions + 3 refreshed (one after each batch but the last) + 3 x 3 validation crops' regions
    assert len(shapes) == 6 + 3 + 9
    assert all(min(s[:2]) >= 32 for s in shapes) and any(min(s[:2]) > 32 for s in shapes)  # regions, not crops
    assert set(result["figures"]) == {"val", "val_input", "heldout", "heldout_input", "clean"}
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    val = [entry for entry in log if "val" in entry]
    assert len(val) == 1 and val[0]["step"] == 4 and val[0]["cpu_hours"] > 0 and val[0]["seconds"] > 0
    state = load_trainer_state(tmp_path)
    assert state["step"] == 4 and state["cpu_seconds"] > 0 and state["elapsed"] > 0
    assert RestorationModel.from_dir(tmp_path).conditioned


def test_pool_ablation_and_resume(photos, tmp_path):
    import dataclasses

    recipe = dataclasses.replace(RECIPE, steps=2, batch_size=2, val_every=2, **POOL)
    train(recipe, photos / "train", photos / "val", tmp_path, daclip_dir=None, device="cpu")
    seen = []
    result = train(dataclasses.replace(recipe, steps=3), photos / "train", photos / "val", tmp_path,
                   daclip_dir=None, resume=True, device="cpu", progress=seen.append)
    assert [s.step for s in seen] == [3] and result["steps"] == 3
    assert not RestorationModel.from_dir(tmp_path).conditioned


def test_a_time_budget_ends_the_run_and_is_carried_across_resumes(photos, tmp_path):
    import dataclasses

    quick = dataclasses.replace(RECIPE, steps=50, batch_size=2, val_every=50, val_images=2, minutes=1e-6)
    result = train(quick, photos / "train", photos / "val", tmp_path, daclip_dir=None, device="cpu")
    assert result["steps"] == 1  # the budget was spent by the first step
    spent = load_trainer_state(tmp_path)["elapsed"]
    assert spent > 0
    again = train(quick, photos / "train", photos / "val", tmp_path, daclip_dir=None, resume=True, device="cpu")
    assert again["steps"] == 1 and load_trainer_state(tmp_path)["elapsed"] >= spent  # nothing more to do
    longer = dataclasses.replace(quick, steps=3, minutes=60.0)
    assert train(longer, photos / "train", photos / "val", tmp_path, daclip_dir=None, resume=True,
                 device="cpu")["steps"] == 3


def test_time_progress_shortens_the_cosine():
    r = RestorerRecipe(steps=1000, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(100, r, time_progress=1.0) == pytest.approx(0.1)
    assert lr_factor(100, r, time_progress=0.5) == pytest.approx(0.55)
    assert lr_factor(900, r, time_progress=0.1) == lr_factor(900, r)  # the step's progress is further


def test_pool_recipe_sizes_are_checked():
    with pytest.raises(ValueError, match="region_min"):
        RestorerRecipe(pool_size=10, crop=128, region_min=96, region_max=640)
    with pytest.raises(ValueError, match="region_min"):
        RestorerRecipe(pool_size=10, crop=128, region_min=128, region_max=0)


def test_restorer_v2_recipe_loads_and_uses_the_shared_synthesis(tmp_path):
    from engine.training.common import RecipeError, load_recipe

    path = ROOT / "training" / "restorer_v2.toml"
    recipe = load_recipe(path, RestorerRecipe)
    assert recipe.pool_size > 0 and recipe.identity_fraction > 0 and recipe.seed24_fraction > 0
    assert recipe.condition_swap > 0 and recipe.minutes > 0
    assert tuple(recipe.renderers) == ("project", "albumentations")  # the held-out renderer stays out
    bad = tmp_path / "bad.toml"
    bad.write_text("mystery_knob = 3\n" + path.read_text())
    with pytest.raises(RecipeError, match="mystery_knob"):
        load_recipe(bad, RestorerRecipe)


def test_pool_specs_carry_the_photo_augmentations():
    from engine.training.restorer import pool_specs

    recipe = RestorerRecipe(pool_size=10, crop=128, region_min=128, region_max=256, photo_jitter=0.3,
                            photo_turns=True, photo_highlights=0.2)
    spec, _ = pool_specs(recipe)
    assert (spec.photo_jitter, spec.photo_turns, spec.photo_highlights) == (0.3, True, 0.2)


@pytest.fixture(scope="module")
def val_photos(photos, tmp_path_factory):
    from engine.tools.synth import SynthSettings, synthesize

    out = tmp_path_factory.mktemp("val_photos")
    synthesize(photos / "val", out, SynthSettings(preset="all", per_image=4, seed=3))
    return out


def test_whole_photo_validation_logs_the_issue_groups(photos, presence_detector_dir, val_photos, tmp_path):
    import dataclasses
    import json

    recipe = dataclasses.replace(RECIPE, steps=3, batch_size=2, val_every=3, val_photos_every=2,
                                 val_photos_limit=3, **POOL)
    train(recipe, photos / "train", photos / "val", tmp_path, daclip_dir=presence_detector_dir, device="cpu",
          val_photos=val_photos)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    photo_logs = [entry for entry in log if "photos" in entry]
    assert [entry["step"] for entry in photo_logs] == [2, 3]  # every val_photos_every steps and at the end
    figures = photo_logs[-1]["photos"]
    assert {"gain", "below", "guarded_gain"} <= set(figures)  # conditioned: the guard's figures beside
    assert 0 <= figures["below"] <= 3 and all(isinstance(v, (int, float)) for v in figures.values())
    ablation = tmp_path / "ablation"
    train(dataclasses.replace(recipe, steps=2, val_photos=str(val_photos)), photos / "train", photos / "val",
          ablation, daclip_dir=None, device="cpu")  # the recipe's folder when none is given
    abl = [json.loads(line) for line in (ablation / "log.jsonl").read_text().splitlines() if "photos" in line]
    assert len(abl) == 1 and "gain" in abl[0]["photos"] and "guarded_gain" not in abl[0]["photos"]


def test_whole_photo_validation_folder_errors_name_the_file(photos, tmp_path):
    import dataclasses

    from engine.training.common import TrainingDataError

    recipe = dataclasses.replace(RECIPE, steps=1, batch_size=2, **POOL)
    with pytest.raises(TrainingDataError, match="labels.jsonl"):
        train(recipe, photos / "train", photos / "val", tmp_path, daclip_dir=None, device="cpu",
              val_photos=tmp_path / "nothing")
    with pytest.raises(ValueError, match="val_photos_limit"):
        RestorerRecipe(val_photos_limit=0)
