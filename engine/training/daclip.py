"""Train the DA-CLIP detector: a small base CLIP from scratch, then the two-slot controller.

``photomend train daclip --config training/daclip.toml --data CLEAN_DIR [--out RUN_DIR]``

Stage ``base`` (skipped with ``--clip-weights``): the open_clip model named by the recipe learns
from synthetic degraded crops. Each image is matched (cross-entropy over cosine x logit scale)
to the caption of its degradation set among the captions of every set of at most two names
(``"a hazy and noisy photo"``, ``"a clean photo"``), and, for content, each degraded crop is
matched to its own clean crop among the batch (InfoNCE).

Stage ``control``: the base CLIP is frozen, the controller starts as a copy of its image tower
with zero control linears. Loss: the permutation-invariant slot loss of
:func:`engine.models.daclip.slot_set_loss` against the prototypes of the true set (filled with
``none``) plus ``content_weight`` x (1 - cosine) between the controlled content embedding of the
degraded crop and the frozen embedding of the clean crop.

A run directory holds ``checkpoint.safetensors/.json`` (the model), ``trainer_state.pt``
(optimizer, step; weights only) and ``log.jsonl``; ``--resume`` continues an interrupted run.
The final detector is written with :func:`engine.models.daclip.save_pretrained` to
``RUN_DIR/model`` and to ``--export DIR`` if given. CUDA and mixed precision are used when
present; under ``torchrun`` each process trains on its own stream with DDP (gloo on CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "training" / "daclip.toml"


@dataclasses.dataclass(frozen=True)
class DaClipRecipe:
    """Hyper-parameters of ``photomend train daclip`` (``training/daclip.toml``)."""

    clip_model: str = "PhotoMend-RN-96"
    crop: int = 96
    views: str = "photo"          # "photo": global views + native crops of degraded regions
                                  # (engine.training.synthetic.PhotoViews); "crop": degraded crops;
                                  # "pool": engine.training.region_pool (detector v2)
    presence: bool = False        # train a presence head (sigmoid per name, BCE) with the slot loss
    presence_weight: float = 1.0
    renderers: tuple[str, ...] = ("project", "albumentations")  # "pool" views: the renderer mix
    n_crops: int = 3              # "pool" views: native crops per region (plus its global view)
    pool_size: int = 2000
    pool_refresh: int = 1         # regions re-rendered per step
    max_zoom_out: float = 4.0
    max_side: int = 1536          # training photos are read at most this large
    val_every: int = 0            # "pool" views with --val: held-out figures every this many steps
    minutes: float = 0.0          # > 0: a wall-clock budget for the run. The stages share it as
                                  # base_steps : control_steps; each stage's cosine follows the larger
                                  # of its step and time progress, and ends when its time is up (the
                                  # step counts become upper bounds). For a busy or unknown machine.
    val_regions: int = 240
    region_min: int = 96          # "photo" views: short side of the degraded region, log-uniform
    region_max: int = 384
    views_per_region: int = 4     # the region's global view, then native crops
    min_crop_scale: float = 0.5   # "crop" views: zoom-out of the crop
    preset: str = "train"
    batch_size: int = 32
    base_steps: int = 1200
    base_lr: float = 5e-4
    base_content_weight: float = 0.5
    base_hq_fraction: float = 0.5
    train_token_embedding: bool = False
    control_steps: int = 2400
    control_lr: float = 3e-4
    content_weight: float = 0.5
    content_fraction: float = 0.25
    control_trains_text: bool = True
    prototype_separation: float = 1.0  # weight of the term that keeps the text prototypes apart
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 20
    num_workers: int = 0
    seed: int = 0
    amp: bool = True
    device: str = "auto"
    threads: int = 0  # CPU threads for torch (0: torch's default)

    @property
    def total_steps(self) -> int:
        return self.base_steps + self.control_steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_RECIPE, help="recipe TOML (default: %(default)s)")
    parser.add_argument("--data", type=Path, required=True, help="folder of clean training photos")
    parser.add_argument("--out", type=Path, default=Path("runs/daclip"), help="run folder (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=None,
                        help="total steps (split between the stages in the recipe's proportion)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--clip-model", default=None, help="open_clip model name (e.g. ViT-B-32)")
    parser.add_argument("--clip-weights", type=Path, default=None,
                        help="local open_clip checkpoint of --clip-model; skips the base stage")
    parser.add_argument("--init", type=Path, default=None,
                        help="continue the control stage of an existing detector folder (skips the base stage)")
    parser.add_argument("--export", type=Path, default=None, help="also write the final detector here")
    parser.add_argument("--val", type=Path, default=None,
                        help="folder of held-out clean photos: logs exact-set accuracy and F1 on them during "
                             "training, with the training renderers and with the held-out renderer")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (0: default)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_recipe(args) -> DaClipRecipe:
    from engine.training.common import RecipeError, load_recipe, override

    recipe = load_recipe(args.config, DaClipRecipe)
    recipe = override(recipe, batch_size=args.batch_size, clip_model=args.clip_model, device=args.device,
                      threads=args.threads)
    if args.clip_weights is not None and getattr(args, "init", None) is not None:
        raise RecipeError("--clip-weights and --init exclude each other")
    base_steps = 0 if args.clip_weights or getattr(args, "init", None) else recipe.base_steps
    recipe = dataclasses.replace(recipe, base_steps=base_steps)
    if args.steps is not None:
        total = max(recipe.total_steps, 1)
        base = round(args.steps * recipe.base_steps / total)
        recipe = dataclasses.replace(recipe, base_steps=base, control_steps=args.steps - base)
    return recipe


def main(args) -> int:
    """``photomend train daclip``: the CLI entry (draws the progress bar, prints the summary)."""
    from tqdm import tqdm

    from engine.cli import UsageError
    from engine.training.common import RecipeError, setup_distributed

    try:
        recipe = resolve_recipe(args)
    except RecipeError as exc:
        raise UsageError(str(exc)) from None
    if not args.data.is_dir():
        raise UsageError(f"{args.data}: no such folder of clean photos")
    if args.clip_weights is not None and not args.clip_weights.is_file():
        raise UsageError(f"{args.clip_weights}: no such CLIP checkpoint")
    if args.init is not None and not (args.init / "detector.json").is_file():
        raise UsageError(f"{args.init}: no detector.json (not a detector folder)")
    dist = setup_distributed()
    bar = None
    if dist.is_main and not args.no_progress:
        bar = tqdm(total=recipe.total_steps, desc="daclip", dynamic_ncols=True)

    def on_step(step: int, metrics: dict) -> None:
        if bar is not None:
            bar.n = step
            bar.set_postfix(stage=metrics["stage"], loss=f"{metrics['loss']:.3f}", acc=f"{metrics['acc']:.2f}")
            bar.refresh()

    try:
        result = train(recipe, args.data, args.out, resume=args.resume, clip_weights=args.clip_weights,
                       init=args.init, export=args.export, on_step=on_step, val=args.val)
    finally:
        if bar is not None:
            bar.close()
        from engine.training.common import cleanup_distributed

        cleanup_distributed()
    if dist.is_main:
        print(f"detector written to {result['model_dir']} ({result['steps']} steps, "
              f"{result['seconds'] / 60:.1f} min, last accuracy {result['acc']:.3f})")
    return 0


# ----------------------------------------------------------------------------------------------
# loss modules (one per stage, so DDP wraps a forward that returns the loss)


SEPARATION_TEMPERATURE = 0.1


def separation_loss(embeddings):
    """Keeps L2-normalised text embeddings ``[C, D]`` apart: each must be its own nearest neighbour
    (cross-entropy of the scaled cosine matrix against the identity). Without it the small text
    tower trained from scratch collapsed every prompt onto nearly one direction (mean cosine 0.98
    in the first bundled detector), leaving the image side nothing to tell the classes apart by."""
    import torch
    import torch.nn.functional as F

    sim = embeddings @ embeddings.t() / SEPARATION_TEMPERATURE
    return F.cross_entropy(sim, torch.arange(len(embeddings), device=embeddings.device))


def _stage_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    from engine.models.daclip import predicted_sets, slot_set_loss

    class BaseStage(nn.Module):
        """Caption matching over all degradation sets + degraded/clean content InfoNCE."""

        def __init__(self, model, caption_tokens: torch.Tensor, content_weight: float, hq_fraction: float,
                     separation: float = 0.0, presence_weight: float = 1.0):
            super().__init__()
            self.model = model
            self.register_buffer("caption_tokens", caption_tokens, persistent=False)
            self.content_weight = content_weight
            self.hq_fraction = hq_fraction
            self.separation = separation
            self.presence_weight = presence_weight

        def forward(self, lq, hq, set_index, presence_targets=None, n_views=1):
            m = self.model
            b = max(1, int(round(lq.shape[0] * self.hq_fraction)))  # clean crops used (cost)
            raw = m.encode_base(torch.cat([lq, hq[:b]]))
            emb = F.normalize(raw, dim=-1)
            text = F.normalize(m.encode_text(self.caption_tokens), dim=-1)
            scale = m.clip.logit_scale.clamp(max=math.log(100.0)).exp()
            logits = scale * emb @ text.t()
            n = lq.shape[0]
            targets = torch.cat([set_index, torch.zeros_like(set_index[:b])])  # clean crops: caption 0
            loss = F.cross_entropy(logits, targets)
            sim = scale * emb[:b] @ emb[n:].t()
            labels = torch.arange(b, device=lq.device)
            content = (F.cross_entropy(sim, labels) + F.cross_entropy(sim.t(), labels)) / 2
            acc = (logits[:n].argmax(-1) == set_index).float().mean()
            loss = loss + self.content_weight * content + self.separation * separation_loss(text)
            if presence_targets is not None:  # the base tower's pooled output feeds the same head
                pres = m.presence_head(*_grouped(raw[:n], n_views))
                loss = loss + self.presence_weight * F.binary_cross_entropy_with_logits(pres, presence_targets)
                acc = _exact(pres, presence_targets)
            return loss, acc.detach()

    class ControlStage(nn.Module):
        """Permutation-invariant slot loss + content loss toward the clean crop's frozen embedding."""

        def __init__(self, model, content_weight: float, content_fraction: float, separation: float = 0.0,
                     presence_weight: float = 1.0):
            super().__init__()
            self.model = model
            self.content_weight = content_weight
            self.content_fraction = content_fraction
            self.separation = separation
            self.presence_weight = presence_weight

        def forward(self, lq, hq, targets, true_sets, presence_targets=None, n_views=1):
            m = self.model
            protos = m.prototypes()
            hiddens, pooled, slots = m.control_features(lq)
            logits = m.slot_logits(slots, protos)
            loss = slot_set_loss(logits, targets) + self.separation * separation_loss(protos)
            k = max(1, int(round(lq.shape[0] * self.content_fraction)))
            if self.content_weight > 0:
                content = m.content(lq[:k], [h[:k] for h in hiddens])
                with torch.no_grad():
                    clean = F.normalize(m.encode_base(hq[:k]), dim=-1)
                loss = loss + self.content_weight * (1 - (F.normalize(content, dim=-1) * clean).sum(-1)).mean()
            if presence_targets is not None:
                pres = m.presence_logits(pooled, n_views)
                loss = loss + self.presence_weight * F.binary_cross_entropy_with_logits(pres, presence_targets)
                return loss, _exact(pres.detach(), presence_targets)
            pred = predicted_sets(logits.detach(), m.cfg.classes)
            acc = torch.tensor(sum(p == t for p, t in zip(pred, true_sets, strict=True)) / len(pred))
            return loss, acc

    def _grouped(pooled, n_views):
        g = pooled.reshape(-1, n_views, pooled.shape[-1])
        return g[:, 0], g[:, 1:]

    def _exact(logits, targets):
        return ((logits > 0) == (targets > 0.5)).all(-1).float().mean()

    return BaseStage, ControlStage


