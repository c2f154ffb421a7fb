"""Batch restoration of files and folders: input collection, output planning, skip-on-rerun, events.

* :func:`collect_inputs` walks files and folders (recursively if asked; symlink loops are safe;
  hidden files and anything inside the output folder are never picked).
* :func:`plan_output` mirrors the input tree under the output folder, same stem and format by default.
* :class:`BatchJob` is one restore job (inputs, :class:`~engine.jobs.events.BatchSettings`, the model): its
  :meth:`~BatchJob.validate` holds every check made before a job starts, :meth:`~BatchJob.run`
  restores, :meth:`~BatchJob.report` builds the JSON report. The CLI and the desktop worker both drive it.
* :func:`run_batch` restores each file, reports :class:`~engine.jobs.events.BatchEvent` s through a
  callback (``"progress"`` per tile) and returns one :class:`~engine.jobs.events.FileResult` per file.
  One bad file is reported and the batch goes on. It can be called again and again (the desktop
  worker calls it from a QThread).

Skip on rerun: after each output is written (atomically), a small manifest
``OUTPUT_DIR/.photomend-manifest.json`` (itself written atomically) records the output with a
hash of the model, the settings and the input's size and modification time. A rerun skips files
whose output exists with a matching record, so a batch stopped by a crash continues where it
stopped. An output without a matching record is restored again and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from engine.inference.guard import GuardDecision, applied_strength
from engine.io import atomic
from engine.io.reader import IMAGE_SUFFIXES, load_image
from engine.io.writer import FORMATS, normalize_format, save_image
from engine.jobs.api import Cancelled, CancelToken, Detection, JobError, ProgressEvent
from engine.jobs.events import BatchEvent, BatchSettings, FileResult

if TYPE_CHECKING:
    from engine.inference.analysis import AnalysisCache
    from engine.inference.runtime import Restorer

MANIFEST_NAME = ".photomend-manifest.json"
MANIFEST_VERSION = 1


class BatchFileError(ValueError):
    """A per-file problem found before restoring it (one line naming the file)."""


# --------------------------------------------------------------------------- inputs


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def collect_inputs(paths: Iterable[Path], recursive: bool = False,
                   exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """``(file, root)`` pairs for every image under ``paths``; ``root`` is the folder outputs mirror from.

    A file argument is taken as given (its root is its folder); a folder contributes its images
    (and its subfolders' if ``recursive``). Hidden files and folders, files inside ``exclude``
    (the output folder) and duplicates are left out; symlinked folders are followed once.
    Missing paths raise ``FileNotFoundError``.
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()

    def add(file: Path, root: Path) -> None:
        real = file.resolve()
        if real in seen or _inside(file, excluded):
            return
        seen.add(real)
        found.append((file, root))

    for arg in paths:
        arg = Path(arg)
        if not arg.exists():
            raise FileNotFoundError(f"{arg}: no such file or folder")
        if not arg.is_dir():
            add(arg, arg.parent)
            continue
        visited: set[tuple[int, int]] = set()
        for folder, dirs, files in os.walk(arg, followlinks=True):
            here = Path(folder)
            st = here.stat()
            if (st.st_dev, st.st_ino) in visited or _inside(here, excluded):
                dirs[:] = []
                continue
            visited.add((st.st_dev, st.st_ino))
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
            for name in sorted(files):
                if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    add(here / name, arg)
    found.sort(key=lambda pair: (str(pair[1]), str(pair[0])))
    return found


# --------------------------------------------------------------------------- outputs


def plan_output(path: Path, root: Path, settings: BatchSettings) -> Path:
    """Where the restoration of ``path`` goes: the tree under ``root`` mirrored into the output folder.

    ``naming="suffix"``: ``OUT/<rel dir>/<stem><suffix><ext>``; ``"subfolder"``:
    ``OUT/<subfolder>/<rel dir>/<stem><ext>``. ``ext`` is the input's own suffix unless another
    format is asked for (or the input's cannot be written, then ``.png``).
    """
    path, root = Path(path), Path(root)
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    ext = path.suffix if path.suffix.lower() in IMAGE_SUFFIXES else ".png"
    if settings.format:
        fmt = normalize_format(settings.format)
        if normalize_format(ext) != fmt:
            ext = FORMATS[fmt]
    if settings.naming == "subfolder":
        return Path(settings.output_dir) / settings.subfolder / rel.parent / f"{rel.stem}{ext}"
    if settings.naming != "suffix":
        raise ValueError(f"unknown naming {settings.naming!r}; use 'suffix' or 'subfolder'")
    return Path(settings.output_dir) / rel.parent / f"{rel.stem}{settings.suffix}{ext}"


def _numbered(path: Path, taken: set[Path]) -> Path:
    """``path``, or ``name (1).ext``, ``name (2).ext``... avoiding existing files and ``taken``."""
    candidate, n = path, 0
    while candidate in taken or candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem} ({n}){path.suffix}")
    return candidate


