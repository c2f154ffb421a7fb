"""Train the IR-SDE restorer (conditional U-Net) on synthetic pairs with a frozen DA-CLIP.

``photomend train restorer --config training/restorer.toml --data CLEAN_DIR --daclip MODEL_DIR``
(the command line is :mod:`engine.commands.train`; :func:`train` reads top to bottom: detector and
network configuration, network and optimiser, data, validation sets, the loop, checkpoints).

Each step draws synthetic (lq, hq) crops (:class:`~engine.training.synthetic.SyntheticPairs`), the
frozen detector's condition of the LQ crop (:meth:`~engine.inference.detect.Detector.condition_batch`), a
timestep ``t`` and ``x_t`` from the IR-SDE forward marginal; the network predicts ``x0`` and is
trained with MSE. A share of each batch (``deterministic_fraction``) uses the exact one-step
inference input (``t = T``, ``x_T = mu``), which is what the default ``steps=1`` restoration sees.

With ``pool_size > 0`` (restorer v2) the pairs come from the detector's synthesis instead
(:mod:`engine.training.restorer_data` over :mod:`engine.training.region_pool`): regions of the
photos degraded whole by the renderer mix, native crops of them, identity samples, each region
conditioned once on what the frozen detector outputs for it (:meth:`Detector.analyze`); the
validation sets are then regions of the held-out photos, degraded by the training renderers and by
the held-out renderer, and their clean crops (logged as ``val``, ``heldout`` and ``clean``).

Run folder: ``checkpoint.{json,safetensors}`` (raw weights), ``restorer.{json,safetensors}`` (EMA
weights: the release), ``trainer_state.pt`` (optimizer, schedule, step, validation history, wall
and CPU seconds so far), ``log.jsonl`` (losses and validation figures against cumulative wall
seconds and CPU-hours). ``--resume`` continues from it; a ``minutes`` budget is carried across
resumes. DDP via ``torchrun`` (gloo on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from engine.bundle import RESTORER, ModelBundle
from engine.inference.detect import Detector
from engine.inference.device import autocast, pick_device
from engine.inference.restoration import ARCHITECTURE, RestorerConfig, sample
from engine.inference.sde import IRSDEScheduler
from engine.models.serialization import load_weights, read_config, save_model
from engine.models.unet import ConditionalUNet, upgrade_key
from engine.tools.metrics import batch_psnr
from engine.training.common import (
    EMA,
    DistInfo,
    TrainingDataError,
    all_reduce_mean,
    cleanup_distributed,
    load_trainer_state,
    save_trainer_state,
    setup_distributed,
)
from engine.training.losses import x0_loss
from engine.training.recipes import RestorerRecipe
from engine.training.region_pool import PoolSpec
from engine.training.restorer_data import (
    DetectorConditions,
    PairSpec,
    RegionPairPool,
    validation_regions,
    validation_set,
)
from engine.training.synthetic import (
    FixedSyntheticSet,
    RegionPairs,
    SyntheticPairs,
    collate_pairs,
    load_photos,
)

VAL_BATCH = 16  # validation crops per forward pass


@dataclass
class StepInfo:
    """What the progress callback receives after each optimisation step."""

    step: int
    total: int
    loss: float
    lr: float
    val_psnr: float | None = None  # set on validation steps
    input_psnr: float | None = None
    figures: dict | None = None    # every validation figure (pool: val, heldout, clean and their inputs)


def _mixed_stream(main_iter: Iterator, extra_iter: Iterator | None, fraction: float, seed: list[int]) -> Iterator:
    rng = np.random.default_rng(seed)
    while True:
        yield next(extra_iter) if extra_iter is not None and rng.random() < fraction else next(main_iter)


def _batches(stream: Iterator, batch_size: int) -> Iterator[dict]:
    while True:
        yield collate_pairs([next(stream) for _ in range(batch_size)])


def _conditions(detector, lq, regions):
    """Restorer conditions ``[B, 3, D]`` on ``lq``'s device: :meth:`Detector.analyze` of each sample's
    region, as the runtime conditions a photo's tiles; without regions, each crop as one view
    (:meth:`Detector.condition_batch`)."""
    if regions is None:
        return detector.condition_batch(lq)
    return torch.stack([detector.analyze(image).condition for image in regions]).to(lq.device)


def swap_conditions(cond, fraction: float, generator=None):
    """Give a random ``fraction`` of the samples the condition of the next sample in the batch.

    The detector is wrong on photos it has not seen (it calls lightly degraded photos hazy, for
    example); a restorer trained only on conditions that are right learns to obey them blindly and
    dehazes a photo that has no haze. Trained with some wrong conditions, it must also read the
    damage from the pixels. A batch of one is returned unchanged."""
    if fraction <= 0 or cond.shape[0] < 2:
        return cond
    mask = torch.rand(cond.shape[0], generator=generator, device=cond.device) < fraction
    return torch.where(mask.view(-1, *([1] * (cond.dim() - 1))), cond.roll(1, dims=0), cond)


def lr_factor(step: int, recipe: RestorerRecipe, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` at ``recipe.steps`` or, with a time
    budget, at the end of the budget (``time_progress`` 0-1), whichever comes first."""
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    progress = min(1.0, max((step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps),
                            time_progress))
    return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class Clock:
    """Wall and CPU seconds of a run, carried across resumes (``before_*`` from the trainer state),
    and its progress through ``budget`` seconds (0: no budget). The wall clock counts training
    (:meth:`start_training`: after the pool and the validation sets are made); the CPU clock counts
    this process from the start, setup included (rendering processes of the first fill are not)."""

    budget: float = 0.0
    before_wall: float = 0.0
    before_cpu: float = 0.0
    started_wall: float = field(default_factory=time.monotonic)
    started_cpu: float = field(default_factory=time.process_time)

    def start_training(self) -> None:
        self.started_wall = time.monotonic()

    def wall(self) -> float:
        return self.before_wall + time.monotonic() - self.started_wall

    def cpu(self) -> float:
        """CPU seconds of every thread of this process (the CPU-hours the model card plots)."""
        return self.before_cpu + time.process_time() - self.started_cpu

    def progress(self) -> float:
        return self.wall() / self.budget if self.budget > 0 else 0.0

    def expired(self) -> bool:
        return self.budget > 0 and self.wall() >= self.budget