# ----------------------------------------------------------------------------------------------


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


def _build_model(recipe: DaClipRecipe, clip_weights: Path | None, init: Path | None = None):
    import torch

    from engine.models.daclip import DaClip, DaClipConfig, load_pretrained

    if init is not None:
        model = load_pretrained(init)  # its own open_clip config; the recipe's clip_model is not used
        with torch.no_grad():
            model.clip.logit_scale.clamp_(max=math.log(100.0))
        return model
    model = DaClip(DaClipConfig.for_clip_model(recipe.clip_model, presence=recipe.presence))
    if clip_weights is not None:
        import open_clip

        base = open_clip.create_model(recipe.clip_model, pretrained=str(clip_weights), weights_only=True)
        model.clip.load_state_dict(base.state_dict(), strict=False)
        model.init_controller()
    with torch.no_grad():
        model.clip.logit_scale.clamp_(max=math.log(100.0))
    return model


def presence_target(names_batch, vocabulary: tuple[str, ...]):
    """Multi-hot targets ``[B, len(vocabulary)]`` of the presence head."""
    import torch

    index = {n: i for i, n in enumerate(vocabulary)}
    out = torch.zeros(len(names_batch), len(vocabulary))
    for row, names in enumerate(names_batch):
        for n in names:
            out[row, index[n]] = 1.0
    return out


