"""``photomend train {daclip,restorer} ...``: the command line of the two trainers.

The trainers (:mod:`engine.training.daclip`, :mod:`engine.training.restorer`) import torch and know
nothing of the command line. This module adds their arguments, imports a trainer only when its
command runs (so ``photomend --help`` stays light), draws the progress bar and turns training's errors
(:class:`~engine.training.common.RecipeError`, :class:`~engine.training.common.TrainingDataError`)
into the CLI's one-line usage errors (exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from engine.bundle import DETECTOR, RESTORER, ModelBundle, describe_layout
from engine.cli import UsageError
from engine.training.recipes import DaClipRecipe, RestorerRecipe

DACLIP_RECIPE = Path(__file__).resolve().parents[2] / "training" / "daclip.toml"
DACLIP_HELP = "Train the DA-CLIP detector: a small base CLIP from scratch, then the two-slot controller."
RESTORER_HELP = "Train the IR-SDE restorer (conditional U-Net) on synthetic pairs with a frozen DA-CLIP."


def register(sub) -> None:
    parser = sub.add_parser("train", help="train the DA-CLIP detector or the restorer")
    stages = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    daclip = stages.add_parser("daclip", help=DACLIP_HELP)
    add_daclip_arguments(daclip)
    daclip.set_defaults(func=run_daclip)
    restorer = stages.add_parser("restorer", help=RESTORER_HELP)
    add_restorer_arguments(restorer)
    restorer.set_defaults(func=run_restorer)


# ------------------------------------------------------------------------------------ the detector


def add_daclip_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DACLIP_RECIPE, help="recipe TOML (default: %(default)s)")
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


def daclip_recipe(args) -> DaClipRecipe:
    """The recipe of ``--config`` with the flags given; ``--clip-weights`` or ``--init`` skip the base
    stage, ``--steps`` splits between the stages in the recipe's proportion."""
    from engine.training.common import load_recipe, override

    recipe = load_recipe(args.config, DaClipRecipe)
    recipe = override(recipe, batch_size=args.batch_size, clip_model=args.clip_model, device=args.device,
                      threads=args.threads)
    if args.clip_weights is not None and args.init is not None:
        raise UsageError("--clip-weights and --init exclude each other")
    base_steps = 0 if args.clip_weights or args.init else recipe.base_steps
    recipe = dataclasses.replace(recipe, base_steps=base_steps)
    if args.steps is not None:
        total = max(recipe.total_steps, 1)
        base = round(args.steps * recipe.base_steps / total)
        recipe = dataclasses.replace(recipe, base_steps=base, control_steps=args.steps - base)
    return recipe


