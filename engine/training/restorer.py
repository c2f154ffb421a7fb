"""Train the IR-SDE restorer (conditional U-Net) on synthetic pairs with a frozen DA-CLIP.

``photomend train restorer --config training/restorer.toml --data CLEAN_DIR --daclip MODEL_DIR``

Each step draws synthetic (lq, hq) crops (:class:`~engine.training.synthetic.SyntheticPairs`), the
frozen detector's condition of the LQ crop (:meth:`~engine.detect.Detector.condition_batch`), a
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

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.models.configs import IRSDEConfig, UNetConfig


@dataclass(frozen=True)
class RestorerRecipe:
    """Training recipe (``training/restorer.toml``). ``steps`` is the budget shared by the ablation.

    ``seed24_fraction``: share of samples drawn from the ``seed24`` preset on top of ``preset``.
    ``deterministic_fraction``: share of samples trained at the one-step input (t = T, x_T = mu).
    ``val_dir``: clean validation photos ("" = the ``val`` folder beside ``--data``).
    ``threads``: torch CPU threads (0 = torch's default).
    ``pool_size``: above 0, the shared region pool (restorer v2, see the module docstring):
    ``pool_size`` regions (short side ``region_min`` to ``region_max``, a photo seen at 1x to
    1/``max_zoom_out`` of its stored size, photos read at most ``max_side``) degraded by
    ``renderers``, ``pool_refresh`` of them re-rendered per step; ``seed24_fraction`` of them from
    the seed24 preset; ``identity_fraction`` identity samples (``identity_mild_share`` of them mildly
    degraded, by up to ``identity_mild_max``); ``label_condition_fraction`` of the pairs conditioned
    on their true names; ``pool_processes`` processes render the first fill (0: ``threads``).
    ``val_images`` regions per validation set, ``val_heldout``: also the held-out renderer's set.
    ``minutes``: above 0, a wall-clock budget: the cosine follows the larger of step and time
    progress and the run ends when the time is up (``steps`` becomes an upper bound); carried
    across resumes. ``log_every``: steps between ``log.jsonl`` lines.
    ``region_max``: 0 draws degraded crops (:class:`~engine.training.synthetic.SyntheticPairs`, the
    condition from the crop as one view); above 0, native crops of degraded photo regions
    (:class:`~engine.training.synthetic.RegionPairs`) conditioned by :meth:`Detector.analyze` of the
    region, the runtime's path.
    ``loss``: ``mse`` (the batch MSE on x0, as in the study) or ``relative_mse`` (each image's MSE on
    x0 weighted by ``0.05 / (input MSE + 0.05)``, fixed per crop: dark or hazy crops with huge errors
    no longer drown the lightly degraded ones, which the mean PSNR counts equally), or ``psnr_mse``
    (each image's MSE on x0 divided by its own current MSE, held constant: the gradient of the mean
    per-image log-MSE, i.e. of the mean PSNR; every image counts by its relative error, so a nearly
    clean crop that the network worsens costs as much as a dark crop that it fails to brighten).
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    sde: IRSDEConfig = field(default_factory=IRSDEConfig)
    steps: int = 6000
    batch_size: int = 8
    crop: int = 128
    preset: str = "train"
    seed24_fraction: float = 0.0
    min_crop_scale: float = 1.0
    region_max: int = 0       # > 0: crops are cut from regions up to this short side degraded at their
                              # own scale, conditioned on the detector's analysis of the whole region
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    deterministic_fraction: float = 0.5
    condition_swap: float = 0.0  # share of samples conditioned on another sample's condition (a wrong
                                 # detection), so the network checks the condition against the pixels
    loss: str = "mse"
    val_dir: str = ""
    val_images: int = 48
    val_crop: int = 128
    val_preset: str = "seed24"
    val_every: int = 500
    checkpoint_minutes: float = 3.0
    threads: int = 0
    seed: int = 0
    amp: bool = True
    pool_size: int = 0
    pool_refresh: int = 1
    pool_processes: int = 0
    renderers: tuple[str, ...] = ("project", "albumentations")
    region_min: int = 128
    max_zoom_out: float = 4.0
    max_side: int = 1536
    identity_fraction: float = 0.0
    identity_mild_share: float = 0.5
    identity_mild_max: float = 0.2
    label_condition_fraction: float = 0.0
    val_heldout: bool = True
    minutes: float = 0.0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.pool_size > 0 and not self.crop <= self.region_min <= self.region_max:
            raise ValueError(f"pool_size > 0 needs crop <= region_min <= region_max, got {self.crop}, "
                             f"{self.region_min}, {self.region_max}")
        if self.minutes < 0:
            raise ValueError(f"minutes must be 0 (no budget) or more, got {self.minutes}")


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("training/restorer.toml"), help="TOML recipe")
    parser.add_argument("--data", type=Path, required=True, help="folder of clean training photos")
    parser.add_argument("--daclip", type=Path, help="DA-CLIP model folder (detector.json/.safetensors)")
    parser.add_argument("--out", type=Path, default=Path("runs/restorer"), help="run folder")
    parser.add_argument("--val-data", type=Path, help="clean validation photos (default: recipe, or DATA/../val)")
    parser.add_argument("--steps", type=int, help="override the recipe's step budget")
    parser.add_argument("--minutes", type=float, help="override the recipe's wall-clock budget (0: none)")
    parser.add_argument("--no-condition", action="store_true", help="train the ablation without DA-CLIP")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--init", type=Path,
                        help="start from this restorer folder's weights (fine-tuning; fresh optimizer and schedule)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (override the recipe)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.cli import UsageError
    from engine.training.common import RecipeError, load_recipe, override

    try:
        recipe = load_recipe(args.config, RestorerRecipe)
    except RecipeError as exc:
        raise UsageError(str(exc)) from None
    recipe = override(recipe, steps=args.steps, threads=args.threads, minutes=args.minutes)
    if not args.no_condition and args.daclip is None:
        raise UsageError("--daclip MODEL_DIR is required unless --no-condition")
    val_dir = args.val_data or (Path(recipe.val_dir) if recipe.val_dir else args.data.parent / "val")
    bar = None

    def progress(info: StepInfo) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=info.total, initial=info.step - 1, desc="restorer", unit="step", dynamic_ncols=True)
        bar.update(1)
        post = {"loss": f"{info.loss:.4f}", "lr": f"{info.lr:.1e}"}
        if info.val_psnr is not None:
            extra = "".join(f", {k} {v:.2f} dB" for k, v in (info.figures or {}).items()
                            if k in ("heldout", "clean"))
            bar.write(f"step {info.step}: validation PSNR {info.val_psnr:.2f} dB (input {info.input_psnr:.2f} dB)"
                      + extra)
        bar.set_postfix(post)

    try:
        result = train(recipe, args.data, val_dir, args.out, daclip_dir=None if args.no_condition else args.daclip,
                       resume=args.resume, device=args.device, progress=progress, init_dir=args.init)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    if result is not None:
        print(f"saved EMA weights to {args.out / 'restorer.safetensors'} "
              f"(validation PSNR {result['val_psnr']:.2f} dB, input {result['input_psnr']:.2f} dB)")
    return 0


