"""Train the DA-CLIP detector: a small base CLIP from scratch, then the two-slot controller.

``photomend train daclip --config training/daclip.toml --data CLEAN_DIR [--out RUN_DIR]``
(the command line is :mod:`engine.commands.train`; :func:`train` reads top to bottom: model, data,
the stage's loss and optimiser, the loop, checkpoints, the exported detector).

Stage ``base`` (skipped with ``--clip-weights``): the open_clip model named by the recipe learns
from synthetic degraded crops. Each image is matched (cross-entropy over cosine x logit scale)
to the caption of its degradation set among the captions of every set of at most two names
(``"a hazy and noisy photo"``, ``"a clean photo"``), and, for content, each degraded crop is
matched to its own clean crop among the batch (InfoNCE).

Stage ``control``: the base CLIP is frozen, the controller starts as a copy of its image tower
with zero control linears. Loss: the permutation-invariant slot loss of
:func:`engine.training.losses.slot_set_loss` against the prototypes of the true set (filled with
``none``) plus ``content_weight`` x (1 - cosine) between the controlled content embedding of the
degraded crop and the frozen embedding of the clean crop. Both stages' losses are in
:mod:`engine.training.losses`.

A run directory holds ``checkpoint.safetensors/.json`` (the model), ``trainer_state.pt``
(optimizer, step; weights only) and ``log.jsonl``; ``--resume`` continues an interrupted run.
The final detector is written with :func:`engine.models.daclip.save_pretrained` to
``RUN_DIR/model`` and to ``--export DIR`` if given. CUDA and mixed precision are used when
present; under ``torchrun`` each process trains on its own stream with DDP (gloo on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import open_clip
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from engine.inference.device import autocast, pick_device
from engine.models.daclip import (
    ARCHITECTURE,
    DaClip,
    DaClipConfig,
    all_sets,
    load_pretrained,
    save_pretrained,
    set_caption,
)
from engine.models.serialization import load_weights, save_model
from engine.training.common import (
    DistInfo,
    RecipeError,
    all_reduce_mean,
    load_trainer_state,
    save_trainer_state,
    setup_distributed,
)
from engine.training.detector_validation import ValidationSets
from engine.training.losses import BaseStage, ControlStage, presence_target, set_targets
from engine.training.recipes import DaClipRecipe
from engine.training.region_pool import PoolSpec, RegionPool
from engine.training.synthetic import PhotoViews, SyntheticPairs, collate_pairs

MAX_LOGIT_SCALE = math.log(100.0)


# ---------------------------------------------------------------------------------------- schedule


def _lr_at(step: int, stage_start: int, stage_steps: int, base_lr: float, warmup: int,
           time_progress: float = 0.0) -> float:
    s = step - stage_start
    warm = min(1.0, (s + 1) / warmup)
    progress = max((s - warmup) / max(1, stage_steps - warmup), time_progress, 0.0)
    return base_lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclasses.dataclass
class _Clock:
    """Wall-clock budget of a run (``DaClipRecipe.minutes``), carried across resumes."""

    budget: float            # seconds; 0: no budget
    base_share: float        # fraction of the budget for the base stage
    before: float = 0.0      # seconds spent before this process (resume)
    started: float = dataclasses.field(default_factory=lambda: time.time())

    def elapsed(self) -> float:
        return self.before + time.time() - self.started

    def stage_progress(self, stage: str) -> float:
        if self.budget <= 0:
            return 0.0
        base_end = self.budget * self.base_share
        if stage == "base":
            return self.elapsed() / max(base_end, 1e-9)
        return (self.elapsed() - base_end) / max(self.budget - base_end, 1e-9)

    def spent(self) -> bool:
        """The budget is used up (the control stage's share is over)."""
        return bool(self.budget and self.stage_progress("control") >= 1.0)


# ---------------------------------------------------------------------------------------- model


def _device(recipe: DaClipRecipe, dist: DistInfo) -> torch.device:
    device = pick_device(recipe.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    return device


def _build_model(recipe: DaClipRecipe, clip_weights: Path | None, init: Path | None = None) -> DaClip:
    if init is not None:
        model = load_pretrained(init)  # its own open_clip config; the recipe's clip_model is not used
    else:
        model = DaClip(DaClipConfig.for_clip_model(recipe.clip_model, presence=recipe.presence))
        if clip_weights is not None:
            base = open_clip.create_model(recipe.clip_model, pretrained=str(clip_weights), weights_only=True)
            model.clip.load_state_dict(base.state_dict(), strict=False)
            model.init_controller()
    if recipe.n_crops > 0:  # detection reads a photo with as many native crops as training did
        model.cfg = dataclasses.replace(model.cfg, n_crops=recipe.n_crops)
    with torch.no_grad():
        model.clip.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
    return model


# ---------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class Batch:
    """One step's views on the device: ``names`` per view (at most ``n_slots`` each); ``presence``:
    the presence head's targets per region (pool views of a presence recipe), ``n_views`` per region."""

    lq: torch.Tensor
    hq: torch.Tensor
    names: list[tuple[str, ...]]
    presence: torch.Tensor | None = None
    n_views: int = 1


def _pool_spec(recipe: DaClipRecipe) -> PoolSpec:
    return PoolSpec(size=recipe.crop, n_crops=recipe.n_crops, preset=recipe.preset, renderers=tuple(recipe.renderers),
                    region_min=recipe.region_min, region_max=recipe.region_max, max_zoom_out=recipe.max_zoom_out,
                    photo_jitter=recipe.photo_jitter, photo_turns=recipe.photo_turns,
                    photo_highlights=recipe.photo_highlights)


def _pool_batches(pool: RegionPool, recipe: DaClipRecipe, cfg: DaClipConfig, device: torch.device) -> Iterator[Batch]:
    while True:
        batch = pool.batch(recipe.batch_size)
        pool.refresh(recipe.pool_refresh)
        n_views = batch["n_views"]
        region_names = batch["names"]
        names = [n for n in region_names for _ in range(n_views)]
        presence = presence_target(region_names, cfg.vocabulary).to(device) if recipe.presence else None
        # sets larger than the slots (triples) still teach the presence head; the slot loss
        # sees them as their first n_slots names
        yield Batch(batch["lq"].to(device), batch["hq"].to(device), [n[: cfg.n_slots] for n in names],
                    presence, n_views)


def _loader_batches(batches: Iterator[dict], cfg: DaClipConfig, device: torch.device) -> Iterator[Batch]:
    for batch in batches:  # samples whose set does not fit the slots are left out
        keep = [i for i, names in enumerate(batch["names"]) if len(names) <= cfg.n_slots]
        yield Batch(batch["lq"][keep].to(device, non_blocking=True), batch["hq"][keep].to(device, non_blocking=True),
                    [batch["names"][i] for i in keep])


def training_batches(recipe: DaClipRecipe, data: Path, cfg: DaClipConfig, step: int, dist: DistInfo,
                     device: torch.device) -> Iterator[Batch]:
    """The recipe's ``views`` of the photos in ``data``, seeded by the step the run starts at."""
    seed = recipe.seed + 7919 * step
    if recipe.views == "pool":
        if dist.world_size > 1:
            raise RecipeError("views = 'pool' trains in one process (use torchrun with 'photo' views)")
        pool = RegionPool(data, _pool_spec(recipe), recipe.pool_size, seed=seed, max_side=recipe.max_side,
                          processes=max(1, recipe.threads or 1))
        return _pool_batches(pool, recipe, cfg, device)
    if recipe.views == "photo":
        dataset = PhotoViews(data, recipe.crop, preset=recipe.preset, seed=seed, rank=dist.rank,
                             world_size=dist.world_size, region_min=recipe.region_min,
                             region_max=recipe.region_max, views_per_region=recipe.views_per_region)
    elif recipe.views == "crop":
        dataset = SyntheticPairs(data, recipe.crop, preset=recipe.preset, seed=seed, rank=dist.rank,
                                 world_size=dist.world_size, min_crop_scale=recipe.min_crop_scale)
    else:
        raise RecipeError(f"views must be 'photo', 'crop' or 'pool', got {recipe.views!r}")
    loader = DataLoader(dataset, batch_size=recipe.batch_size, collate_fn=collate_pairs,
                        num_workers=recipe.num_workers)
    return _loader_batches(iter(loader), cfg, device)


def validation_sets(recipe: DaClipRecipe, val: Path | None, dist: DistInfo) -> ValidationSets | None:
    """The held-out region sets scored every ``val_every`` steps (rank 0, with ``--val``)."""
    if val is None or recipe.val_every <= 0 or not dist.is_main:
        return None
    return ValidationSets(val, _pool_spec(recipe), recipe.val_regions, seed=recipe.seed + 1, max_side=recipe.max_side)


# ---------------------------------------------------------------------------------------- stages


def base_stage_loss(model: DaClip, captions: torch.Tensor, recipe: DaClipRecipe) -> BaseStage:
    """Make the whole base CLIP (and the presence head) trainable; its loss module."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.unfreeze_clip()
    # a random, frozen token embedding is enough for a fixed set of captions and
    # spares the optimizer the 49408-row table
    model.clip.token_embedding.weight.requires_grad_(recipe.train_token_embedding)
    if model.presence_head is not None:
        model.presence_head.requires_grad_(True)
    return BaseStage(model, captions, recipe.base_content_weight, recipe.base_hq_fraction,
                     recipe.prototype_separation, recipe.presence_weight)


def control_stage_loss(model: DaClip, recipe: DaClipRecipe) -> ControlStage:
    """Freeze the base CLIP (its text tower stays trainable if the recipe says so); its loss module."""
    for p in model.parameters():
        p.requires_grad_(True)
    model.freeze_clip(keep_text_trainable=recipe.control_trains_text)
    return ControlStage(model, recipe.content_weight, recipe.content_fraction, recipe.prototype_separation,
                        recipe.presence_weight)


def make_optimizer(model: DaClip, recipe: DaClipRecipe, lr: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases, norms and scalars."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))


@dataclasses.dataclass
class Stage:
    """The stage being trained: its loss module (DDP-wrapped under torchrun), optimiser and schedule
    (``lr`` at its peak, from step ``start`` for ``steps`` steps)."""

    name: str
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    lr: float
    start: int
    steps: int


# ---------------------------------------------------------------------------------------- the loop


class DetectorTrainer:
    """One run in ``out``: the model, the stage it trains, the step, the clock, the log and checkpoints.

    ``state``: the trainer state of the run being resumed (``None``: a new run); ``init``: the
    detector folder whose control stage the run continues (its controller is not re-initialised).
    """

    def __init__(self, recipe: DaClipRecipe, model: DaClip, out: Path, device: torch.device, dist: DistInfo,
                 state: dict | None, init: Path | None, step: int):
        self.recipe, self.model, self.cfg, self.out = recipe, model, model.cfg, out
        self.device, self.dist, self.init, self.step = device, dist, init, step
        sets = all_sets(self.cfg.vocabulary)
        self.set_index_of = {frozenset(s): i for i, s in enumerate(sets)}
        self.captions = open_clip.tokenize([set_caption(s) for s in sets], context_length=self.cfg.context_length)
        self.use_amp = recipe.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and not torch.cuda.is_bf16_supported())
        self.log_path = out / "log.jsonl"
        self.started = time.time()
        state = state or {}
        self.clock = _Clock(recipe.minutes * 60.0, recipe.base_steps / max(1, recipe.total_steps),
                            before=float(state.get("elapsed", 0.0)))
        self.control_start = int(state.get("control_start", recipe.base_steps))
        self.resumed_stage = state.get("stage")
        self.resumed_optimizer = state.get("optimizer")
        self.stage: Stage | None = None
        self.acc = 0.0

    def running(self) -> bool:
        return self.step < self.recipe.total_steps and not self.clock.spent()

    def stage_due(self) -> str:
        """``base`` until its steps or its share of the time are spent, then ``control`` for good."""
        if (self.stage is not None and self.stage.name == "control") or self.resumed_stage == "control":
            return "control"
        if self.step >= self.recipe.base_steps or (self.clock.budget and self.clock.stage_progress("base") >= 1.0):
            return "control"
        return "base"

    def enter(self, name: str) -> None:
        """Start stage ``name`` (nothing when it runs already): its loss, a fresh optimiser (or the
        resumed one), DDP."""
        if self.stage is not None and self.stage.name == name:
            return
        recipe, model = self.recipe, self.model
        if name == "base":
            loss = base_stage_loss(model, self.captions, recipe).to(self.device)
            lr, start, steps = recipe.base_lr, 0, recipe.base_steps
        else:
            if self.init is None and self.step > 0 and self.resumed_stage != "control":
                model.init_controller()  # the controller starts as a copy of the trained base tower
                self.control_start = self.step
            loss = control_stage_loss(model, recipe).to(self.device)
            lr, start, steps = recipe.control_lr, self.control_start, recipe.control_steps
        optimizer = make_optimizer(model, recipe, lr)
        if self.resumed_stage == name and self.resumed_optimizer is not None:
            optimizer.load_state_dict(self.resumed_optimizer)
            self.resumed_optimizer = None
        self.stage = Stage(name, DDP(loss) if self.dist.enabled else loss, optimizer, lr, start, steps)
        model.train()

    def train_step(self, batch: Batch) -> dict:
        """One optimisation step of the current stage; returns the step's ``log.jsonl`` entry."""
        recipe, stage = self.recipe, self.stage
        warmup = min(recipe.warmup_steps, max(1, stage.steps // 5))
        for group in stage.optimizer.param_groups:
            group["lr"] = _lr_at(self.step, stage.start, stage.steps, stage.lr, warmup,
                                 self.clock.stage_progress(stage.name))
        with autocast(self.device, self.use_amp):
            loss, acc = self._loss(batch)
        stage.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if recipe.grad_clip > 0:
            self.scaler.unscale_(stage.optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in stage.optimizer.param_groups for p in g["params"]],
                                           recipe.grad_clip)
        self.scaler.step(stage.optimizer)
        self.scaler.update()
        with torch.no_grad():
            self.model.clip.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
            self.model.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
        self.step += 1
        metrics = all_reduce_mean(torch.stack([loss.detach().float().cpu(), acc.float().cpu()]), self.dist)
        self.acc = float(metrics[1])
        return {"step": self.step, "stage": stage.name, "loss": float(metrics[0]), "acc": self.acc,
                "lr": stage.optimizer.param_groups[0]["lr"], "seconds": round(self.clock.elapsed(), 1)}

    def _loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stage.name == "base":
            idx = torch.tensor([self.set_index_of[frozenset(n)] for n in batch.names], device=self.device)
            return self.stage.loss(batch.lq, batch.hq, idx, batch.presence, batch.n_views)
        targets = set_targets(batch.names, self.cfg.classes, self.cfg.n_slots).to(self.device)
        return self.stage.loss(batch.lq, batch.hq, targets, [frozenset(n) for n in batch.names], batch.presence,
                               batch.n_views)

    def record(self, info: dict, validation: ValidationSets | None) -> None:
        """After a step: its log line, the held-out figures and a checkpoint when they are due."""
        recipe, step = self.recipe, self.step
        if self.dist.is_main and (step % recipe.log_every == 0 or step == recipe.total_steps):
            self._log(info)
        last = step == recipe.total_steps or self.clock.spent()
        if validation is not None and (step % recipe.val_every == 0 or last):
            self.model.eval()
            figures = validation.evaluate(self.model, stage=self.stage.name)
            self.model.train()
            self._log({"step": step, "seconds": round(self.clock.elapsed(), 1), "val": figures})
        if (step % recipe.checkpoint_every == 0 or last) and self.dist.is_main:
            self.checkpoint()

    def _log(self, entry: dict) -> None:
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def checkpoint(self) -> None:
        """The model and the trainer state a resumed run starts from."""
        save_model(self.model, self.cfg, self.out / "checkpoint", ARCHITECTURE)
        save_trainer_state(self.out, {"step": self.step, "stage": self.stage.name,
                                      "optimizer": self.stage.optimizer.state_dict(),
                                      "elapsed": self.clock.elapsed(), "control_start": self.control_start})


def train(recipe: DaClipRecipe, data: Path, out: Path, resume: bool = False, clip_weights: Path | None = None,
          export: Path | None = None, on_step: Callable[[int, dict], None] | None = None,
          init: Path | None = None, val: Path | None = None) -> dict:
    """Run (or resume) both stages; return ``{"model_dir", "steps", "seconds", "acc"}``.

    ``init``: a detector folder whose CLIP and controller the control stage continues from (the
    recipe's base stage must then be empty: the command line sets it so)."""
    dist = setup_distributed()
    if recipe.threads > 0:
        torch.set_num_threads(recipe.threads)
    device = _device(recipe, dist)
    out = Path(out)
    torch.manual_seed(recipe.seed + dist.rank)
    if init is not None and recipe.base_steps > 0:
        raise RecipeError("init continues the control stage: the recipe must have base_steps = 0")

    model = _build_model(recipe, clip_weights, init)
    state = load_trainer_state(out) if resume else None
    step = 0
    if state is not None:
        load_weights(model, out / "checkpoint")
        step = int(state["step"])
    model.to(device)
    batches = training_batches(recipe, data, model.cfg, step, dist, device)
    validation = validation_sets(recipe, val, dist)
    out.mkdir(parents=True, exist_ok=True)

    trainer = DetectorTrainer(recipe, model, out, device, dist, state, init, step)
    while trainer.running():
        trainer.enter(trainer.stage_due())
        info = trainer.train_step(next(batches))
        if on_step is not None:
            on_step(trainer.step, info)
        trainer.record(info, validation)

    model.eval()
    model_dir = out / "model"
    if dist.is_main:
        save_pretrained(model, model_dir)
        if export is not None:
            save_pretrained(model, export)
    return {"model_dir": str(export or model_dir), "steps": trainer.step, "seconds": time.time() - trainer.started,
            "acc": trainer.acc}
