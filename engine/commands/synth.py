"""``photomend synth CLEAN_DIR OUT_DIR``: write a synthetic degraded/clean dataset (lq/, hq/, labels.jsonl)."""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser(
        "synth",
        help="degrade clean photos into a paired dataset (lq/, hq/, labels.jsonl)",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    parser.add_argument("clean_dir", type=Path, metavar="CLEAN_DIR", help="folder of clean photos")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="where lq/, hq/ and labels.jsonl go")
    parser.add_argument("--preset", choices=("seed24", "mixed", "all"), default="seed24",
                        help="seed24: the 24 two-degradation pairs of DA-CLIP; mixed: 0-3 random degradations; "
                             "all: 24 pairs + 11 singles + clean (default: seed24)")
    parser.add_argument("--per-image", type=int, default=None, metavar="N",
                        help="pairs per photo (seed24/all: rotate through the list; default: every "
                             "combination for seed24/all, 1 for mixed)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--max-side", type=int, default=512, metavar="PX",
                        help="downsize photos so the longer side is at most PX first (default 512)")
    parser.add_argument("--recursive", action="store_true", help="also read photos in sub-folders")
    parser.add_argument("--renderer", choices=("project", "albumentations", "heldout", "train"), default="project",
                        help="who draws the degradations: the project's library (default), albumentations, the "
                             "held-out renderer that no trainer uses, or train (the trainers' mix of the first two)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from engine.cli import UsageError
    from engine.tools.synth import SynthInputError, SynthSettings, synthesize

    try:
        settings = SynthSettings(preset=args.preset, per_image=args.per_image, seed=args.seed, renderer=args.renderer,
                                 max_side=args.max_side, recursive=args.recursive)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not args.clean_dir.is_dir():
        raise UsageError(f"{args.clean_dir}: no such folder")

    bars = []  # created on the first event, so that input errors print no empty bar

    def progress(event) -> None:
        if not bars:
            bars.append(tqdm(total=event.total, unit="pair", desc="synth", file=sys.stderr, dynamic_ncols=True))
        bars[0].n = event.done
        bars[0].refresh()

    def warn(message: str) -> None:
        tqdm.write(f"photomend synth: warning: {message}", file=sys.stderr)

    try:
        report = synthesize(args.clean_dir, args.out_dir, settings, progress=progress, on_warning=warn)
    except SynthInputError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # e.g. OUT_DIR not writable
        raise UsageError(f"{args.out_dir}: {exc.strerror or exc}") from None
    finally:
        for bar in bars:
            bar.close()
    if report.photos == 0:
        raise UsageError(f"{args.clean_dir}: none of the {len(report.skipped)} image files could be read")
    print(f"wrote {report.written} pairs from {report.photos} photos "
          f"({len(report.combinations)} combinations) to {args.out_dir}"
          + (f"; skipped {len(report.skipped)} unreadable file(s)" if report.skipped else ""))
    return 1 if report.skipped else 0