def _mixed_stream(main_iter: Iterator, extra_iter: Iterator | None, fraction: float, seed: list[int]) -> Iterator:
    import numpy as np

    rng = np.random.default_rng(seed)
    while True:
        yield next(extra_iter) if extra_iter is not None and rng.random() < fraction else next(main_iter)


def _batches(stream: Iterator, batch_size: int) -> Iterator[dict]:
    from engine.training.synthetic import collate_pairs

    while True:
        yield collate_pairs([next(stream) for _ in range(batch_size)])


RELATIVE_FLOOR = 0.05  # MSE of a 13 dB input
PSNR_FLOOR = 1e-4      # MSE of a 40 dB result: below it an image no longer gains weight


def x0_loss(pred, target, lq, kind: str):
    """MSE on the predicted clean image, over the batch (``mse``), weighted per image by the inverse
    of its input's error (``relative_mse``; the weight depends on the LQ crop only, not on ``t``), or
    by the inverse of its own current error (``psnr_mse``; see :class:`RestorerRecipe`)."""
    per_image = (pred - target).pow(2).flatten(1).mean(1)
    if kind == "mse":
        return per_image.mean()
    if kind == "relative_mse":
        # inputs better than 13 dB weigh about 1; a 5 dB input (MSE 0.32) weighs 0.14
        weight = RELATIVE_FLOOR / ((lq - target).pow(2).flatten(1).mean(1) + RELATIVE_FLOOR)
        return (per_image * weight).mean()
    if kind == "psnr_mse":
        # each image's MSE over its own current error (no gradient through the weight): the gradient of
        # the mean log-MSE, i.e. of the mean PSNR that evaluation reports
        weight = 1.0 / (per_image.detach() + PSNR_FLOOR)
        return (per_image * weight).mean() * PSNR_FLOOR
    raise ValueError(f"unknown loss {kind!r} (mse, relative_mse, psnr_mse)")