def settings_record(settings: BatchSettings, restorer: Restorer | None = None) -> dict:
    """The settings that shape an output (stored in the report and hashed for skip-on-rerun)."""
    return {
        "model": restorer.model_info.name if restorer is not None else None,
        "model_fingerprint": restorer.fingerprint if restorer is not None else None,
        "steps": settings.steps,
        "tile": settings.tile,
        "degradations": list(settings.degradations) if settings.degradations is not None else None,
        "keep_clean": settings.keep_clean,
        "format": settings.format,
        "quality": settings.quality,
        # only when set: outputs restored before the option existed are still skipped on a rerun
        **({"strength": settings.strength} if settings.strength != 1.0 else {}),
        **({"seed": settings.seed} if settings.seed != 0 else {}),
        # the guard changes outputs: restored before it existed (or with it off) means restore again
        "guard": (None if settings.guard is None else
                  {"keep_below": settings.guard.keep_below, "full_above": settings.guard.full_above}),
    }


def _file_key(record: dict, path: Path) -> str:
    st = path.stat()
    data = dict(record, input_size=st.st_size, input_mtime_ns=st.st_mtime_ns)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


class Manifest:
    """The record of finished outputs in one output folder (see the module docstring)."""

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / MANIFEST_NAME

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    def _rel(self, output: Path) -> str:
        try:
            return Path(output).relative_to(self.output_dir).as_posix()
        except ValueError:
            return str(Path(output).resolve())

    def lookup(self, output: Path, key: str) -> dict | None:
        """The record of ``output`` when it exists on disk and was made with ``key``."""
        entry = self._read().get(self._rel(output))
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        try:
            if Path(output).stat().st_size != entry.get("size"):
                return None
        except OSError:
            return None
        return entry

    def record(self, output: Path, key: str, source: Path, degradations: list[str], scores: dict,
               guard: dict | None = None, strength: float | None = None) -> None:
        entries = self._read()
        entries[self._rel(output)] = {
            "key": key, "input": str(source), "size": Path(output).stat().st_size,
            "degradations": degradations, "scores": scores, "guard": guard, "strength": strength,
        }
        data = json.dumps({"version": MANIFEST_VERSION, "entries": entries}, indent=1).encode()
        atomic.write_bytes(self.path, data)


# --------------------------------------------------------------------------- the batch


def file_error(exc: BaseException, path: Path) -> str:
    """``exc`` in one line that names ``path`` (the message of a photo that failed)."""
    text = atomic.one_line(exc)
    return text if str(path) in text else f"{path}: {text}"


class _Planner:
    """Where each input goes and whether it is skipped, decided in input order, ahead of the restoring
    loop when the reader needs to know which photo comes next."""

    def __init__(self, inputs: list[tuple[Path, Path]], settings: BatchSettings, record: dict, manifest: Manifest):
        self.inputs, self.settings, self.record, self.manifest = inputs, settings, record, manifest
        self.taken: set[Path] = set()
        self._plans: dict[int, tuple[Path, str, dict | None] | Exception] = {}

    def plan(self, index: int) -> tuple[Path, str, dict | None]:
        """``(output, key, manifest entry or None)`` for input ``index``; raises its planning error."""
        for i in range(len(self._plans), index + 1):  # in order: ``taken`` depends on the earlier inputs
            try:
                self._plans[i] = self._plan_one(*self.inputs[i])
            except Exception as exc:  # raised when the loop reaches that input
                self._plans[i] = exc
        planned = self._plans[index]
        if isinstance(planned, Exception):
            raise planned
        return planned

    def next_to_restore(self, after: int) -> int | None:
        """The first input after ``after`` that will be restored (not skipped, not failing to plan)."""
        for i in range(after + 1, len(self.inputs)):
            try:
                if self.plan(i)[2] is None:
                    return i
            except Exception:
                continue
        return None

    def _plan_one(self, path: Path, root: Path) -> tuple[Path, str, dict | None]:
        path, settings = Path(path), self.settings
        output = plan_output(path, root, settings)
        if output in self.taken:  # two inputs mapping to one output (e.g. a.jpg and a.png as JPEG)
            output = _numbered(output, self.taken)
        if output.exists() and os.path.samefile(output, path):
            raise BatchFileError(f"{path}: the output would overwrite the input; "
                                 "choose another output folder or a suffix")
        key = _file_key(self.record, path)
        entry = self.manifest.lookup(output, key) if settings.overwrite == "skip" else None
        if entry is None and settings.overwrite == "rename":
            output = _numbered(output, self.taken)
        self.taken.add(output)
        return output, key, entry