def pool_specs(recipe: RestorerRecipe):
    """The region pool's and the samples' specifications of a ``pool_size > 0`` recipe."""
    pool = PoolSpec(size=recipe.crop, n_crops=0, preset=recipe.preset, renderers=tuple(recipe.renderers),
                    region_min=recipe.region_min, region_max=recipe.region_max, max_zoom_out=recipe.max_zoom_out,
                    photo_jitter=recipe.photo_jitter, photo_turns=recipe.photo_turns,
                    photo_highlights=recipe.photo_highlights)
    # the recipe's flat TOML keys of the same names (one list of the fields: PairSpec's)
    pairs = PairSpec(**{f.name: getattr(recipe, f.name) for f in dataclasses.fields(PairSpec)})
    return pool, pairs


def _pool_batches(pool, recipe: RestorerRecipe) -> Iterator[dict]:
    while True:
        yield pool.batch(recipe.batch_size)
        pool.refresh(recipe.pool_refresh)


def pool_validation_sets(recipe: RestorerRecipe, val_dir: Path, condition) -> dict[str, dict]:
    """The fixed validation sets of a pool recipe: ``val`` (training renderers, ``val_preset``),
    ``heldout`` (the held-out renderer, with ``val_heldout``) and ``clean`` (the clean crops of ``val``)."""
    spec, _ = pool_specs(recipe)
    spec = dataclasses.replace(spec, size=recipe.val_crop, preset=recipe.val_preset, photo_jitter=0.0,
                               photo_turns=False, photo_highlights=0.0,
                               region_min=max(recipe.region_min, recipe.val_crop),
                               region_max=max(recipe.region_max, recipe.region_min, recipe.val_crop))
    photos = load_photos(val_dir, recipe.max_side)
    regions = validation_regions(photos, spec, recipe.val_images, seed=1234)
    sets = {"val": validation_set(regions, recipe.val_crop, condition)}
    if recipe.val_heldout:
        held = validation_regions(photos, dataclasses.replace(spec, renderers=("heldout",)), recipe.val_images, 1234)
        sets["heldout"] = validation_set(held, recipe.val_crop, condition)
    sets["clean"] = validation_set(regions, recipe.val_crop, condition, clean=True)
    return sets


# ---------------------------------------------------------------------------------------- configuration