def _conditions(detector, lq, regions):
    """Restorer conditions ``[B, 3, D]`` on ``lq``'s device: :meth:`Detector.analyze` of each sample's
    region, as the runtime conditions a photo's tiles; without regions, each crop as one view
    (:meth:`Detector.condition_batch`)."""
    import torch

    if regions is None:
        return detector.condition_batch(lq)
    return torch.stack([detector.analyze(image).condition for image in regions]).to(lq.device)


def swap_conditions(cond, fraction: float, generator=None):
    """Give a random ``fraction`` of the samples the condition of the next sample in the batch.

    The detector is wrong on photos it has not seen (it calls lightly degraded photos hazy, for
    example); a restorer trained only on conditions that are right learns to obey them blindly and
    dehazes a photo that has no haze. Trained with some wrong conditions, it must also read the
    damage from the pixels. A batch of one is returned unchanged."""
    import torch

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
    from engine.training.region_pool import PoolSpec
    from engine.training.restorer_data import PairSpec

    pool = PoolSpec(size=recipe.crop, n_crops=0, preset=recipe.preset, renderers=tuple(recipe.renderers),
                    region_min=recipe.region_min, region_max=recipe.region_max, max_zoom_out=recipe.max_zoom_out)
    pairs = PairSpec(crop=recipe.crop, seed24_fraction=recipe.seed24_fraction,
                     identity_fraction=recipe.identity_fraction, identity_mild_share=recipe.identity_mild_share,
                     identity_mild_max=recipe.identity_mild_max,
                     label_condition_fraction=recipe.label_condition_fraction)
    return pool, pairs


def _pool_batches(pool, recipe: RestorerRecipe) -> Iterator[dict]:
    while True:
        yield pool.batch(recipe.batch_size)
        pool.refresh(recipe.pool_refresh)