def _pool_spec(recipe: DaClipRecipe):
    from engine.training.region_pool import PoolSpec

    return PoolSpec(size=recipe.crop, n_crops=recipe.n_crops, preset=recipe.preset, renderers=tuple(recipe.renderers),
                    region_min=recipe.region_min, region_max=recipe.region_max, max_zoom_out=recipe.max_zoom_out)


def train(recipe: DaClipRecipe, data: Path, out: Path, resume: bool = False, clip_weights: Path | None = None,
          export: Path | None = None, on_step: Callable[[int, dict], None] | None = None,
          init: Path | None = None, val: Path | None = None) -> dict:
    """Run (or resume) both stages; return ``{"model_dir", "steps", "seconds", "acc"}``.

    ``init``: a detector folder whose CLIP and controller the control stage continues from (the
    recipe's base stage must then be empty: ``resolve_recipe`` sets it so)."""
    import open_clip
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data import DataLoader

    from engine.device import autocast, pick_device
    from engine.models.daclip import all_sets, save_pretrained, set_caption, set_targets
    from engine.models.serialization import load_weights, save_model
    from engine.training.common import (
        all_reduce_mean,
        load_trainer_state,
        save_trainer_state,
        setup_distributed,
    )
    from engine.training.region_pool import RegionPool
    from engine.training.synthetic import PhotoViews, SyntheticPairs, collate_pairs

    dist = setup_distributed()
    if recipe.threads > 0:
        torch.set_num_threads(recipe.threads)
    device = pick_device(recipe.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    out = Path(out)
    torch.manual_seed(recipe.seed + dist.rank)
    if init is not None and recipe.base_steps > 0:
        raise ValueError("init continues the control stage: the recipe must have base_steps = 0")
    model = _build_model(recipe, clip_weights, init)
    cfg = model.cfg
    step = 0
    state = load_trainer_state(out) if resume else None
    if state is not None:
        load_weights(model, out / "checkpoint")
        step = int(state["step"])
    model.to(device)
    sets = all_sets(cfg.vocabulary)
    set_index_of = {frozenset(s): i for i, s in enumerate(sets)}
    captions = open_clip.tokenize([set_caption(s) for s in sets], context_length=cfg.context_length)
    BaseStage, ControlStage = _stage_modules()

    pool = None
    if recipe.views == "pool":
        if dist.world_size > 1:
            raise ValueError("views = 'pool' trains in one process (use torchrun with 'photo' views)")
        pool = RegionPool(data, _pool_spec(recipe), recipe.pool_size, seed=recipe.seed + 7919 * step,
                          max_side=recipe.max_side, processes=max(1, recipe.threads or 1))
        batches = None
    elif recipe.views == "photo":
        dataset = PhotoViews(data, recipe.crop, preset=recipe.preset, seed=recipe.seed + 7919 * step,
                             rank=dist.rank, world_size=dist.world_size, region_min=recipe.region_min,
                             region_max=recipe.region_max, views_per_region=recipe.views_per_region)
    elif recipe.views == "crop":
        dataset = SyntheticPairs(data, recipe.crop, preset=recipe.preset, seed=recipe.seed + 7919 * step,
                                 rank=dist.rank, world_size=dist.world_size, min_crop_scale=recipe.min_crop_scale)
    else:
        raise ValueError(f"views must be 'photo', 'crop' or 'pool', got {recipe.views!r}")
    if pool is None:
        loader = DataLoader(dataset, batch_size=recipe.batch_size, collate_fn=collate_pairs,
                            num_workers=recipe.num_workers)
        batches = iter(loader)
    validation = None
    if val is not None and recipe.val_every > 0 and dist.is_main:
        from engine.training.detector_validation import ValidationSets

        validation = ValidationSets(val, _pool_spec(recipe), recipe.val_regions, seed=recipe.seed + 1,
                                    max_side=recipe.max_side)
    use_amp = recipe.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    log_path = out / "log.jsonl"
    out.mkdir(parents=True, exist_ok=True)

    stage_name = None
    stage_module = optimizer = None
    t0 = time.time()
    clock = _Clock(recipe.minutes * 60.0, recipe.base_steps / max(1, recipe.total_steps),
                   before=float(state.get("elapsed", 0.0)) if state else 0.0)
    control_start = int(state.get("control_start", recipe.base_steps)) if state else recipe.base_steps
    acc_value = 0.0
    while step < recipe.total_steps and not (clock.budget and clock.stage_progress("control") >= 1.0):
        if stage_name == "control" or (state is not None and state.get("stage") == "control"):
            want = "control"
        elif step >= recipe.base_steps or (clock.budget and clock.stage_progress("base") >= 1.0):
            want = "control"
        else:
            want = "base"
        if want != stage_name:
            stage_name = want
            if want == "base":
                for p in model.parameters():
                    p.requires_grad_(False)
                model.unfreeze_clip()
                # a random, frozen token embedding is enough for a fixed set of captions and
                # spares the optimizer the 49408-row table
                model.clip.token_embedding.weight.requires_grad_(recipe.train_token_embedding)
                if model.presence_head is not None:
                    model.presence_head.requires_grad_(True)
                inner = BaseStage(model, captions, recipe.base_content_weight, recipe.base_hq_fraction,
                                  recipe.prototype_separation, recipe.presence_weight).to(device)
                lr, start, n_steps = recipe.base_lr, 0, recipe.base_steps
            else:
                if init is None and step > 0 and (state is None or state.get("stage") != "control"):
                    model.init_controller()
                    control_start = step
                for p in model.parameters():
                    p.requires_grad_(True)
                model.freeze_clip(keep_text_trainable=recipe.control_trains_text)
                inner = ControlStage(model, recipe.content_weight, recipe.content_fraction, recipe.prototype_separation,
                                     recipe.presence_weight).to(device)
                lr, start, n_steps = recipe.control_lr, control_start, recipe.control_steps
            params = [p for p in model.parameters() if p.requires_grad]
            decay = [p for p in params if p.ndim >= 2]
            no_decay = [p for p in params if p.ndim < 2]
            optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                           {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
            if state is not None and state.get("stage") == want and "optimizer" in state:
                optimizer.load_state_dict(state["optimizer"])
            stage_module = DDP(inner) if dist.enabled else inner
            model.train()

        presence_targets, n_views = None, 1
        if pool is not None:
            batch = pool.batch(recipe.batch_size)
            pool.refresh(recipe.pool_refresh)
            n_views = batch["n_views"]
            region_names = batch["names"]
            names = [n for n in region_names for _ in range(n_views)]
            lq = batch["lq"].to(device)
            hq = batch["hq"].to(device)
            if recipe.presence:
                presence_targets = presence_target(region_names, cfg.vocabulary).to(device)
            # sets larger than the slots (triples) still teach the presence head; the slot loss
            # sees them as their first n_slots names
            names = [n[: cfg.n_slots] for n in names]
        else:
            batch = next(batches)
            keep = [i for i, names in enumerate(batch["names"]) if len(names) <= cfg.n_slots]
            lq = batch["lq"][keep].to(device, non_blocking=True)
            hq = batch["hq"][keep].to(device, non_blocking=True)
            names = [batch["names"][i] for i in keep]
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, start, n_steps, lr, min(recipe.warmup_steps, max(1, n_steps // 5)),
                                 clock.stage_progress(stage_name))
        with autocast(device, use_amp):
            if stage_name == "base":
                idx = torch.tensor([set_index_of[frozenset(n)] for n in names], device=device)
                loss, acc = stage_module(lq, hq, idx, presence_targets, n_views)
            else:
                targets = set_targets(names, cfg.classes, cfg.n_slots).to(device)
                loss, acc = stage_module(lq, hq, targets, [frozenset(n) for n in names], presence_targets, n_views)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if recipe.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], recipe.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            model.clip.logit_scale.clamp_(max=math.log(100.0))
            model.logit_scale.clamp_(max=math.log(100.0))
        step += 1
        metrics = torch.stack([loss.detach().float().cpu(), acc.float().cpu()])
        metrics = all_reduce_mean(metrics, dist)
        acc_value = float(metrics[1])
        info = {"step": step, "stage": stage_name, "loss": float(metrics[0]), "acc": acc_value,
                "lr": optimizer.param_groups[0]["lr"], "seconds": round(clock.elapsed(), 1)}
        if on_step is not None:
            on_step(step, info)
        if dist.is_main and (step % recipe.log_every == 0 or step == recipe.total_steps):
            with log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(info) + "\n")
        last = step == recipe.total_steps or bool(clock.budget and clock.stage_progress("control") >= 1.0)
        if validation is not None and (step % recipe.val_every == 0 or last):
            model.eval()
            figures = validation.evaluate(model, stage=stage_name)
            model.train()
            with log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": step, "seconds": round(clock.elapsed(), 1), "val": figures}) + "\n")
        if step % recipe.checkpoint_every == 0 or last:
            if dist.is_main:
                save_model(model, cfg, out / "checkpoint", "daclip-slots")
                save_trainer_state(out, {"step": step, "stage": stage_name, "optimizer": optimizer.state_dict(),
                                         "elapsed": clock.elapsed(), "control_start": control_start})
            state = {"stage": stage_name}

    model.eval()
    model_dir = out / "model"
    if dist.is_main:
        save_pretrained(model, model_dir)
        if export is not None:
            save_pretrained(model, export)
    return {"model_dir": str(export or model_dir), "steps": step, "seconds": time.time() - t0, "acc": acc_value}
