"""``photomend restore INPUT... -o OUT``: restore files and folders, mirroring the input tree.

Exit status: 0 every file restored or skipped, 1 some failed (or the run was cancelled), 2 usage
error. ``--report FILE`` writes a JSON report (schema: :func:`build_report`); ``--summary`` prints
a table of the detected degradations and timings.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from engine.atomic import new_part_file
from engine.cli import UsageError

REPORT_VERSION = 1


def register(sub) -> None:
    p = sub.add_parser("restore", help="restore photos (files or folders) into an output folder",
                       description="Restore photos; the output folder mirrors the input tree.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files and/or folders")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="output folder")
    p.add_argument("--recursive", "-r", action="store_true", help="also restore images in subfolders")
    p.add_argument("--steps", type=int, default=1, help="IR-SDE steps (1 = fast, deterministic; default 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--tile", type=int, default=None, help="tile side in pixels (default: from free memory)")
    p.add_argument("--format", default=None, help="output format: jpeg, png, webp, tiff, bmp (default: the input's)")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality 1-100 (default 95)")
    p.add_argument("--suffix", default="", help="appended to each output's stem, e.g. _restored")
    p.add_argument("--degradations", default=None, metavar="A,B",
                   help="restore these degradations instead of the detected ones ('none' for none)")
    p.add_argument("--keep-clean", action="store_true",
                   help="write photos in which nothing is detected unchanged (not through the restorer)")
    p.add_argument("--strength", type=float, default=1.0, metavar="S",
                   help="how much of the restoration to apply, 0-1 (default 1: all of it); with the guard on, "
                        "the most it applies")
    p.add_argument("--guard", choices=("on", "off"), default="on",
                   help="do-no-harm guard: lower the strength toward the input where the detection is not "
                        "confident, keep photos in which nothing is detected (default on)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    p.add_argument("--report", type=Path, default=None, metavar="FILE", help="write a JSON report")
    p.add_argument("--model", type=Path, default=None, metavar="DIR", help="model bundle folder (default: bundled)")
    p.add_argument("--summary", action="store_true", help="print a table of detections and timings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _settings(args):
    from engine.io.writer import normalize_format
    from engine.jobs import BatchSettings
    from engine.vocab import parse_names

    if args.steps < 1:
        raise UsageError("--steps must be at least 1")
    if args.tile is not None and args.tile < 32:
        raise UsageError("--tile must be at least 32 pixels")
    if not 1 <= args.quality <= 100:
        raise UsageError("--quality must be between 1 and 100")
    if not 0.0 <= args.strength <= 1.0:
        raise UsageError("--strength must be between 0 and 1")
    fmt = None
    if args.format:
        try:
            fmt = normalize_format(args.format)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    names = None
    if args.degradations is not None:
        try:
            names = parse_names(args.degradations)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if len(names) > 2:
            raise UsageError("--degradations takes at most two names")
    if any(sep in args.suffix for sep in ("/", "\\")):
        raise UsageError("--suffix must not contain a path separator")
    from engine.guard import GuardConfig

    return BatchSettings(output_dir=args.output, suffix=args.suffix, format=fmt, quality=args.quality,
                         recursive=args.recursive, overwrite="overwrite" if args.overwrite else "skip",
                         steps=args.steps, tile=args.tile, device=args.device, degradations=names,
                         model_dir=args.model, keep_clean=args.keep_clean, strength=args.strength,
                         guard=GuardConfig() if args.guard == "on" else None)


def build_report(results, settings_record: dict, model: dict, seconds: float) -> dict:
    """The JSON report: ``version``, ``model``, ``settings``, ``summary`` counts, ``seconds`` and ``files``
    (one :class:`~engine.jobs.FileResult` each: path, status, output, degradations, scores, settings,
    seconds, error, guard (the guard's ``estimate``, ``strength`` and ``name``, or null) and the applied
    ``strength``)."""
    from engine.batch import summarize

    return {
        "version": REPORT_VERSION,
        "model": model,
        "settings": settings_record,
        "summary": summarize(results),
        "seconds": round(seconds, 3),
        "files": [r.to_json() for r in results],
    }


def write_json_atomic(path: Path, data: dict) -> None:
    from engine import atomic

    atomic.write_json(path, data)


def _check_writable(folder: Path) -> None:
    """Fail fast, in one line, when the output folder cannot be created or written (read-only disk)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        new_part_file(folder / ".photomend-probe").unlink()
    except OSError as exc:
        raise UsageError(f"{folder}: cannot write to the output folder ({exc.strerror or exc})") from None


def print_summary(results, out=None) -> None:
    """A fixed-width table: file, status, degradations (probability), the guard's estimate and the
    applied strength, seconds."""
    out = out or sys.stdout  # resolved at call time: sys.stdout may have been replaced since import
    rows = []
    for r in results:
        if r.degradations:
            found = ", ".join(f"{n} ({r.scores[n]:.2f})" if n in r.scores else n for n in r.degradations)
        else:
            found = "-" if r.status in ("failed", "cancelled") else "none"
        guard = "-" if r.strength is None else (f"{r.guard['estimate']:.2f} -> " if r.guard else "off -> ")
        guard += f"{r.strength:.2f}" if r.strength is not None else ""
        rows.append((Path(r.path).name, r.status, found, guard, f"{r.seconds:.1f}"))
    header = ("file", "status", "degradations (probability)", "guard -> strength", "seconds")
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + f"  {{:>{widths[-1]}}}"
    print(line.format(*header), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        print(line.format(*row), file=out)
    for r in results:
        if r.error:
            print(f"error: {r.error}", file=out)


class _Bar:
    """tqdm over files, advanced fractionally per tile so the ETA moves within a large photo."""

    def __init__(self, total: int, disable: bool | None):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="photo", disable=disable, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}] {postfix}")
        self.position = 0.0

    def advance_to(self, value: float) -> None:
        if value > self.position:
            self.bar.update(value - self.position)
            self.position = value

    def __call__(self, event) -> None:
        if event.kind == "started":
            self.bar.set_postfix_str(event.path.name, refresh=False)
        elif event.kind == "progress" and event.todo:
            self.advance_to(event.index + event.done / event.todo)
        elif event.kind in ("done", "skipped", "failed", "cancelled"):
            self.advance_to(event.index + 1)
            if event.kind == "failed":
                self.bar.write(f"failed: {event.error}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def run(args) -> int:
    settings = _settings(args)
    from engine.resources import bundled_model_dir, is_model_bundle

    model_dir = settings.model_dir
    if model_dir is None and not is_model_bundle(bundled_model_dir()):
        print(f"photomend restore: no model is bundled yet ({bundled_model_dir()} is empty); nothing was "
              "restored. Train one with `photomend train` or pass --model DIR.", file=sys.stderr)
        return 0
    if model_dir is not None and not is_model_bundle(model_dir):
        raise UsageError(f"{model_dir}: not a model bundle (needs detector.json/.safetensors and "
                         "restorer.json/.safetensors)")

    from engine.batch import collect_inputs, plan_output, run_batch, settings_record

    try:
        inputs = collect_inputs(args.inputs, recursive=settings.recursive, exclude=settings.output_dir)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    if not inputs:
        if any(Path(a).is_dir() and Path(a).resolve() == settings.output_dir.resolve() for a in args.inputs):
            raise UsageError(f"{settings.output_dir}: the output folder is the input folder, whose "
                             "contents are never restored again; choose another -o")
        raise UsageError("no images found in the given inputs (use --recursive for subfolders)")
    _check_writable(settings.output_dir)
    for path, root in inputs:
        out = plan_output(path, root, settings)
        if out.resolve() == path.resolve():
            raise UsageError(f"{path}: the output would overwrite the input; use --suffix or another -o")

    from engine.allocator import keep_freed_memory
    from engine.models.serialization import ModelFileError
    from engine.runtime import ModelNotFoundError, Restorer

    keep_freed_memory()  # this process is ours: tiles reuse freed memory instead of faulting it in again

    try:
        restorer = Restorer(model_dir, device=settings.device)
    except (ModelFileError, ModelNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    except (ValueError, RuntimeError) as exc:  # e.g. a forced device that is not there
        raise UsageError(str(exc).splitlines()[0]) from None

    start = time.perf_counter()
    bar = _Bar(len(inputs), disable=True if args.no_progress else None)  # None: only on a terminal
    try:
        results = run_batch(inputs, settings, restorer, on_event=bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    info = restorer.model_info
    report = build_report(results, settings_record(settings, restorer),
                          {"name": info.name, "path": str(info.path) if info.path else None,
                           "device": str(restorer.device)}, seconds)
    if args.report is not None:
        try:
            write_json_atomic(args.report, report)
        except OSError as exc:
            print(f"photomend restore: error: {args.report}: cannot write the report ({exc.strerror or exc})",
                  file=sys.stderr)
            return 1
    counts = report["summary"]
    if args.summary:
        print_summary(results)
    print(f"restored {counts['done']}, skipped {counts['skipped']}, failed {counts['failed']}"
          + (f", cancelled {counts['cancelled']}" if counts["cancelled"] else "")
          + f" in {seconds:.1f} s -> {settings.output_dir}", file=sys.stderr)
    return 0 if counts["failed"] == 0 and counts["cancelled"] == 0 else 1