def _device(device: str, dist: DistInfo) -> torch.device:
    if dist.enabled and torch.cuda.is_available():
        return torch.device(f"cuda:{dist.local_rank}")
    return pick_device(device)


def _conditioning(detector: Detector | None, daclip_dir: Path | None) -> str:
    return "--daclip " + str(daclip_dir) if detector is not None else "--no-condition"


def restorer_config(recipe: RestorerRecipe, detector: Detector | None, daclip_dir: Path | None,
                    init_dir: Path | None) -> RestorerConfig:
    """The network to train: the recipe's, conditioned on the detector's embeddings when there is one,
    or that of the restorer in ``init_dir`` (whose conditioning must be the same)."""
    unet_cfg = dataclasses.replace(recipe.unet, conditioned=detector is not None,
                                   cond_dim=detector.embed_dim if detector is not None else recipe.unet.cond_dim)
    if init_dir is None:
        return RestorerConfig(unet=unet_cfg, sde=recipe.sde)
    init_cfg = read_config(ModelBundle(init_dir).stem(RESTORER), ARCHITECTURE, RestorerConfig)
    if init_cfg.unet.conditioned != (detector is not None) or init_cfg.unet.cond_dim != unet_cfg.cond_dim:
        raise TrainingDataError(f"{init_dir}: its conditioning does not match {_conditioning(detector, daclip_dir)}")
    return init_cfg


def resumed_run(out_dir: Path, detector: Detector | None) -> tuple[dict, RestorerConfig]:
    """The trainer state and network configuration of the run in ``out_dir`` (same conditioning)."""
    state = load_trainer_state(out_dir)
    if state is None:
        raise TrainingDataError(f"{out_dir}: nothing to resume (no trainer_state.pt)")
    config = read_config(out_dir / "checkpoint", ARCHITECTURE, RestorerConfig)
    if config.unet.conditioned != (detector is not None):
        raise TrainingDataError(f"{out_dir}: run was trained {'with' if config.unet.conditioned else 'without'} "
                                "conditioning; pass the same --daclip/--no-condition to resume")
    return state, config


# ---------------------------------------------------------------------------------------- network


def build_network(config: RestorerConfig, recipe: RestorerRecipe, dev: torch.device, out_dir: Path,
                  state: dict | None, init_dir: Path | None) -> tuple[ConditionalUNet, EMA]:
    """The network and its EMA: fresh (seeded), from ``init_dir`` (fine-tuning) or from the run's checkpoint."""
    torch.manual_seed(recipe.seed)
    net = ConditionalUNet(config.unet).to(dev)
    ema = EMA(net, recipe.ema_decay)
    if init_dir is not None and state is None:
        load_weights(net, ModelBundle(init_dir).stem(RESTORER), upgrade_key=upgrade_key)
        ema.shadow.load_state_dict(net.state_dict())
    if state is not None:
        load_weights(net, out_dir / "checkpoint")
        load_weights(ema.shadow, ModelBundle(out_dir).stem(RESTORER))
    return net, ema


def make_optimizer(net: ConditionalUNet, recipe: RestorerRecipe, state: dict | None) -> torch.optim.AdamW:
    """AdamW (made after loading: load_weights assigns new tensors, which an optimiser made before
    would not see), resumed from ``state``."""
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    return opt


# ---------------------------------------------------------------------------------------- data


def _pair_stream(recipe: RestorerRecipe, data_dir: Path, preset: str, seed: int, dist: DistInfo, start: int,
                 with_region: bool) -> Iterator[dict]:
    if recipe.region_max > 0:
        ds = RegionPairs(data_dir, recipe.crop, preset, seed, dist.rank, dist.world_size,
                         region_max=recipe.region_max, with_region=with_region)
    else:
        ds = SyntheticPairs(data_dir, recipe.crop, preset, seed, dist.rank, dist.world_size,
                            min_crop_scale=recipe.min_crop_scale)
    ds.set_epoch(start)  # a resumed run continues with fresh samples
    return iter(ds)


