"""One training campaign on one machine: detector v2, the restorer v2 on it, its ablation, evaluation.

``python -m engine.training.campaign run PHOTOS WORK [--scale training/gpu_scale.toml] [--device cuda]``

``PHOTOS`` holds ``train/`` and ``val/`` (``python -m engine.training.photos``; photos are never
committed, see ``training/README.md``). The scale file (:class:`CampaignScale`) names the two
recipes and overrides some of their keys for the machine (a GPU's batch sizes and minutes, or a
test's tiny steps); the merged recipes are checked like any recipe (unknown keys are an error).
The steps, each resumed when ``WORK`` already holds its run:

1. ``WORK/detector``: ``photomend train daclip`` with the detector recipe, continuing the control
   stage of ``detector_init`` (the committed CPU campaign's weights) when it is there, exported to
   ``WORK/bundle``;
2. ``WORK/restorer``: ``photomend train restorer`` with the restorer recipe conditioned on that
   detector, warm-started from ``init`` when the network and condition width allow; its EMA
   weights join the bundle;
3. ``WORK/ablation``: the same restorer recipe without conditioning (when ``ablation``);
4. held-out sets of the ``val`` photos (``photomend synth --preset all``, with the project's
   renderer and with the held-out one) and ``photomend eval --guard both`` (with the ablation)
   and ``photomend detect --eval`` on each; the Markdown goes to ``WORK/report.md``.

``pack-photos SRC DEST`` writes ``SRC``'s photos as JPEG (quality 95) so that a photo set fits
what a lent GPU machine accepts (``training/gpu_campaign.sh``, ``training/README.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import tomllib

from engine.inference.restoration import ARCHITECTURE, RestorerConfig
from engine.models.serialization import ModelFileError, build_dataclass, read_config
from engine.training.common import RecipeError
from engine.training.recipes import DaClipRecipe, RestorerRecipe

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_MODULES = ("torch", "numpy", "PIL", "safetensors", "open_clip", "albumentations", "imagecorruptions",
                    "skimage", "tqdm", "psutil")


@dataclasses.dataclass(frozen=True)
class CampaignScale:
    """A campaign's scale file (``training/gpu_scale.toml``).

    ``detector`` and ``restorer``: tables of recipe keys that replace those of ``detector_recipe``
    and ``restorer_recipe`` (nested tables such as ``[restorer.unet]`` merge key by key).
    ``detector_init``: a detector folder whose control stage the detector continues (``--init``; the
    recipe's base stage is then skipped; ``""`` or a missing folder: from scratch).
    ``init``: the restorer to warm-start from (``""``: none). ``ablation``: also train the
    unconditioned restorer, for ``ablation_minutes``, warm-started from ``ablation_init`` (an
    unconditioned restorer; ``""`` or missing: from scratch, where the v2 recipe's identity samples
    hold a fresh network at the identity: model card, "A1 stopped"). ``eval_per_image``, ``eval_max_side``: the
    held-out sets (pairs per ``val`` photo, photo size).
    """

    detector_recipe: str = "training/detector_v2.toml"
    restorer_recipe: str = "training/restorer_v2.toml"
    detector: dict = dataclasses.field(default_factory=dict)
    restorer: dict = dataclasses.field(default_factory=dict)
    detector_init: str = "training/checkpoints/detector_v2"
    init: str = "resources/models/default"
    ablation: bool = True
    ablation_minutes: float = 0.0
    ablation_init: str = ""
    eval_per_image: int = 4
    eval_max_side: int = 512


@dataclasses.dataclass(frozen=True)
class CampaignPlan:
    scale: CampaignScale
    detector: DaClipRecipe
    restorer: RestorerRecipe


def _merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"{path}: unreadable ({exc})") from None


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() or p.exists() else ROOT / p


def load_plan(scale_path: Path) -> CampaignPlan:
    """The scale file and the two recipes it modifies, checked (``RecipeError``: one line)."""
    try:
        scale = build_dataclass(CampaignScale, _read_toml(scale_path), scale_path)
        recipes = []
        for cls, name, changes in ((DaClipRecipe, scale.detector_recipe, scale.detector),
                                   (RestorerRecipe, scale.restorer_recipe, scale.restorer)):
            path = _resolve(name)
            recipes.append(build_dataclass(cls, _merge(_read_toml(path), changes), f"{path} + {scale_path}"))
    except (ModelFileError, ValueError) as exc:
        raise RecipeError(str(exc)) from None
    return CampaignPlan(scale, *recipes)


def missing_modules() -> list[str]:
    """The packages the campaign needs that this Python cannot import, with what each lacks (a GPU
    machine's image may lack some; the held-out renderer's is needed only at the end)."""
    missing = []
    for name in REQUIRED_MODULES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(name)
        except ImportError as exc:
            missing.append(name if exc.name in (None, name) else f"{name} (needs {exc.name})")
    return missing


def photo_split(photos: Path) -> tuple[Path, Path]:
    train, val = photos / "train", photos / "val"
    if not train.is_dir() or not val.is_dir():
        raise RecipeError(f"{photos}: expected train/ and val/ (python -m engine.training.photos, training/README.md)")
    return train, val


def say(text: str) -> None:
    print(f"[campaign {time.strftime('%H:%M:%S')}] {text}", flush=True)


def _every(n: int):
    def on_step(step: int, metrics: dict) -> None:
        if step % n == 0:
            say(f"detector step {step}: {metrics['stage']} loss {metrics['loss']:.3f} acc {metrics['acc']:.2f}")
    return on_step


def _restorer_progress(name: str, n: int):
    def progress(info) -> None:
        if info.val_psnr is not None:
            say(f"{name} step {info.step}: validation {info.figures}")
        elif info.step % n == 0:
            say(f"{name} step {info.step}: loss {info.loss:.4f} lr {info.lr:.2e}")
    return progress


def restorer_runs(plan: CampaignPlan, bundle: Path) -> list[tuple[str, Path | None, RestorerRecipe, Path | None]]:
    """The restorer runs of a campaign, each ``(name, detector folder or None, recipe, warm start or
    None)``: the conditioned restorer from ``init``, then (with ``ablation``) the unconditioned one
    from ``ablation_init`` for ``ablation_minutes``."""
    scale = plan.scale
    runs = [("restorer", bundle, plan.restorer, _resolve(scale.init) if scale.init else None)]
    if scale.ablation:
        minutes = scale.ablation_minutes or plan.restorer.minutes
        runs.append(("ablation", None, dataclasses.replace(plan.restorer, minutes=minutes),
                     _resolve(scale.ablation_init) if scale.ablation_init else None))
    return runs


def _init_for(init: Path | None, conditioned: bool, cond_dim: int) -> Path | None:
    """``init`` when its network can be warm-started from (same conditioning and width), else ``None``."""
    from engine.bundle import RESTORER, ModelBundle

    if init is None or not ModelBundle(init).config_file(RESTORER).is_file():
        return None
    cfg = read_config(ModelBundle(init).stem(RESTORER), ARCHITECTURE, RestorerConfig)
    if cfg.unet.conditioned != conditioned or (conditioned and cfg.unet.cond_dim != cond_dim):
        say(f"{init}: its restorer cannot warm-start this one (conditioning differs); training from scratch")
        return None
    return init


def photomend(args: list[str]) -> int:
    """``photomend ARGS`` in a child process, as a user runs it (training does not import the command
    line); its output goes to this process's. Returns its exit status."""
    return subprocess.run([sys.executable, "-m", "engine", *args], check=False).returncode


def run_campaign(plan: CampaignPlan, photos: Path, work: Path, device: str = "auto") -> Path:
    """Run the steps of the module docstring in ``work``; returns ``work/report.md``."""
    # imported here, once main() has checked that every package they need is there
    from engine.bundle import DETECTOR, RESTORER, ModelBundle
    from engine.inference.detect import Detector
    from engine.tools.synth import SynthSettings, synthesize
    from engine.training import daclip, restorer

    train_dir, val_dir = photo_split(photos)
    work.mkdir(parents=True, exist_ok=True)
    bundle = work / "bundle"
    scale = plan.scale

    det_run = work / "detector"
    det_init = _resolve(scale.detector_init) if scale.detector_init else None
    if det_init is not None and not ModelBundle(det_init).config_file(DETECTOR).is_file():
        say(f"{det_init}: no detector there; the detector starts from scratch")
        det_init = None
    det_recipe = dataclasses.replace(plan.detector, device=device)
    if det_init is not None:  # the control stage goes on from those weights; no base stage
        det_recipe = dataclasses.replace(det_recipe, base_steps=0)
    say(f"detector: {scale.detector_recipe} at this scale ({det_recipe.minutes} min budget, init {det_init})")
    daclip.train(det_recipe, train_dir, det_run, resume=(det_run / "trainer_state.pt").is_file(),
                 export=bundle, on_step=_every(max(1, det_recipe.log_every)), val=val_dir, init=det_init)

    cond_dim = Detector.from_dir(bundle).embed_dim
    for name, daclip_dir, recipe, warm in restorer_runs(plan, bundle):
        run = work / name
        resume = (run / "trainer_state.pt").is_file()
        start = None if resume else _init_for(warm, daclip_dir is not None, cond_dim)
        say(f"{name}: {scale.restorer_recipe} ({recipe.minutes} min budget, init {start})")
        restorer.train(recipe, train_dir, val_dir, run, daclip_dir=daclip_dir, resume=resume, device=device,
                       progress=_restorer_progress(name, max(1, recipe.log_every)), init_dir=start)
    trained = ModelBundle(work / "restorer")  # the run folder holds the EMA restorer as a bundle part
    for src, dst in zip(trained.files((RESTORER,)), ModelBundle(bundle).files((RESTORER,)), strict=True):
        shutil.copy2(src, dst)

    report = [f"# Campaign of {time.strftime('%Y-%m-%d %H:%M')}, device {device}", ""]
    for renderer in ("project", "heldout"):
        data = work / "sets" / f"all_{renderer}"
        if not (data / "labels.jsonl").is_file():
            synthesize(val_dir, data, SynthSettings(preset="all", per_image=scale.eval_per_image, seed=17,
                                                    max_side=scale.eval_max_side, renderer=renderer))
        out = work / f"eval_{renderer}"
        args = ["eval", "--model", str(bundle), "--data", str(data), "--guard", "both", "--out", str(out),
                "--device", device]
        if scale.ablation:
            args += ["--ablation", str(work / "ablation")]
        if photomend(args) != 0:
            raise RuntimeError(f"photomend eval on {data} failed")
        detect_report = work / f"detect_{renderer}.md"
        if photomend(["detect", "--eval", str(data), "--model", str(bundle), "--device", device,
                "--report", str(detect_report)]) != 0:
            raise RuntimeError(f"photomend detect --eval on {data} failed")
        report += [f"## Held-out photos, {renderer} renderer", "", out.with_suffix(".md").read_text(encoding="utf-8"),
                   detect_report.read_text(encoding="utf-8"), ""]
    path = work / "report.md"
    path.write_text("\n".join(report), encoding="utf-8")
    say(f"bundle in {bundle}, report in {path}")
    return path


def pack_photos(src: Path, dest: Path, quality: int = 95, max_side: int = 1536) -> int:
    """Copy ``src``'s photos (``train/``, ``val/``) to ``dest`` as JPEG; returns how many."""
    from PIL import Image

    from engine.io.reader import list_images, open_image

    count = 0
    for path in list_images(src, recursive=True):
        out = dest / path.relative_to(src).with_suffix(".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        im = open_image(path).convert("RGB")
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        im.save(out, quality=quality, subsampling=0)
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.training.campaign", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train, evaluate and write the report")
    run.add_argument("photos", type=Path, help="folder with train/ and val/ photos")
    run.add_argument("work", type=Path, help="run folder (resumed when it exists)")
    run.add_argument("--scale", type=Path, default=ROOT / "training" / "gpu_scale.toml")
    run.add_argument("--device", default="auto")
    pack = sub.add_parser("pack-photos", help="photos as JPEG, small enough to travel")
    pack.add_argument("src", type=Path)
    pack.add_argument("dest", type=Path)
    pack.add_argument("--quality", type=int, default=95)
    pack.add_argument("--max-side", type=int, default=1536)
    args = ap.parse_args(argv)
    if args.command == "pack-photos":
        print(f"wrote {pack_photos(args.src, args.dest, args.quality, args.max_side)} photos to {args.dest}")
        return 0
    missing = missing_modules()
    if missing:
        print(f"campaign: error: missing Python packages: {', '.join(missing)} (carry them as wheels, "
              "training/README.md)", file=sys.stderr)
        return 2
    try:
        plan = load_plan(args.scale)
        photo_split(args.photos)
    except RecipeError as exc:
        print(f"campaign: error: {exc}", file=sys.stderr)
        return 2
    run_campaign(plan, args.photos, args.work, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
