"""``photomend detect PATH... [--json] [--model DIR]``: the degradations seen in each photo.

A folder argument means every image in it. Text output: one line per image, the detected names
with their probabilities (``clean`` when none). ``--json``: one object per line,
``{"path", "degradations" (most probable first, none omitted), "scores" {name: probability}}``.
Unreadable files print a one-line error and the others go on; the exit status is then 1.

``photomend detect --eval SYNTH_DIR [--report FILE]`` evaluates the detector on a labelled set
written by ``photomend synth`` (``labels.jsonl``): exact-set accuracy, per-type F1 and the type
confusion table, printed (and written to FILE) as Markdown.

``photomend detect --calibrate SYNTH_DIR --out DIR`` fits one detection threshold per name on a
labelled set (best F-beta per name, :func:`engine.tools.detect_eval.calibrate_thresholds`) and writes a copy
of the model bundle with them in its detector config (:meth:`engine.bundle.ModelBundle.with_thresholds`).
Calibrate on photos the model was trained on or on a set of its own, never on the set you then
evaluate on.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("detect", help="detect the degradations in photos",
                            description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("paths", type=Path, nargs="*", metavar="PATH", help="images or folders of images")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder (a bundle or a detector alone) or an official DA-CLIP .pt "
                             "(default: the bundled model)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, mps (default: cpu)")
    parser.add_argument("--crops", type=int, default=None,
                        help="native-resolution crops per photo (default: as many as the detector was trained "
                             "with, where its config records it, else 8)")
    parser.add_argument("--recursive", action="store_true", help="also look in sub-folders")
    parser.add_argument("--eval", type=Path, default=None, metavar="SYNTH_DIR",
                        help="evaluate on a `photomend synth` folder (labels.jsonl) instead")
    parser.add_argument("--calibrate", type=Path, default=None, metavar="SYNTH_DIR",
                        help="fit per-name thresholds on a `photomend synth` folder; needs --out")
    parser.add_argument("--beta", type=float, default=1.0,
                        help="with --calibrate: maximise F-beta; below 1 favours precision (default 1: F1)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="with --calibrate: where the calibrated copy of the model bundle goes")
    parser.add_argument("--report", type=Path, default=None, metavar="FILE", help="with --eval: write Markdown here")
    parser.set_defaults(func=run)


def _expand(paths: list[Path], recursive: bool) -> list[Path]:
    from engine.io.reader import list_images

    out = []
    for p in paths:
        out.extend(list_images(p, recursive=recursive) if p.is_dir() else [p])
    return out


def _load_detector(args):
    from engine.models.clip_towers import import_open_clip

    import_open_clip()  # before the detector: open_clip's towers without torchvision
    from engine.bundle import bundled_model_dir
    from engine.cli import UsageError
    from engine.inference.detect import Detector
    from engine.inference.device import pick_device
    from engine.models.serialization import ModelFileError

    model = args.model or bundled_model_dir()
    try:
        return Detector.from_dir(model, device=pick_device(args.device), n_crops=args.crops)
    except (ModelFileError, ValueError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None


def _format_text(path: Path, det) -> str:
    if not det.degradations:
        best = max(det.scores.values(), default=0.0)
        return f"{path}: clean (highest score {best:.2f})"
    return f"{path}: " + ", ".join(f"{n} ({det.scores[n]:.2f})" for n in det.degradations)


def run(args) -> int:
    from engine.cli import UsageError

    if args.calibrate is not None:
        return _run_calibrate(args)
    if args.eval is not None:
        return _run_eval(args)
    if not args.paths:
        raise UsageError("give at least one image or folder (or --eval SYNTH_DIR)")
    from engine.io.reader import ImageReadError, read_rgb

    detector = _load_detector(args)
    files = _expand(args.paths, args.recursive)
    if not files:
        raise UsageError("no images found in " + ", ".join(str(p) for p in args.paths))
    failed = 0
    for path in files:
        try:
            det = detector.detect(read_rgb(path))
        except (ImageReadError, ValueError) as exc:
            failed += 1
            print(f"photomend detect: error: {str(exc).splitlines()[0]}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"path": str(path), "degradations": list(det.degradations),
                              "scores": {k: round(v, 4) for k, v in det.scores.items()}}), flush=True)
        else:
            print(_format_text(path, det), flush=True)
    return 1 if failed else 0


def read_labels(synth_dir: Path) -> list[tuple[Path, tuple[str, ...]]]:
    """``(lq image path, true names)`` for every record of ``synth_dir/labels.jsonl``."""
    from engine.cli import UsageError

    path = synth_dir / "labels.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        raise UsageError(f"{path}: not found (write the set with `photomend synth`)") from None
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out.append((synth_dir / rec["file"], tuple(rec["degradations"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UsageError(f"{path}:{i}: not a label record") from None
    return out


def _read_labelled(path: Path):
    """One image of a labelled set; an unreadable one stops the run with a one-line usage error."""
    from engine.cli import UsageError
    from engine.io.reader import ImageReadError, read_rgb

    try:
        return read_rgb(path)
    except ImageReadError as exc:
        raise UsageError(str(exc).splitlines()[0]) from None


def _run_eval(args) -> int:
    from tqdm import tqdm

    from engine.tools.detect_eval import evaluate

    records = read_labels(args.eval)
    detector = _load_detector(args)
    bar = tqdm(total=len(records), desc="eval", unit="img", file=sys.stderr, dynamic_ncols=True)

    def progress(event) -> None:
        bar.n = event.done
        bar.refresh()

    samples = ((_read_labelled(p), names) for p, names in records)
    t0 = time.time()
    report = evaluate(lambda im: detector.detect(im).degradations, samples, detector.vocabulary,
                      total=len(records), progress=progress)
    bar.close()
    text = report.to_markdown()
    text += f"\nEvaluated in {time.time() - t0:.0f} s.\n"
    print(text)
    if args.report is not None:
        args.report.write_text(text, encoding="utf-8")
    return 0


def _run_calibrate(args) -> int:
    from tqdm import tqdm

    from engine.bundle import DETECTOR, ModelBundle, bundled_model_dir
    from engine.cli import UsageError
    from engine.inference.detect import DETECT_THRESHOLD, select_names
    from engine.tools.detect_eval import DetectionReport, calibrate_thresholds

    bundle = ModelBundle(Path(args.model or bundled_model_dir()))
    if not bundle.config_file(DETECTOR).is_file():
        raise UsageError(f"{bundle.path}: --calibrate needs a model folder with {bundle.config_file(DETECTOR).name}")
    if args.out is None:
        raise UsageError("--calibrate needs --out DIR for the calibrated copy of the model")
    if not args.beta > 0:
        raise UsageError("--beta must be positive")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise UsageError(f"{args.out}: already exists and is not an empty folder")
    records = read_labels(args.calibrate)
    if not records:
        raise UsageError(f"{args.calibrate / 'labels.jsonl'}: no labelled images")
    detector = _load_detector(args)
    scores, truths = [], []
    for path, names in tqdm(records, desc="calibrate", unit="img", file=sys.stderr, dynamic_ncols=True):
        scores.append(detector.detect(_read_labelled(path)).scores)
        truths.append([n for n in names if n != "none"])
    thresholds = calibrate_thresholds(scores, truths, detector.vocabulary, beta=args.beta)

    limit = max(detector.n_slots, 1)
    before, after = DetectionReport(detector.vocabulary), DetectionReport(detector.vocabulary)
    for s, t in zip(scores, truths, strict=True):
        before.add(t, select_names(s, {}, limit))
        after.add(t, select_names(s, thresholds, limit))
    f1_before, f1_after = before.per_type(), after.per_type()
    print(f"Calibrated (F-beta, beta {args.beta:g}) on {len(records)} images of {args.calibrate}.\n")
    print("| type | threshold | F1 at 0.5 | F1 calibrated |\n|---|---:|---:|---:|")
    for name in detector.vocabulary:
        print(f"| {name} | {thresholds[name]:.2f} | {f1_before[name]['f1']:.3f} | {f1_after[name]['f1']:.3f} |")
    print(f"\nExact-set accuracy {before.exact_accuracy:.1%} -> {after.exact_accuracy:.1%}; "
          f"mean F1 {before.mean_f1:.1%} -> {after.mean_f1:.1%} (threshold {DETECT_THRESHOLD} before).")

    try:
        bundle.with_thresholds([thresholds[n] for n in detector.vocabulary], args.out)
    except OSError as exc:
        raise UsageError(f"{args.out}: could not write the calibrated model ({exc.strerror or exc})") from None
    print(f"wrote {args.out}")
    return 0
