"""DA-CLIP training: learning signal, checkpoints, resume, the CLI and DDP through torchrun (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models.daclip import load_pretrained
from engine.training.daclip import train
from engine.training.recipes import DaClipRecipe
from tests.builders import sample_photos

ROOT = Path(__file__).resolve().parents[3]
TINY = dict(clip_model="PhotoMend-ViT-Tiny-Test", crop=32, batch_size=8, base_steps=2, control_steps=2,
            checkpoint_every=2, log_every=1, warmup_steps=1, threads=1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return sample_photos(tmp_path_factory.mktemp("clean"), ("astronaut", "chelsea", "coffee"), 96)


def _recipe(**changes) -> DaClipRecipe:
    return DaClipRecipe(**{**TINY, **changes})


@pytest.mark.parametrize("clip_model", ["PhotoMend-ViT-Tiny-Test", "PhotoMend-RN-Tiny-Test"])
def test_train_writes_checkpoint_log_and_detector(photos, tmp_path, clip_model):
    seen = []
    result = train(_recipe(clip_model=clip_model), photos, tmp_path / "run", export=tmp_path / "export",
                   on_step=lambda s, m: seen.append((s, m["stage"])))
    assert seen == [(1, "base"), (2, "base"), (3, "control"), (4, "control")]
    assert result["steps"] == 4
    for name in ("checkpoint.safetensors", "checkpoint.json", "trainer_state.pt", "log.jsonl",
                 "model/detector.json", "model/detector.safetensors"):
        assert (tmp_path / "run" / name).is_file(), name
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in logs)
    model = load_pretrained(tmp_path / "export")
    assert model.cfg.n_slots == 2 and model.cfg.clip_model == clip_model


def test_resume_continues_an_interrupted_run(photos, tmp_path):
    run = tmp_path / "run"

    def interrupt(step, metrics):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_recipe(control_steps=4), photos, run, on_step=interrupt)
    state = torch.load(run / "trainer_state.pt", weights_only=True)
    assert state["step"] == 2 and state["stage"] == "base"
    from safetensors.torch import load_file

    saved = load_file(run / "checkpoint.safetensors")
    steps = []
    result = train(_recipe(control_steps=4), photos, run, resume=True, on_step=lambda s, m: steps.append(s))
    assert steps == [3, 4, 5, 6] and result["steps"] == 6
    # the base CLIP trained before the interruption is the one the controller stage froze
    final = load_pretrained(run / "model")
    w = "clip.visual.transformer.resblocks.0.mlp.c_fc.weight"
    assert torch.allclose(final.state_dict()[w], saved[w].float(), atol=1e-3)
    assert torch.load(run / "trainer_state.pt", weights_only=True)["step"] == 6


def test_resume_after_the_last_step_does_nothing(photos, tmp_path):
    run = tmp_path / "run"
    train(_recipe(), photos, run)
    steps = []
    assert train(_recipe(), photos, run, resume=True, on_step=lambda s, m: steps.append(s))["steps"] == 4
    assert steps == []


def test_init_continues_the_control_stage_of_an_existing_detector(photos, tmp_path):
    first = train(_recipe(), photos, tmp_path / "first")
    start = load_pretrained(first["model_dir"])
    w = "controller.transformer.resblocks.0.mlp.c_fc.weight"
    zero = "zero_linears.0.weight"
    assert start.state_dict()[zero].abs().sum() > 0  # the first run trained its control linears
    seen = []
    result = train(_recipe(base_steps=0, control_steps=2), photos, tmp_path / "cont", init=Path(first["model_dir"]),
                   on_step=lambda s, m: seen.append((s, m["stage"])))
    assert seen == [(1, "control"), (2, "control")] and result["steps"] == 2
    cont = load_pretrained(tmp_path / "cont" / "model")
    # the frozen CLIP is the initial one; the controller went on from its weights, not from a fresh copy
    base = "clip.visual.transformer.resblocks.0.mlp.c_fc.weight"
    assert torch.equal(cont.state_dict()[base], start.state_dict()[base])
    assert cont.state_dict()[zero].abs().sum() > 0
    moved = (cont.state_dict()[w] - start.state_dict()[w]).abs().max()
    assert 0 < moved < 0.05
    with pytest.raises(ValueError, match="base_steps"):
        train(_recipe(), photos, tmp_path / "bad", init=Path(first["model_dir"]))


def test_cli_train_and_usage_errors(photos, tmp_path, capsys):
    from engine.cli import main as cli_main

    recipe = tmp_path / "tiny.toml"
    recipe.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items()) + "\n")
    base = ["train", "daclip", "--config", str(recipe), "--no-progress"]
    assert cli_main(base + ["--data", str(photos), "--out", str(tmp_path / "run"), "--steps", "2"]) == 0
    assert "detector written to" in capsys.readouterr().out
    assert cli_main(base + ["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.toml").write_text("no_such_key = 1\n")
    assert cli_main(["train", "daclip", "--config", str(tmp_path / "bad.toml"), "--data", str(photos)]) == 2
    assert "no_such_key" in capsys.readouterr().err
    assert cli_main(base + ["--data", str(photos), "--init", str(tmp_path), "--out", str(tmp_path / "r3")]) == 2
    assert "no detector.json" in capsys.readouterr().err


def test_ddp_with_torchrun_gloo_two_processes(photos, tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items()) + "\n")
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "engine", "train", "daclip",
           "--config", str(recipe), "--data", str(photos), "--out", str(tmp_path / "run"), "--no-progress",
           "--device", "cpu"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("detector written to") == 1  # only rank 0 writes and reports
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3, 4]
    assert load_pretrained(tmp_path / "run" / "model").cfg.n_slots == 2




def test_the_wall_clock_budget_splits_the_stages_and_drives_the_cosine(monkeypatch):
    from engine.training import daclip as module

    now = [1000.0]
    monkeypatch.setattr(module.time, "time", lambda: now[0])
    clock = module._Clock(budget=100.0, base_share=0.25, before=10.0)
    assert clock.stage_progress("base") == pytest.approx(0.4)  # 10 s of 25
    now[0] += 40.0  # 50 s in all: the base stage's time is over, the control stage is 1/3 through
    assert clock.stage_progress("base") > 1.0 and clock.stage_progress("control") == pytest.approx(25 / 75)
    # the cosine follows time when time runs ahead of the steps
    assert module._lr_at(10, 0, 10_000, 1.0, 5, time_progress=1.0) == pytest.approx(0.0)
    assert module._lr_at(10, 0, 10_000, 1.0, 5, time_progress=0.5) == pytest.approx(0.5)
    assert module._lr_at(2, 0, 10_000, 1.0, 5) == pytest.approx(0.6 * 0.5 * (1 + 1))  # warm-up
    assert module._Clock(budget=0.0, base_share=0.5).stage_progress("control") == 0.0


def test_a_pool_run_with_presence_stops_at_its_budget(photos, tmp_path):
    recipe = DaClipRecipe(**{**TINY, "clip_model": "PhotoMend-RN-Tiny-Test", "views": "pool", "presence": True,
                             "region_min": 48, "region_max": 64, "pool_size": 8, "n_crops": 2, "batch_size": 3,
                             "base_steps": 100_000, "control_steps": 100_000, "minutes": 0.02,
                             "renderers": ("project",)})
    result = train(recipe, photos, tmp_path / "run")
    assert 0 < result["steps"] < recipe.total_steps
    model = load_pretrained(tmp_path / "run" / "model")
    assert model.presence_head is not None


def test_pool_spec_carries_the_photo_augmentations():
    from engine.training.daclip import _pool_spec
    from engine.training.recipes import DaClipRecipe

    spec = _pool_spec(DaClipRecipe(views="pool", photo_jitter=0.3, photo_turns=True, photo_highlights=0.2))
    assert (spec.photo_jitter, spec.photo_turns, spec.photo_highlights) == (0.3, True, 0.2)