def training_batches(recipe: RestorerRecipe, data_dir: Path, detector: Detector | None,
                     condition: DetectorConditions | None, dist: DistInfo, start: int) -> Iterator[dict]:
    """Batches of (lq, hq) pairs: the region pool's (``pool_size > 0``, each with its condition), else
    crops of the ``preset`` mixed with ``seed24_fraction`` of seed24 ones."""
    if recipe.pool_size > 0:
        pool_spec, pair_spec = pool_specs(recipe)
        pool = RegionPairPool(load_photos(data_dir, recipe.max_side), pool_spec, pair_spec, recipe.pool_size,
                              seed=recipe.seed + 7919 * start + 104729 * dist.rank, condition=condition,
                              processes=recipe.pool_processes or max(1, recipe.threads))
        return _pool_batches(pool, recipe)
    with_region = detector is not None
    pairs = _pair_stream(recipe, data_dir, recipe.preset, recipe.seed, dist, start, with_region)
    extra = (_pair_stream(recipe, data_dir, "seed24", recipe.seed + 1, dist, start, with_region)
             if recipe.seed24_fraction > 0 else None)
    return _batches(_mixed_stream(pairs, extra, recipe.seed24_fraction, [recipe.seed, start, dist.rank]),
                    recipe.batch_size)


def validation_sets(recipe: RestorerRecipe, val_dir: Path, detector: Detector | None,
                    condition: DetectorConditions | None) -> dict[str, dict]:
    """The fixed validation sets, each ``{"lq", "hq", "cond"}`` (rank 0 only)."""
    if recipe.pool_size > 0:
        return pool_validation_sets(recipe, val_dir, condition)
    vset = FixedSyntheticSet(val_dir, recipe.val_crop, recipe.val_preset, recipe.val_images, seed=1234)
    vb = collate_pairs([vset[i] for i in range(len(vset))])
    vb["cond"] = _conditions(detector, vb["lq"], None) if detector is not None else None
    return {"val": vb}


# ---------------------------------------------------------------------------------------- the loop