def pool_validation_sets(recipe: RestorerRecipe, val_dir: Path, condition) -> dict[str, dict]:
    """The fixed validation sets of a pool recipe: ``val`` (training renderers, ``val_preset``),
    ``heldout`` (the held-out renderer, with ``val_heldout``) and ``clean`` (the clean crops of ``val``)."""
    from engine.training.restorer_data import validation_regions, validation_set
    from engine.training.synthetic import load_photos

    spec, _ = pool_specs(recipe)
    spec = dataclasses.replace(spec, size=recipe.val_crop, preset=recipe.val_preset,
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


def train(recipe: RestorerRecipe, data_dir: Path, val_dir: Path, out_dir: Path, daclip_dir: Path | None = None,
          resume: bool = False, device: str = "auto",
          progress: Callable[[StepInfo], None] | None = None, init_dir: Path | None = None) -> dict | None:
    """Train (or resume) a restorer into ``out_dir``; returns the final validation figures on rank 0.

    ``daclip_dir=None`` trains the unconditioned ablation (same network without the conditioning path).
    ``init_dir``: a restorer folder to fine-tune; its network configuration replaces the recipe's
    (its conditioning must match ``daclip_dir``), the optimizer and schedule start afresh.
    """
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from engine.detect import Detector
    from engine.device import autocast, pick_device
    from engine.models.serialization import load_weights, read_config, save_model
    from engine.models.unet import ConditionalUNet, upgrade_key
    from engine.restoration import ARCHITECTURE, RestorerConfig, sample
    from engine.sde import IRSDEScheduler
    from engine.training.common import (
        EMA,
        all_reduce_mean,
        cleanup_distributed,
        load_trainer_state,
        save_trainer_state,
        setup_distributed,
    )
    from engine.training.restorer_data import DetectorConditions, RegionPairPool
    from engine.training.synthetic import (
        FixedSyntheticSet,
        RegionPairs,
        SyntheticPairs,
        collate_pairs,
        load_photos,
    )

    if recipe.threads > 0:
        torch.set_num_threads(recipe.threads)
    dist = setup_distributed()
    dev = torch.device(f"cuda:{dist.local_rank}") if dist.enabled and torch.cuda.is_available() else pick_device(device)
    out_dir = Path(out_dir)
    try:
        detector = Detector.from_dir(daclip_dir, dev) if daclip_dir is not None else None
        unet_cfg = dataclasses.replace(recipe.unet, conditioned=detector is not None,
                                       cond_dim=detector.embed_dim if detector is not None else recipe.unet.cond_dim)
        config = RestorerConfig(unet=unet_cfg, sde=recipe.sde)
        if init_dir is not None:
            init_cfg = read_config(Path(init_dir) / "restorer", ARCHITECTURE, RestorerConfig)
            if init_cfg.unet.conditioned != (detector is not None) or init_cfg.unet.cond_dim != unet_cfg.cond_dim:
                raise ValueError(f"{init_dir}: its conditioning does not match "
                                 f"{'--daclip ' + str(daclip_dir) if detector is not None else '--no-condition'}")
            config = init_cfg
        state = load_trainer_state(out_dir) if resume else None
        if resume and state is None:
            raise ValueError(f"{out_dir}: nothing to resume (no trainer_state.pt)")
        if state is not None:
            config = read_config(out_dir / "checkpoint", ARCHITECTURE, RestorerConfig)
            if config.unet.conditioned != (detector is not None):
                raise ValueError(f"{out_dir}: run was trained {'with' if config.unet.conditioned else 'without'} "
                                 "conditioning; pass the same --daclip/--no-condition to resume")
        torch.manual_seed(recipe.seed)
        net = ConditionalUNet(config.unet).to(dev)
        ema = EMA(net, recipe.ema_decay)
        start = 0
        history: list[list[float]] = []
        clock = Clock(60.0 * recipe.minutes)
        if init_dir is not None and state is None:
            load_weights(net, Path(init_dir) / "restorer", upgrade_key=upgrade_key)
            ema.shadow.load_state_dict(net.state_dict())
        if state is not None:
            load_weights(net, out_dir / "checkpoint")
            load_weights(ema.shadow, out_dir / "restorer")
        # after loading: load_weights assigns new tensors, which an optimizer made before would not see
        opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            start = int(state["step"])
            history = [list(h) for h in state.get("history", [])]
            clock.before_wall = float(state.get("elapsed", 0.0))
            clock.before_cpu = float(state.get("cpu_seconds", 0.0))
        ddp_net = DistributedDataParallel(net) if dist.enabled else net
        sched = IRSDEScheduler(config.sde)
        cuda = dev.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=cuda and recipe.amp and not torch.cuda.is_bf16_supported())

        def stream(preset: str, seed: int):
            if recipe.region_max > 0:
                ds = RegionPairs(data_dir, recipe.crop, preset, seed, dist.rank, dist.world_size,
                                 region_max=recipe.region_max, with_region=detector is not None)
            else:
                ds = SyntheticPairs(data_dir, recipe.crop, preset, seed, dist.rank, dist.world_size,
                                    min_crop_scale=recipe.min_crop_scale)
            ds.set_epoch(start)  # a resumed run continues with fresh samples
            return iter(ds)

        condition = DetectorConditions(detector) if detector is not None else None
        if recipe.pool_size > 0:
            pool_spec, pair_spec = pool_specs(recipe)
            pool = RegionPairPool(load_photos(data_dir, recipe.max_side), pool_spec, pair_spec, recipe.pool_size,
                                  seed=recipe.seed + 7919 * start + 104729 * dist.rank, condition=condition,
                                  processes=recipe.pool_processes or max(1, recipe.threads))
            batches = _pool_batches(pool, recipe)
        else:
            pairs = stream(recipe.preset, recipe.seed)
            extra = stream("seed24", recipe.seed + 1) if recipe.seed24_fraction > 0 else None
            batches = _batches(_mixed_stream(pairs, extra, recipe.seed24_fraction,
                                             [recipe.seed, start, dist.rank]), recipe.batch_size)

        val: dict[str, dict] = {}
        if dist.is_main and recipe.pool_size > 0:
            val = pool_validation_sets(recipe, val_dir, condition)
        elif dist.is_main:
            vset = FixedSyntheticSet(val_dir, recipe.val_crop, recipe.val_preset, recipe.val_images, seed=1234)
            vb = collate_pairs([vset[i] for i in range(len(vset))])
            vb["cond"] = _conditions(detector, vb["lq"], None) if detector is not None else None
            val = {"val": vb}

        def validate() -> dict[str, float]:
            """Mean PSNR of the EMA network at steps=1 on each set (and of the inputs, except clean)."""
            from engine.metrics import batch_psnr

            figures = {}
            for name, vs in val.items():
                lq, hq, cond = vs["lq"], vs["hq"], vs["cond"]
                outs = []
                with torch.inference_mode(), autocast(dev, recipe.amp):
                    for i in range(0, len(lq), 16):
                        c = cond[i:i + 16].to(dev) if cond is not None else None
                        outs.append(sample(ema.shadow, sched, lq[i:i + 16].to(dev), c, 1).float().clamp(0, 1).cpu())
                figures[name] = float(sum(batch_psnr(torch.cat(outs), hq)) / len(hq))
                if name != "clean":
                    figures[f"{name}_input"] = float(sum(batch_psnr(lq, hq)) / len(hq))
            return figures

        def log(entry: dict) -> None:
            entry = {**entry, "seconds": round(clock.wall(), 1), "cpu_hours": round(clock.cpu() / 3600.0, 7)}
            with (out_dir / "log.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")

        def checkpoint(step: int) -> None:
            save_model(net, config, out_dir / "checkpoint", ARCHITECTURE)
            save_model(ema.shadow, config, out_dir / "restorer", ARCHITECTURE)
            save_trainer_state(out_dir, {"step": step, "optimizer": opt.state_dict(), "history": history,
                                         "recipe": repr(recipe), "elapsed": clock.wall(),
                                         "cpu_seconds": clock.cpu()})

        result = None
        last_ckpt = time.monotonic()
        out_dir.mkdir(parents=True, exist_ok=True)
        net.train()
        step = start
        clock.start_training()
        spent = clock.expired()  # a resumed run whose time is up trains no more (raise minutes to go on)
        while step < recipe.steps and not spent:
            for g in opt.param_groups:
                g["lr"] = recipe.lr * lr_factor(step, recipe, clock.progress())
            batch = next(batches)
            lq, hq = batch["lq"].to(dev, non_blocking=True), batch["hq"].to(dev, non_blocking=True)
            b = lq.shape[0]
            if detector is None:
                cond = None
            elif "cond" in batch:  # pool: each region's detector output, computed when it entered
                cond = batch["cond"].to(dev, non_blocking=True)
            else:
                cond = _conditions(detector, lq, batch.get("regions"))
            if cond is not None:
                cond = swap_conditions(cond, recipe.condition_swap)
            t = torch.randint(1, sched.T + 1, (b,), device=dev)
            x_t = sched.add_noise(hq, lq, t, torch.randn_like(hq))
            one_step = torch.rand(b, device=dev) < recipe.deterministic_fraction
            t = torch.where(one_step, torch.full_like(t, sched.T), t)
            x_t = torch.where(one_step[:, None, None, None], lq, x_t)  # exact one-step inference input
            with autocast(dev, recipe.amp):
                pred = ddp_net(x_t, lq, sched.network_time(t), cond)
            loss = x0_loss(pred.float(), hq, lq, recipe.loss)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if recipe.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(net.parameters(), recipe.grad_clip)
            scaler.step(opt)
            scaler.update()
            ema.update(net, step)
            loss_value = float(all_reduce_mean(loss.detach(), dist))
            step += 1
            # every rank stops at the same step, when the steps or (rank 0's) time run out
            stop = torch.tensor([float(step == recipe.steps or (dist.is_main and clock.expired()))], device=dev)
            last = bool(all_reduce_mean(stop, dist).item() > 0)
            if not dist.is_main:
                if last:
                    break
                continue
            info = StepInfo(step, recipe.steps, loss_value, opt.param_groups[0]["lr"])
            if step % recipe.log_every == 0 or last:
                log({"step": step, "loss": loss_value, "lr": info.lr})
            if step % recipe.val_every == 0 or last:
                net.eval()
                info.figures = validate()
                info.val_psnr, info.input_psnr = info.figures["val"], info.figures["val_input"]
                net.train()
                history.append([step, info.val_psnr])
                log({"step": step, "val": info.figures})
                result = {"val_psnr": info.val_psnr, "input_psnr": info.input_psnr, "history": history,
                          "figures": info.figures, "steps": step}
            if last or time.monotonic() - last_ckpt > 60 * recipe.checkpoint_minutes or info.val_psnr is not None:
                checkpoint(step)
                last_ckpt = time.monotonic()
            if progress is not None:
                progress(info)
            if last:
                break
        if dist.is_main and result is None:  # resumed a finished run (its steps or its time)
            checkpoint(step)
            figures = validate()
            result = {"val_psnr": figures["val"], "input_psnr": figures["val_input"], "history": history,
                      "figures": figures, "steps": step}
        return result
    finally:
        cleanup_distributed()