class DetectorBar:
    """The progress bar of ``photomend train daclip`` (an ``on_step`` callback of its trainer)."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="daclip", dynamic_ncols=True)

    def __call__(self, step: int, metrics: dict) -> None:
        self.bar.n = step
        self.bar.set_postfix(stage=metrics["stage"], loss=f"{metrics['loss']:.3f}", acc=f"{metrics['acc']:.2f}")
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def run_daclip(args) -> int:
    """``photomend train daclip``: checks the inputs, trains, prints the summary (rank 0)."""
    from engine.training.common import RecipeError, cleanup_distributed, setup_distributed
    from engine.training.daclip import train

    try:
        recipe = daclip_recipe(args)
    except RecipeError as exc:
        raise UsageError(str(exc)) from None
    if not args.data.is_dir():
        raise UsageError(f"{args.data}: no such folder of clean photos")
    if args.clip_weights is not None and not args.clip_weights.is_file():
        raise UsageError(f"{args.clip_weights}: no such CLIP checkpoint")
    if args.init is not None and not ModelBundle(args.init).config_file(DETECTOR).is_file():
        raise UsageError(f"{args.init}: no {ModelBundle(args.init).config_file(DETECTOR).name} (not a detector folder)")
    dist = setup_distributed()
    bar = DetectorBar(recipe.total_steps) if dist.is_main and not args.no_progress else None
    try:
        result = train(recipe, args.data, args.out, resume=args.resume, clip_weights=args.clip_weights,
                       init=args.init, export=args.export, on_step=bar, val=args.val)
    finally:
        if bar is not None:
            bar.close()
        cleanup_distributed()
    if dist.is_main:
        print(f"detector written to {result['model_dir']} ({result['steps']} steps, "
              f"{result['seconds'] / 60:.1f} min, last accuracy {result['acc']:.3f})")
    return 0


# ------------------------------------------------------------------------------------ the restorer


def add_restorer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("training/restorer.toml"), help="TOML recipe")
    parser.add_argument("--data", type=Path, required=True, help="folder of clean training photos")
    parser.add_argument("--daclip", type=Path, help=f"DA-CLIP model folder ({describe_layout((DETECTOR,))})")
    parser.add_argument("--out", type=Path, default=Path("runs/restorer"), help="run folder")
    parser.add_argument("--val-data", type=Path, help="clean validation photos (default: recipe, or DATA/../val)")
    parser.add_argument("--val-photos", type=Path,
                        help="a `photomend synth` folder of whole degraded held-out photos to validate on "
                             "(default: the recipe's val_photos, or none)")
    parser.add_argument("--steps", type=int, help="override the recipe's step budget")
    parser.add_argument("--minutes", type=float, help="override the recipe's wall-clock budget (0: none)")
    parser.add_argument("--no-condition", action="store_true", help="train the ablation without DA-CLIP")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--init", type=Path,
                        help="start from this restorer folder's weights (fine-tuning; fresh optimizer and schedule)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (override the recipe)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")


class RestorerBar:
    """The progress bar of ``photomend train restorer`` (a ``progress`` callback of its trainer),
    opened at the first step it hears of (a resumed run starts part-way)."""

    def __init__(self):
        self.bar = None

    def __call__(self, info) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=info.total, initial=info.step - 1, desc="restorer", unit="step", dynamic_ncols=True)
        self.bar.update(1)
        post = {"loss": f"{info.loss:.4f}", "lr": f"{info.lr:.1e}"}
        if info.val_psnr is not None:
            extra = "".join(f", {k} {v:.2f} dB" for k, v in (info.figures or {}).items()
                            if k in ("heldout", "clean"))
            self.bar.write(f"step {info.step}: validation PSNR {info.val_psnr:.2f} dB (input {info.input_psnr:.2f} dB)"
                           + extra)
        self.bar.set_postfix(post)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_restorer(args: argparse.Namespace) -> int:
    """``photomend train restorer``: trains and prints where the EMA weights went (rank 0)."""
    from engine.training.common import RecipeError, load_recipe, override
    from engine.training.restorer import train

    try:
        recipe = load_recipe(args.config, RestorerRecipe)
    except RecipeError as exc:
        raise UsageError(str(exc)) from None
    recipe = override(recipe, steps=args.steps, threads=args.threads, minutes=args.minutes)
    if not args.no_condition and args.daclip is None:
        raise UsageError("--daclip MODEL_DIR is required unless --no-condition")
    val_dir = args.val_data or (Path(recipe.val_dir) if recipe.val_dir else args.data.parent / "val")
    bar = RestorerBar()
    try:
        result = train(recipe, args.data, val_dir, args.out, daclip_dir=None if args.no_condition else args.daclip,
                       resume=args.resume, device=args.device, progress=bar, init_dir=args.init,
                       val_photos=args.val_photos)
    except ValueError as exc:  # TrainingDataError, RecipeError, ModelFileError and the data's own checks
        raise UsageError(str(exc)) from None
    finally:
        bar.close()
    if result is not None:
        print(f"saved EMA weights to {ModelBundle(args.out).weights_file(RESTORER)} "
              f"(validation PSNR {result['val_psnr']:.2f} dB, input {result['input_psnr']:.2f} dB)")
    return 0