class RestorerTrainer:
    """One run in ``out_dir``: the network, its EMA and optimiser, the schedule, the clock, the
    validation history, the log and checkpoints; ``state``: the trainer state of the run being
    resumed (its step, history and seconds so far), ``None`` for a new run."""

    def __init__(self, recipe: RestorerRecipe, config: RestorerConfig, net: ConditionalUNet, ema: EMA,
                 opt: torch.optim.Optimizer, detector: Detector | None, out_dir: Path, dev: torch.device,
                 dist: DistInfo, state: dict | None, clock: Clock):
        self.recipe, self.config, self.net, self.ema, self.opt = recipe, config, net, ema, opt
        self.detector, self.out_dir, self.dev, self.dist, self.clock = detector, out_dir, dev, dist, clock
        self.step = 0
        self.history: list[list[float]] = []
        if state is not None:
            self.step = int(state["step"])
            self.history = [list(h) for h in state.get("history", [])]
            self.clock.before_wall = float(state.get("elapsed", 0.0))
            self.clock.before_cpu = float(state.get("cpu_seconds", 0.0))
        self.last_checkpoint = time.monotonic()
        self.ddp_net = DistributedDataParallel(net) if dist.enabled else net
        self.sched = IRSDEScheduler(config.sde)
        enabled = dev.type == "cuda" and recipe.amp and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=enabled)

    def train_step(self, batches: Iterator[dict]) -> float:
        """One optimisation step on the next batch; returns the loss (averaged over the ranks)."""
        recipe, sched, dev = self.recipe, self.sched, self.dev
        for g in self.opt.param_groups:
            g["lr"] = recipe.lr * lr_factor(self.step, recipe, self.clock.progress())
        batch = next(batches)
        lq, hq = batch["lq"].to(dev, non_blocking=True), batch["hq"].to(dev, non_blocking=True)
        b = lq.shape[0]
        if self.detector is None:
            cond = None
        elif "cond" in batch:  # pool: each region's detector output, computed when it entered
            cond = batch["cond"].to(dev, non_blocking=True)
        else:
            cond = _conditions(self.detector, lq, batch.get("regions"))
        if cond is not None:
            cond = swap_conditions(cond, recipe.condition_swap)
        t = torch.randint(1, sched.T + 1, (b,), device=dev)
        x_t = sched.add_noise(hq, lq, t, torch.randn_like(hq))
        one_step = torch.rand(b, device=dev) < recipe.deterministic_fraction
        t = torch.where(one_step, torch.full_like(t, sched.T), t)
        x_t = torch.where(one_step[:, None, None, None], lq, x_t)  # exact one-step inference input
        with autocast(dev, recipe.amp):
            pred = self.ddp_net(x_t, lq, sched.network_time(t), cond)
        loss = x0_loss(pred.float(), hq, lq, recipe.loss)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if recipe.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), recipe.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.ema.update(self.net, self.step)
        loss_value = float(all_reduce_mean(loss.detach(), self.dist))
        self.step += 1
        return loss_value

    def last_step(self) -> bool:
        """Every rank stops at the same step, when the steps or (rank 0's) time run out."""
        stop = float(self.step == self.recipe.steps or (self.dist.is_main and self.clock.expired()))
        return bool(all_reduce_mean(torch.tensor([stop], device=self.dev), self.dist).item() > 0)

    def validate(self, val: dict[str, dict]) -> dict[str, float]:
        """Mean PSNR of the EMA network at steps=1 on each set (and of the inputs, except clean)."""
        figures = {}
        for name, vs in val.items():
            lq, hq, cond = vs["lq"], vs["hq"], vs["cond"]
            outs = []
            with torch.inference_mode(), autocast(self.dev, self.recipe.amp):
                for i in range(0, len(lq), VAL_BATCH):
                    c = cond[i:i + VAL_BATCH].to(self.dev) if cond is not None else None
                    out = sample(self.ema.shadow, self.sched, lq[i:i + VAL_BATCH].to(self.dev), c, 1)
                    outs.append(out.float().clamp(0, 1).cpu())
            figures[name] = float(sum(batch_psnr(torch.cat(outs), hq)) / len(hq))
            if name != "clean":
                figures[f"{name}_input"] = float(sum(batch_psnr(lq, hq)) / len(hq))
        return figures

    def validate_photos(self, pairs: list) -> dict[str, float]:
        """The issue's group figures of the EMA network on whole degraded photos (``pairs`` of
        :func:`engine.tools.evaluate.load_pairs`), steps 1, through the runtime's path; the guarded
        ones beside when the run is conditioned (the guard reads the detector)."""
        from engine.inference.guard import GuardConfig
        from engine.inference.restoration import RestorationModel
        from engine.tools.evaluate import evaluate, group_figures

        model = RestorationModel(self.config, self.ema.shadow, self.dev)
        guard = GuardConfig() if self.detector is not None else None
        results = evaluate(model, pairs, 1, self.detector, guard=guard)
        degraded = [r for r in results if r.combination != "clean"]
        groups = group_figures(results)
        figures = {"gain": float(sum(r.psnr_out - r.psnr_in for r in degraded) / max(1, len(degraded))),
                   "below": sum(f.images_below for f in groups if f.group != "clean")}
        if guard is not None:
            figures["guarded_gain"] = float(sum(r.psnr_guarded - r.psnr_in for r in degraded) / max(1, len(degraded)))
        for f in groups:
            key = f.group.replace(" ", "_")
            figures[key] = f.psnr_out if f.group == "clean" else f.gain
            if f.guarded_gain is not None:
                figures[f"{key}_guarded"] = f.guarded_psnr_out if f.group == "clean" else f.guarded_gain
        return figures

    def log(self, entry: dict) -> None:
        entry = {**entry, "seconds": round(self.clock.wall(), 1), "cpu_hours": round(self.clock.cpu() / 3600.0, 7)}
        with (self.out_dir / "log.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def checkpoint(self) -> None:
        """Raw and EMA weights and the trainer state a resumed run starts from."""
        save_model(self.net, self.config, self.out_dir / "checkpoint", ARCHITECTURE)
        save_model(self.ema.shadow, self.config, ModelBundle(self.out_dir).stem(RESTORER), ARCHITECTURE)
        save_trainer_state(self.out_dir, {"step": self.step, "optimizer": self.opt.state_dict(),
                                          "history": self.history, "recipe": repr(self.recipe),
                                          "elapsed": self.clock.wall(), "cpu_seconds": self.clock.cpu()})

    def result(self, figures: dict[str, float]) -> dict:
        return {"val_psnr": figures["val"], "input_psnr": figures["val_input"], "history": self.history,
                "figures": figures, "steps": self.step}

    def start(self) -> bool:
        """Begin training (the wall clock starts now); ``False`` when a resumed run's time is up
        already (raise ``minutes`` to go on)."""
        self.last_checkpoint = time.monotonic()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.net.train()
        self.clock.start_training()
        return not self.clock.expired()

    def after_step(self, loss_value: float, last: bool, val: dict[str, dict],
                   photos: list | None = None) -> StepInfo:
        """Rank 0 after a step: the log line, the validation figures (``photos``: whole photos, see
        :meth:`validate_photos`) and a checkpoint when they are due."""
        recipe, step = self.recipe, self.step
        info = StepInfo(step, recipe.steps, loss_value, self.opt.param_groups[0]["lr"])
        if step % recipe.log_every == 0 or last:
            self.log({"step": step, "loss": loss_value, "lr": info.lr})
        if step % recipe.val_every == 0 or last:
            self.net.eval()
            info.figures = self.validate(val)
            info.val_psnr, info.input_psnr = info.figures["val"], info.figures["val_input"]
            self.net.train()
            self.history.append([step, info.val_psnr])
            self.log({"step": step, "val": info.figures})
        if photos and (step % recipe.val_photos_every == 0 or last):
            self.log({"step": step, "photos": self.validate_photos(photos)})
            self.net.train()
        due = time.monotonic() - self.last_checkpoint > 60 * recipe.checkpoint_minutes
        if last or due or info.val_psnr is not None:
            self.checkpoint()
            self.last_checkpoint = time.monotonic()
        return info


def validation_photos(recipe: RestorerRecipe, photos_dir: Path | None) -> list:
    """The whole-photo validation pairs: ``photos_dir`` (else the recipe's ``val_photos``; none when
    both are empty), at most ``val_photos_limit`` spread over the combinations."""
    from engine.tools.evaluate import EvalDataError, load_pairs, spread_subset

    folder = photos_dir or (Path(recipe.val_photos) if recipe.val_photos else None)
    if folder is None:
        return []
    try:
        return spread_subset(load_pairs(folder), recipe.val_photos_limit)
    except EvalDataError as exc:
        raise TrainingDataError(str(exc)) from None


def train(recipe: RestorerRecipe, data_dir: Path, val_dir: Path, out_dir: Path, daclip_dir: Path | None = None,
          resume: bool = False, device: str = "auto",
          progress: Callable[[StepInfo], None] | None = None, init_dir: Path | None = None,
          val_photos: Path | None = None) -> dict | None:
    """Train (or resume) a restorer into ``out_dir``; returns the final validation figures on rank 0.

    ``val_photos``: a ``photomend synth`` folder of whole degraded held-out photos, validated every
    ``recipe.val_photos_every`` steps (:meth:`RestorerTrainer.validate_photos`; default the recipe's).

    ``daclip_dir=None`` trains the unconditioned ablation (same network without the conditioning path).
    ``init_dir``: a restorer folder to fine-tune; its network configuration replaces the recipe's
    (its conditioning must match ``daclip_dir``), the optimizer and schedule start afresh.
    """
    if recipe.threads > 0:
        torch.set_num_threads(recipe.threads)
    dist = setup_distributed()
    dev = _device(device, dist)
    out_dir = Path(out_dir)
    try:
        detector = Detector.from_dir(daclip_dir, dev) if daclip_dir is not None else None
        config = restorer_config(recipe, detector, daclip_dir, init_dir)
        state = None
        if resume:
            state, config = resumed_run(out_dir, detector)
        clock = Clock(60.0 * recipe.minutes)
        net, ema = build_network(config, recipe, dev, out_dir, state, init_dir)
        opt = make_optimizer(net, recipe, state)
        trainer = RestorerTrainer(recipe, config, net, ema, opt, detector, out_dir, dev, dist, state, clock)
        condition = DetectorConditions(detector) if detector is not None else None
        batches = training_batches(recipe, data_dir, detector, condition, dist, trainer.step)
        val = validation_sets(recipe, val_dir, detector, condition) if dist.is_main else {}
        photos = validation_photos(recipe, val_photos) if dist.is_main else []

        result = None
        if trainer.start():
            while trainer.step < recipe.steps:
                loss_value = trainer.train_step(batches)
                last = trainer.last_step()
                if dist.is_main:
                    info = trainer.after_step(loss_value, last, val, photos)
                    if info.figures is not None:
                        result = trainer.result(info.figures)
                    if progress is not None:
                        progress(info)
                if last:
                    break
        if dist.is_main and result is None:  # resumed a finished run (its steps or its time)
            trainer.checkpoint()
            result = trainer.result(trainer.validate(val))
        return result
    finally:
        cleanup_distributed()