def run_batch(inputs: list[tuple[Path, Path]], settings: BatchSettings, restorer: Restorer,
              on_event: Callable[[BatchEvent], None] | None = None,
              cancel: CancelToken | None = None, analyses: AnalysisCache | None = None) -> list[FileResult]:
    """Restore ``inputs`` (from :func:`collect_inputs`) with ``settings``; one result per input.

    ``analyses``: photos analysed beforehand (:class:`~engine.inference.analysis.AnalysisCache`) are not
    detected again, unless ``settings.degradations`` overrides the detection.
    ``settings.guard``: each photo's strength is lowered where the detection is not confident
    (:mod:`engine.inference.guard`); results carry the decision (``guard``) and the applied ``strength``.

    Events: ``started``, ``detected``, ``progress`` (per tile), then ``done``, ``skipped``,
    ``failed`` or ``cancelled``. When ``cancel`` fires, the current file stops within one tile
    and it and the files not yet started are reported ``cancelled``.

    Overlap: while a photo is restored, a reader thread decodes the next photo to restore and a
    writer thread encodes and records the previous one (at most one of each, so memory holds at
    most two photos more than a serial loop). A photo's ``done`` (or, when writing fails,
    ``failed``) therefore comes once its file is written, which may be after the next photo's
    ``started``. Every event is emitted from the calling thread.
    """
    emit = on_event or (lambda event: None)
    total = len(inputs)
    record = settings_record(settings, restorer)
    options = settings.restore_options()
    manifest = Manifest(settings.output_dir)
    planner = _Planner(inputs, settings, record, manifest)
    results: list[FileResult] = []
    reads: dict[int, Future] = {}
    writing: list[tuple[Future, FileResult, int, float, Detection, GuardDecision | None]] = []  # at most one

    def finish_write(block: bool) -> None:
        if not writing or not (block or writing[0][0].done()):
            return
        future, result, index, start, detection, guard = writing.pop()
        path, output = Path(result.path), Path(result.output)
        try:
            future.result()
            result.status = "done"
        except Exception as exc:
            result.status, result.error = "failed", file_error(exc, path)
        result.seconds = round(time.perf_counter() - start, 3)
        if result.status == "done":
            emit(BatchEvent("done", path, index, total, output=output, detection=detection,
                            seconds=result.seconds, guard=guard))
        else:
            emit(BatchEvent("failed", path, index, total, seconds=result.seconds, error=result.error))

    def write(pixels, loaded, output: Path, key: str, path: Path, result: FileResult) -> None:  # writer thread
        save_image(pixels, output, format=normalize_format(output.suffix), quality=settings.quality, metadata=loaded)
        manifest.record(output, key, path, result.degradations, result.scores, result.guard, result.strength)

    with ThreadPoolExecutor(1, thread_name_prefix="photomend-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="photomend-write") as writer:
        for index, (path, _root) in enumerate(inputs):
            path = Path(path)
            finish_write(block=False)
            if cancel is not None and cancel.cancelled:
                results.append(FileResult(str(path), "cancelled", settings=record))
                emit(BatchEvent("cancelled", path, index, total))
                continue
            emit(BatchEvent("started", path, index, total))
            start = time.perf_counter()
            result = FileResult(str(path), "failed", settings=record)
            results.append(result)
            try:
                output, key, entry = planner.plan(index)
                if entry is not None:
                    results[-1] = FileResult(str(path), "skipped", str(output), list(entry.get("degradations", [])),
                                             dict(entry.get("scores", {})), record, guard=entry.get("guard"),
                                             strength=entry.get("strength"))
                    emit(BatchEvent("skipped", path, index, total, output=output))
                    continue
                result.output = str(output)

                pending = reads.pop(index, None) or reader.submit(load_image, path)
                loaded = pending.result()
                upcoming = planner.next_to_restore(index)
                if upcoming is not None:  # decode it while this photo is detected and restored
                    reads[upcoming] = reader.submit(load_image, Path(inputs[upcoming][0]))
                prepared = None
                if analyses is not None and options.degradations is None:
                    prepared = analyses.lookup(path, restorer)
                if prepared is None:
                    prepared = restorer.prepare(loaded.pixels, options)
                detection = prepared.detection
                result.degradations = list(detection.degradations)
                result.scores = {k: round(float(v), 4) for k, v in detection.scores.items()}
                guard = restorer.guard_decision(prepared, options)
                result.guard = guard.to_json() if guard is not None else None
                result.strength = round(applied_strength(options.strength, guard), 4)
                emit(BatchEvent("detected", path, index, total, output=output, detection=detection, guard=guard))

                def on_progress(event: ProgressEvent, _index=index, _path=path, _output=output) -> None:
                    finish_write(block=False)
                    if event.stage == "restore":
                        emit(BatchEvent("progress", _path, _index, total, output=_output,
                                        done=event.done, todo=event.total))

                pixels = restorer.restore_prepared(loaded.pixels, prepared, options, on_progress, cancel)
                if cancel is not None:  # cancelled during the last tile: write nothing
                    cancel.raise_if_cancelled()
                finish_write(block=True)
                writing.append((writer.submit(write, pixels, loaded, output, key, path, result), result, index,
                                start, detection, guard))
                del pixels, loaded
            except Cancelled:
                result.status, result.error = "cancelled", "cancelled by the user"
                result.seconds = round(time.perf_counter() - start, 3)
                emit(BatchEvent("cancelled", path, index, total, seconds=result.seconds))
            except Exception as exc:  # one bad file must not stop the batch
                result.status, result.error = "failed", file_error(exc, path)
                result.seconds = round(time.perf_counter() - start, 3)
                emit(BatchEvent("failed", path, index, total, seconds=result.seconds, error=result.error))
        finish_write(block=True)
    return results


def summarize(results: Iterable[FileResult]) -> dict[str, int]:
    """Counts per status: ``{"done": n, "skipped": n, "failed": n, "cancelled": n}``."""
    counts = {"done": 0, "skipped": 0, "failed": 0, "cancelled": 0}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


# --------------------------------------------------------------------------- the job

REPORT_VERSION = 1


class NoBundledModel(JobError):
    """The job asks for the bundled model and none is bundled (the CLI says so and restores nothing)."""


def check_model(model_dir: Path | None) -> None:
    """Raise :class:`JobError` unless ``model_dir`` (``None``: the bundled one) is a model bundle."""
    from engine.bundle import bundled_model_dir, describe_layout, is_model_bundle

    if model_dir is None and not is_model_bundle(bundled_model_dir()):
        raise NoBundledModel(f"no model is bundled yet ({bundled_model_dir()} is empty)")
    if model_dir is not None and not is_model_bundle(model_dir):
        raise JobError(f"{model_dir}: not a model bundle (needs {describe_layout()})")


def load_restorer(model_dir: Path | None, device: str) -> Restorer:
    """The one place a job opens its model: today the runtime's :class:`~engine.inference.runtime.Restorer` over a
    model folder (``None``: the bundled one). Errors are :class:`JobError` in one line."""
    from engine.inference.runtime import ModelNotFoundError, Restorer
    from engine.models.serialization import ModelFileError

    try:
        return Restorer(model_dir, device=device)
    except (ModelFileError, ModelNotFoundError) as exc:
        raise JobError(str(exc)) from None
    except (ValueError, RuntimeError) as exc:  # e.g. a forced device that is not there
        raise JobError(str(exc).splitlines()[0]) from None


def check_writable(folder: Path) -> None:
    """Fail fast, in one line, when the output folder cannot be created or written (read-only disk)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic.new_part_file(folder / ".photomend-probe").unlink()
    except OSError as exc:
        raise JobError(f"{folder}: cannot write to the output folder ({exc.strerror or exc})") from None


class BatchJob:
    """One restore job: its inputs, its :class:`~engine.jobs.events.BatchSettings` and the model that restores it.

    ``inputs``: ``(file, root)`` pairs (:func:`collect_inputs`); :meth:`from_paths` collects them from
    files and folders when the job is validated. The model: ``restorer`` when one is loaded already (the
    desktop keeps its own), else ``model_dir`` (``None``: the bundled model) opened on ``device`` by
    :func:`load_restorer` (:meth:`open_model`). ``analyses``: photos analysed beforehand, not detected again.
    """

    def __init__(self, inputs, settings: BatchSettings, restorer: Restorer | None = None, *,
                 model_dir: Path | None = None, device: str = "auto", analyses: AnalysisCache | None = None):
        self.inputs: list[tuple[Path, Path]] = [(Path(p), Path(r)) for p, r in inputs]
        self.settings, self.restorer, self.analyses = settings, restorer, analyses
        self.model_dir, self.device = (Path(model_dir) if model_dir is not None else None), device
        self._sources: list[Path] | None = None
        self._recursive = False

    @classmethod
    def from_paths(cls, paths, settings: BatchSettings, recursive: bool = False, **model) -> BatchJob:
        """A job over the images in ``paths`` (files and folders, subfolders if ``recursive``), found
        by :meth:`validate`; ``model``: ``restorer`` or ``model_dir`` and ``device``, as the constructor."""
        job = cls([], settings, **model)
        job._sources, job._recursive = [Path(p) for p in paths], recursive
        return job

    def validate(self) -> None:
        """Every check made before the job starts, in this order: the settings' ranges, the model bundle
        (unless a restorer is given), the inputs (they exist, some images among them), the output folder
        (created, writable) and no output over its input. Raises :class:`~engine.jobs.api.SettingError` for a
        setting, :class:`NoBundledModel` or :class:`~engine.jobs.api.JobError` otherwise (each one line)."""
        settings = self.settings
        settings.validate()
        if self.restorer is None:
            check_model(self.model_dir)
        output_dir = Path(settings.output_dir)
        if self._sources is not None:
            try:
                self.inputs = collect_inputs(self._sources, recursive=self._recursive, exclude=output_dir)
            except FileNotFoundError as exc:
                raise JobError(str(exc)) from None
            if not self.inputs:
                if any(p.is_dir() and p.resolve() == output_dir.resolve() for p in self._sources):
                    raise JobError(f"{output_dir}: the output folder is the input folder, whose contents "
                                   "are never restored again; choose another -o")
                raise JobError("no images found in the given inputs (use --recursive for subfolders)")
        if not self.inputs:
            raise JobError("no images to restore")
        check_writable(output_dir)
        for path, root in self.inputs:
            if plan_output(path, root, settings).resolve() == path.resolve():
                raise JobError(f"{path}: the output would overwrite the input; use --suffix or another -o")

    def open_model(self) -> Restorer:
        """The job's restorer, loaded by :func:`load_restorer` on first use."""
        if self.restorer is None:
            self.restorer = load_restorer(self.model_dir, self.device)
        return self.restorer

    def run(self, on_event: Callable[[BatchEvent], None] | None = None,
            cancel: CancelToken | None = None) -> list[FileResult]:
        """Restore the inputs (:func:`run_batch`); one :class:`~engine.jobs.events.FileResult` per input."""
        return run_batch(self.inputs, self.settings, self.open_model(), on_event, cancel, analyses=self.analyses)

    def report(self, results: list[FileResult], seconds: float) -> dict:
        """The JSON report: ``version``, ``model`` (name, path, device), ``settings`` (:func:`settings_record`),
        ``summary`` counts, ``seconds`` and ``files`` (one :class:`~engine.jobs.events.FileResult` each: path,
        status, output, degradations, scores, settings, seconds, error, guard (the guard's ``estimate``,
        ``strength`` and ``name``, or null) and the applied ``strength``)."""
        restorer = self.open_model()
        info = restorer.model_info
        return {
            "version": REPORT_VERSION,
            "model": {"name": info.name, "path": str(info.path) if info.path else None,
                      "device": str(restorer.device)},
            "settings": settings_record(self.settings, restorer),
            "summary": summarize(results),
            "seconds": round(seconds, 3),
            "files": [r.to_json() for r in results],
        }
