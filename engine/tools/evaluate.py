"""Evaluate a restorer on a folder written by ``photomend synth`` (lq/, hq/, labels.jsonl).

Per pair: PSNR and SSIM of the degraded input and of the restoration against the clean image,
and the restoration's seconds per megapixel. Per combination of degradations: the means and the
gain. Conditioning comes from the detector's full-photo analysis (:meth:`Detector.analyze`), the
same path the runtime uses. An unconditioned ablation model is evaluated on the same pairs.
With a :class:`~engine.inference.guard.GuardConfig`, each pair is also scored after the do-no-harm guard
(the runtime's default): the same restoration mixed with the input at the guard's strength, so
the report shows the figures with and without the guard on the same pairs from one restoration.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.inference.guard import GuardConfig, decide
from engine.io.reader import ImageReadError, read_rgb
from engine.jobs.api import CancelToken, ProgressEvent
from engine.tools.metrics import psnr, psnr_from_mse, ssim
from engine.vocab import SEED24


class EvalDataError(ValueError):
    """A synthetic dataset folder that is missing or malformed (one line naming the file)."""


@dataclass(frozen=True)
class Pair:
    lq: Path
    hq: Path
    degradations: tuple[str, ...]

    @property
    def combination(self) -> str:
        return "+".join(self.degradations) or "clean"


@dataclass(frozen=True)
class PairResult:
    """Figures for one pair under one model and step count (``*_guarded`` and ``guard_strength``:
    after the guard, when it was evaluated)."""

    file: str
    combination: str
    steps: int
    psnr_in: float
    psnr_out: float
    ssim_in: float
    ssim_out: float
    seconds: float
    megapixels: float
    psnr_guarded: float | None = None
    ssim_guarded: float | None = None
    guard_estimate: float | None = None
    guard_strength: float | None = None
    # the mix of the restoration with the input at any strength s, without the images:
    # MSE(s) = mse_in + 2 s cross + s^2 mse_change (d = restored - lq, e = lq - hq; per-value means)
    mse_in: float | None = None      # mean(e^2)
    cross: float | None = None       # mean(e * d)
    mse_change: float | None = None  # mean(d^2)

    def psnr_at(self, strength: float) -> float:
        """PSNR of the input mixed with the restoration at ``strength`` (0: the input, 1: the restoration)."""
        if self.mse_in is None:
            raise ValueError(f"{self.file}: evaluated without the mixing terms")
        s = float(strength)
        mse = max(self.mse_in + 2.0 * s * self.cross + s * s * self.mse_change, 0.0)
        # relative to the measured input PSNR, so that strength 0 gives it exactly (the terms are float32 means)
        return self.psnr_in + (psnr_from_mse(mse) - psnr_from_mse(self.mse_in))

    @property
    def best_strength(self) -> float | None:
        """The strength in [0, 1] that brings this restoration closest to the original: what a perfect
        per-photo guard would choose, knowing the original (the bound on any guard's figures)."""
        if self.mse_in is None:
            return None
        return 0.0 if self.mse_change <= 0 else min(1.0, max(0.0, -self.cross / self.mse_change))

    def guarded(self) -> PairResult:
        """This result as the guard leaves it: the guarded figures become the restored ones."""
        if self.psnr_guarded is None:
            raise ValueError(f"{self.file}: evaluated without the guard")
        return dataclasses.replace(self, psnr_out=self.psnr_guarded, ssim_out=self.ssim_guarded,
                                   psnr_guarded=None, ssim_guarded=None)


def load_pairs(synth_dir: Path) -> list[Pair]:
    """Read ``synth_dir/labels.jsonl`` (one ``{"file", "hq", "degradations"}`` object per line)."""
    labels = Path(synth_dir) / "labels.jsonl"
    try:
        lines = labels.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalDataError(f"{labels}: not found (make the set with `photomend synth`)") from None
    pairs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            pairs.append(Pair(labels.parent / rec["file"], labels.parent / rec["hq"], tuple(rec["degradations"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise EvalDataError(f"{labels}:{n}: malformed record ({exc})") from None
    if not pairs:
        raise EvalDataError(f"{labels}: no pairs")
    return pairs


def spread_subset(pairs: list[Pair], limit: int | None) -> list[Pair]:
    """At most ``limit`` pairs, round-robin over combinations (and rotating photos) so all are covered."""
    if limit is None or limit >= len(pairs):
        return list(pairs)
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(p.combination, []).append(p)
    keys = sorted(groups)
    out: list[Pair] = []
    r = 0
    while len(out) < limit:
        for j, k in enumerate(keys):
            g = groups[k]
            if r < len(g) and len(out) < limit:
                out.append(g[(r + j) % len(g)])
        r += 1
    return out


def _tensor(image: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]


def evaluate(model, pairs: list[Pair], steps: int = 1, detector=None, seed: int = 0,
             progress: Callable[[ProgressEvent], None] | None = None,
             cancel: CancelToken | None = None, keep_clean: bool = False,
             guard: GuardConfig | None = None, true_names: bool = False) -> list[PairResult]:
    """Restore every pair's LQ image with ``model`` (a :class:`~engine.inference.restoration.RestorationModel`).

    ``detector`` (a :class:`~engine.inference.detect.Detector`) is required for a conditioned model. Times count
    the restoration only (detection is the runtime's per-photo overhead, measured separately there).
    ``keep_clean``: as the runtime's option, an image in which the detector sees nothing is kept as
    it is (needs ``detector``). ``guard``: also score each pair after the guard (needs ``detector``;
    its per-name ``thresholds`` are used when it has them). ``true_names``: condition each pair on its
    true degradations (:meth:`~engine.inference.detect.Detector.condition_for`, a user's override: at
    most two names; a pair with more keeps the detector's condition) instead of the detected ones: the
    restorer's figures without the detector's errors. It excludes ``keep_clean`` and the guard, which
    read the detection (a user's forced names are not guarded).
    """
    import torch

    if (model.conditioned or keep_clean or guard is not None) and detector is None:
        raise ValueError("a conditioned restorer (and keep_clean, and the guard) needs a detector")
    if true_names and (keep_clean or guard is not None):
        raise ValueError("true names replace the detection: they exclude keep_clean and the guard")
    thresholds = dict(getattr(detector, "thresholds", None) or {})
    results = []
    for i, pair in enumerate(pairs):
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            lq, hq = read_rgb(pair.lq), read_rgb(pair.hq)
        except ImageReadError as exc:
            raise EvalDataError(str(exc)) from None
        if lq.shape != hq.shape:
            raise EvalDataError(f"{pair.lq}: size {lq.shape[:2]} differs from {pair.hq} {hq.shape[:2]}")
        analysis = detector.analyze(lq) if detector is not None else None
        cond = None
        if model.conditioned:
            forced = true_names and len(pair.degradations) <= 2
            cond = (detector.condition_for(lq, pair.degradations) if forced else analysis.condition)[None]
        gen = torch.Generator().manual_seed(seed + i)
        t0 = time.perf_counter()
        if keep_clean and not analysis.detection.degradations:
            restored = lq
        else:
            restored = model.predict(_tensor(lq), cond, steps=steps, generator=gen)[0].permute(1, 2, 0).numpy()
        seconds = time.perf_counter() - t0
        e, d = lq - hq, restored - lq
        mixing = {"mse_in": float(np.mean(e * e)), "cross": float(np.mean(e * d)), "mse_change": float(np.mean(d * d))}
        guarded = {}
        if guard is not None:
            decision = decide(analysis.detection.degradations, analysis.detection.scores, thresholds, guard)
            mixed = np.clip(lq + np.float32(decision.strength) * (restored - lq), 0.0, 1.0)
            guarded = {"psnr_guarded": psnr(mixed, hq), "ssim_guarded": ssim(mixed, hq),
                       "guard_estimate": decision.estimate, "guard_strength": decision.strength}
        results.append(PairResult(
            file=pair.lq.name, combination=pair.combination, steps=steps,
            psnr_in=psnr(lq, hq), psnr_out=psnr(restored, hq), ssim_in=ssim(lq, hq), ssim_out=ssim(restored, hq),
            seconds=seconds, megapixels=lq.shape[0] * lq.shape[1] / 1e6, **guarded, **mixing,
        ))
        if progress is not None:
            progress(ProgressEvent("eval", i + 1, len(pairs), pair.lq.name))
    return results


@dataclass(frozen=True)
class Summary:
    """Means over a group of pairs."""

    combination: str
    n: int
    psnr_in: float
    psnr_out: float
    ssim_in: float
    ssim_out: float
    seconds_per_mp: float
    psnr_guarded: float | None = None
    guard_strength: float | None = None  # mean

    @property
    def gain(self) -> float:
        return self.psnr_out - self.psnr_in

    @property
    def guarded_gain(self) -> float | None:
        return None if self.psnr_guarded is None else self.psnr_guarded - self.psnr_in


def summarize(results: list[PairResult]) -> list[Summary]:
    """One :class:`Summary` per combination (sorted), then ``all`` over every pair."""
    groups: dict[str, list[PairResult]] = {}
    for r in results:
        groups.setdefault(r.combination, []).append(r)

    def mean(rs: list[PairResult], name: str, label: str) -> Summary:
        guarded = all(r.psnr_guarded is not None for r in rs)
        return Summary(label, len(rs), *(float(np.mean([getattr(r, k) for r in rs]))
                                         for k in ("psnr_in", "psnr_out", "ssim_in", "ssim_out")),
                       float(sum(r.seconds for r in rs) / max(1e-9, sum(r.megapixels for r in rs))),
                       float(np.mean([r.psnr_guarded for r in rs])) if guarded else None,
                       float(np.mean([r.guard_strength for r in rs])) if guarded else None)

    out = [mean(groups[k], k, k) for k in sorted(groups)]
    out.append(mean(results, "all", "all"))
    return out


GROUPS = ("seed pairs", "singles", "clean", "other")
_SEED_SETS = frozenset(frozenset(p) for p in SEED24)


def group_of(combination: str) -> str:
    """The issue's groups: one of the 24 seed pairs, a single degradation, clean, or any other set."""
    names = frozenset(n for n in combination.split("+") if n and n != "clean")
    if not names:
        return "clean"
    if len(names) == 1:
        return "singles"
    return "seed pairs" if names in _SEED_SETS else "other"


@dataclass(frozen=True)
class GroupFigures:
    """One group's figures: the mean gain over its images, how many of its combinations lose on
    average and how many of its images lose, with the guard's (``None`` when not evaluated) beside
    them, and the mean PSNR out (what the clean group's target reads)."""

    group: str
    images: int
    combinations: int
    gain: float
    psnr_out: float
    combinations_below: int
    images_below: int
    guarded_gain: float | None = None
    guarded_psnr_out: float | None = None
    guarded_combinations_below: int | None = None
    guarded_images_below: int | None = None


def group_figures(results: list[PairResult]) -> list[GroupFigures]:
    """Per group of :data:`GROUPS` present in ``results`` (in that order), the figures the issue's
    targets read. An image or a combination is below its input when its gain is negative; a clean
    image never gains, so the clean group reads its PSNR out."""
    out = []
    for group in GROUPS:
        rs = [r for r in results if group_of(r.combination) == group]
        if not rs:
            continue
        combos = summarize(rs)[:-1]
        guarded = all(r.psnr_guarded is not None for r in rs)
        g = {}
        if guarded:
            g = dict(guarded_gain=float(np.mean([r.psnr_guarded - r.psnr_in for r in rs])),
                     guarded_psnr_out=float(np.mean([r.psnr_guarded for r in rs])),
                     guarded_combinations_below=sum(s.guarded_gain < 0 for s in combos),
                     guarded_images_below=sum(r.psnr_guarded < r.psnr_in for r in rs))
        out.append(GroupFigures(group, len(rs), len(combos), float(np.mean([r.psnr_out - r.psnr_in for r in rs])),
                                float(np.mean([r.psnr_out for r in rs])), sum(s.gain < 0 for s in combos),
                                sum(r.psnr_out < r.psnr_in for r in rs), **g))
    return out


def markdown_groups(results: list[PairResult]) -> list[str]:
    """The group figures as Markdown lines (a table), for :func:`markdown_report`."""
    figures = group_figures(results)
    guarded = bool(figures) and figures[0].guarded_gain is not None
    head = "| group | images | mean gain | PSNR out | combinations below input | images below input |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if guarded:
        head += " guarded: mean gain | PSNR out | combinations below | images below |"
        rule += "---:|---:|---:|---:|"
    lines = [head, rule]
    for f in figures:
        clean = f.group == "clean"  # its input is the original itself: no gain to read, only PSNR out
        row = (f"| {f.group} | {f.images} | {'-' if clean else f'{f.gain:+.2f}'} | {f.psnr_out:.2f} | "
               f"{f.combinations_below} of {f.combinations} | {f.images_below} of {f.images} |")
        if guarded:
            row += (f" {'-' if clean else f'{f.guarded_gain:+.2f}'} | {f.guarded_psnr_out:.2f} | "
                    f"{f.guarded_combinations_below} of "
                    f"{f.combinations} | {f.guarded_images_below} of {f.images} |")
        lines.append(row)
    return lines


def markdown_report(main: list[PairResult], ablation: list[PairResult] | None = None,
                    title: str = "Restoration on a synthetic set") -> str:
    """A Markdown table per combination: input, restoration, gain (and the ablation beside it; and
    the guarded figures when ``main`` was evaluated with the guard)."""
    ms = summarize(main)
    ab = {s.combination: s for s in summarize(ablation)} if ablation else {}
    guarded = ms[-1].psnr_guarded is not None
    steps = sorted({r.steps for r in main})
    lines = [f"### {title} (steps={','.join(map(str, steps))}, {ms[-1].n} pairs)", ""]
    head = "| combination | n | input PSNR | restored PSNR | gain | input SSIM | restored SSIM |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if guarded:
        head += " guarded PSNR | guarded gain | guard strength |"
        rule += "---:|---:|---:|"
    if ab:
        head += " ablation PSNR | ablation gain | ablation SSIM | conditioning buys |"
        rule += "---:|---:|---:|---:|"
    lines += [head, rule]
    for s in ms:
        name = "**all (mean)**" if s.combination == "all" else s.combination
        row = (f"| {name} | {s.n} | {s.psnr_in:.2f} | {s.psnr_out:.2f} | {s.gain:+.2f} | "
               f"{s.ssim_in:.3f} | {s.ssim_out:.3f} |")
        if guarded:
            row += f" {s.psnr_guarded:.2f} | {s.guarded_gain:+.2f} | {s.guard_strength:.2f} |"
        if ab:
            a = ab[s.combination]
            row += f" {a.psnr_out:.2f} | {a.gain:+.2f} | {a.ssim_out:.3f} | {s.psnr_out - a.psnr_out:+.2f} dB |"
        lines.append(row)
    worse = [s.combination for s in ms[:-1] if s.gain < 0]
    lines += ["", f"Seconds per megapixel (restoration only): {ms[-1].seconds_per_mp:.2f}"
              + (f"; ablation {ab['all'].seconds_per_mp:.2f}" if ab else "") + ".",
              f"Combinations worse than their input on average: {', '.join(worse) if worse else 'none'}."]
    if guarded:
        worse = [s.combination for s in ms[:-1] if s.guarded_gain < 0]
        lines.append(f"With the guard, worse than their input: {', '.join(worse) if worse else 'none'}.")
    lines += ["", "By group (the 24 seed pairs, single degradations, clean photos):", ""] + markdown_groups(main)
    bound = best_strength_figures(main)
    if bound:
        lines += ["", "The bound on any guard (each photo at the strength that brings it closest to its original, "
                  "chosen knowing the original): " + "; ".join(
                      f"{f.group} {f.guarded_psnr_out:.2f} dB out" if f.group == "clean" else
                      f"{f.group} {f.guarded_gain:+.2f} dB ({f.guarded_combinations_below} of {f.combinations} "
                      "combinations below input)" for f in bound) + "."]
    return "\n".join(lines) + "\n"


def best_strength_figures(results: list[PairResult]) -> list[GroupFigures]:
    """:func:`group_figures` with every pair at its :attr:`PairResult.best_strength` in the guarded
    columns (empty when the results lack the mixing terms)."""
    if not results or any(r.mse_in is None for r in results):
        return []
    return group_figures([dataclasses.replace(r, psnr_guarded=r.psnr_at(r.best_strength), ssim_guarded=None,
                                              guard_strength=r.best_strength) for r in results])


def write_csv(path: Path, results: dict[str, list[PairResult]]) -> None:
    """Per-combination summary rows for each named model (``model, steps, combination, n, ...``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "steps", "combination", "n", "psnr_in", "psnr_out", "gain_db", "ssim_in", "ssim_out",
                    "seconds_per_mp", "psnr_guarded", "guarded_gain_db", "guard_strength"])
        for name, rs in results.items():
            for steps in sorted({r.steps for r in rs}):
                for s in summarize([r for r in rs if r.steps == steps]):
                    guard = (["", "", ""] if s.psnr_guarded is None else
                             [f"{s.psnr_guarded:.4f}", f"{s.guarded_gain:.4f}", f"{s.guard_strength:.4f}"])
                    w.writerow([name, steps, s.combination, s.n, f"{s.psnr_in:.4f}", f"{s.psnr_out:.4f}",
                                f"{s.gain:.4f}", f"{s.ssim_in:.4f}", f"{s.ssim_out:.4f}", f"{s.seconds_per_mp:.4f}",
                                *guard])


IMAGE_COLUMNS = ("model", "steps", "file", "combination", "psnr_in", "psnr_out", "ssim_in", "ssim_out",
                 "psnr_guarded", "guard_estimate", "guard_strength", "mse_in", "cross", "mse_change")


def write_images_csv(path: Path, results: dict[str, list[PairResult]]) -> None:
    """One row per pair and named model: its figures and the mixing terms (:meth:`PairResult.psnr_at`),
    to study a guard without the images (:func:`read_images_csv`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(IMAGE_COLUMNS)
        for name, rs in results.items():
            for r in rs:
                values = [name if c == "model" else getattr(r, c) for c in IMAGE_COLUMNS]
                w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in values])


def read_images_csv(path: Path, model: str = "model") -> list[PairResult]:
    """The rows of ``model`` in a file of :func:`write_images_csv` as :class:`PairResult` (no timing)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise EvalDataError(f"{path}: not found (write it with `photomend eval --out PREFIX`)") from None
    optional = ("psnr_guarded", "guard_estimate", "guard_strength", "mse_in", "cross", "mse_change")
    out = []
    for n, row in enumerate(rows, 2):  # line numbers after the header
        try:
            if row["model"] != model:
                continue
            out.append(PairResult(
                file=row["file"], combination=row["combination"], steps=int(row["steps"]),
                **{k: float(row[k]) for k in ("psnr_in", "psnr_out", "ssim_in", "ssim_out")},
                seconds=0.0, megapixels=0.0,
                **{k: None if row[k] == "" else float(row[k]) for k in optional}))
        except (KeyError, TypeError, ValueError) as exc:
            raise EvalDataError(f"{path}:{n}: malformed row ({exc})") from None
    return out
