"""``photomend restore INPUT... -o OUT``: restore files and folders, mirroring the input tree.

Exit status: 0 every file restored or skipped, 1 some failed (or the run was cancelled), 2 usage
error. ``--report FILE`` writes a JSON report (schema: :meth:`engine.jobs.batch.BatchJob.report`); ``--summary`` prints
a table of the detected degradations and timings.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from engine.cli import UsageError


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
    """The job's settings from the command line; what cannot be parsed is a :class:`UsageError`
    (ranges are checked by :meth:`BatchJob.validate`)."""
    from engine.inference.guard import GuardConfig
    from engine.io.writer import normalize_format
    from engine.jobs.api import SettingError
    from engine.jobs.events import BatchSettings
    from engine.vocab import parse_names

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
    try:
        return BatchSettings(output_dir=args.output, suffix=args.suffix, format=fmt, quality=args.quality,
                             overwrite="overwrite" if args.overwrite else "skip", steps=args.steps,
                             tile=args.tile, degradations=names, keep_clean=args.keep_clean,
                             strength=args.strength, guard=GuardConfig() if args.guard == "on" else None)
    except SettingError as exc:
        raise UsageError(_flag_message(exc)) from None


def _flag_message(exc) -> str:
    """A :class:`~engine.jobs.api.SettingError` worded for the option that set it (``--steps must be...``)."""
    return exc.for_flag("--" + exc.name.replace("_", "-"))


def write_json_atomic(path: Path, data: dict) -> None:
    from engine.io import atomic

    atomic.write_json(path, data)


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
    from engine.jobs.api import JobError, SettingError
    from engine.jobs.batch import BatchJob, NoBundledModel

    job = BatchJob.from_paths(args.inputs, _settings(args), recursive=args.recursive, model_dir=args.model,
                              device=args.device)
    try:
        job.validate()
    except NoBundledModel as exc:
        print(f"photomend restore: {exc}; nothing was restored. Train one with `photomend train` or pass "
              "--model DIR.", file=sys.stderr)
        return 0
    except SettingError as exc:
        raise UsageError(_flag_message(exc)) from None
    except JobError as exc:
        raise UsageError(str(exc)) from None

    from engine.inference.allocator import keep_freed_memory

    keep_freed_memory()  # this process is ours: tiles reuse freed memory instead of faulting it in again
    try:
        job.open_model()
    except JobError as exc:
        raise UsageError(str(exc)) from None

    start = time.perf_counter()
    bar = _Bar(len(job.inputs), disable=True if args.no_progress else None)  # None: only on a terminal
    try:
        results = job.run(on_event=bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    report = job.report(results, seconds)
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
          + f" in {seconds:.1f} s -> {job.settings.output_dir}", file=sys.stderr)
    return 0 if counts["failed"] == 0 and counts["cancelled"] == 0 else 1
