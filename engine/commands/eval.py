"""``photomend eval --model MODEL_DIR --data SYNTH_DIR``: PSNR/SSIM per degradation combination.

``--guard both`` scores the model's restorations with and without the do-no-harm guard on the same
pairs (one restoration per pair, two columns); ``--guard on`` reports only what ``photomend restore``
gives by default. ``--names true`` conditions the restorer on each pair's true degradations instead of
the detected ones (the user's override path), which separates the restorer's own errors from the
detector's. A held-out renderer's set (``photomend synth --renderer heldout``) evaluates like
any other.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("eval", help="evaluate a restorer on a `photomend synth` folder (Markdown + CSV)",
                            description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("--guard", choices=("off", "on", "both"), default="off",
                        help="the do-no-harm guard on the model: off (default), on (guarded figures only) or "
                             "both (with and without it, side by side)")
    parser.add_argument("--guard-ramp", default=None, metavar="LOW,HIGH",
                        help="the guard's ramp on its confidence scale: input kept at or below LOW, full "
                             "strength from HIGH (default: engine.inference.guard.GuardConfig's 0.5,0.75), to tune it")
    parser.add_argument("--model", type=Path, required=True, help="model folder (restorer + detector)")
    parser.add_argument("--data", type=Path, required=True, help="folder made by `photomend synth`")
    parser.add_argument("--ablation", type=Path, help="model folder of the unconditioned ablation restorer")
    parser.add_argument("--daclip", type=Path, help="detector folder (default: --model)")
    parser.add_argument("--steps", default="1", help="IR-SDE steps, or a comma list such as 1,4 (default 1)")
    parser.add_argument("--limit", type=int, help="evaluate at most N pairs, spread over the combinations")
    parser.add_argument("--out", type=Path, help="write REPORT_PREFIX.md and REPORT_PREFIX.csv")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed for steps > 1")
    parser.add_argument("--names", choices=("detected", "true"), default="detected",
                        help="condition the restorer on the detected degradations (default) or on each pair's "
                             "true ones, as a user's override does: its figures without the detector's errors")
    parser.add_argument("--keep-clean", action="store_true",
                        help="as `restore --keep-clean`: keep images in which nothing is detected (model only)")
    parser.set_defaults(func=run)


def _parse_steps(text: str) -> list[int]:
    from engine.cli import UsageError

    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--steps: expected integers such as 1 or 1,4, got {text!r}") from None
    if not steps or min(steps) < 1:
        raise UsageError(f"--steps: expected positive integers, got {text!r}")
    return steps


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from engine.cli import UsageError
    from engine.inference.detect import Detector
    from engine.inference.device import pick_device
    from engine.inference.guard import GuardConfig
    from engine.inference.restoration import RestorationModel
    from engine.models.serialization import ModelFileError
    from engine.tools.evaluate import (
        EvalDataError,
        evaluate,
        load_pairs,
        markdown_report,
        spread_subset,
        write_csv,
        write_images_csv,
    )

    steps_list = _parse_steps(args.steps)
    guard = None if args.guard == "off" else GuardConfig()
    true_names = args.names == "true"
    if true_names and (guard is not None or args.keep_clean):
        raise UsageError("--names true replaces the detection: it excludes --guard and --keep-clean")
    if args.guard_ramp is not None:
        if guard is None:
            raise UsageError("--guard-ramp needs --guard on or both")
        try:
            low, high = (float(v) for v in args.guard_ramp.split(","))
            guard = GuardConfig(keep_below=low, full_above=high)
        except ValueError as exc:
            raise UsageError(f"--guard-ramp: expected LOW,HIGH with 0 <= LOW < HIGH <= 1 ({exc})") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = pick_device(args.device)
        pairs = spread_subset(load_pairs(args.data), args.limit)
        model = RestorationModel.from_dir(args.model, device)
        needs_detector = model.conditioned or args.keep_clean or args.guard != "off"
        detector = Detector.from_dir(args.daclip or args.model, device) if needs_detector else None
        ablation = RestorationModel.from_dir(args.ablation, device) if args.ablation else None
        if ablation is not None and ablation.conditioned:
            raise UsageError(f"{args.ablation}: the ablation restorer should be unconditioned")
        if model.conditioned and detector.embed_dim != model.cond_dim:
            raise UsageError(f"{args.daclip or args.model}: detector embed_dim {detector.embed_dim} does not "
                             f"match the restorer's cond_dim {model.cond_dim}")
    except (ModelFileError, EvalDataError, ValueError) as exc:
        raise UsageError(str(exc)) from None

    runs = [("model", model, detector)] + ([("ablation", ablation, None)] if ablation is not None else [])
    results: dict[str, list] = {name: [] for name, _, _ in runs}
    with tqdm(total=len(pairs) * len(steps_list) * len(runs), unit="pair", desc="eval", file=sys.stderr,
              dynamic_ncols=True) as bar:
        for steps in steps_list:
            for name, m, det in runs:
                try:
                    results[name] += evaluate(m, pairs, steps, det, args.seed, progress=lambda e: bar.update(1),
                                              keep_clean=args.keep_clean and name == "model",
                                              guard=guard if name == "model" else None,
                                              true_names=true_names and name == "model")
                except (EvalDataError, ValueError) as exc:
                    raise UsageError(str(exc)) from None
    if args.guard == "on":
        results["model"] = [r.guarded() for r in results["model"]]  # one set of columns: the guarded ones
    report = []
    for steps in steps_list:
        main_rs = [r for r in results["model"] if r.steps == steps]
        abl_rs = [r for r in results.get("ablation", []) if r.steps == steps] or None
        gate = ((" (--keep-clean)" if args.keep_clean else "") + (" (guard on)" if args.guard == "on" else "")
                + (" (true names)" if true_names else ""))
        report.append(markdown_report(main_rs, abl_rs, title=f"{args.model}{gate} on {args.data}"))
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_name(args.out.name + ".md").write_text(text, encoding="utf-8")
        write_csv(args.out.with_name(args.out.name + ".csv"), results)
        write_images_csv(args.out.with_name(args.out.name + "_images.csv"), results)
        print(f"wrote {args.out}.md, {args.out}.csv and {args.out}_images.csv")
    return 0
