"""Evaluation of a degradation detector on labelled images: exact-set accuracy, per-type F1, confusion.

Used by ``photomend detect --eval CLEAN_DIR`` (which synthesises the held-out set) and by tests.
The engine never prints: :func:`evaluate` reports progress through a callback and returns a
:class:`DetectionReport` that renders itself as Markdown.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np

from engine.jobs.api import ProgressEvent
from engine.vocab import NONE, PHYSICAL_ORDER, physical_sort


@dataclasses.dataclass
class DetectionReport:
    """Predictions against truths; every figure is derived from ``pairs``."""

    vocabulary: tuple[str, ...]
    pairs: list[tuple[frozenset[str], frozenset[str]]] = dataclasses.field(default_factory=list)

    def add(self, truth, predicted) -> None:
        self.pairs.append((frozenset(truth), frozenset(predicted)))

    @property
    def n(self) -> int:
        return len(self.pairs)

    @property
    def exact_accuracy(self) -> float:
        return sum(t == p for t, p in self.pairs) / max(1, self.n)

    def per_type(self) -> dict[str, dict[str, float]]:
        """``{name: {"precision", "recall", "f1", "support"}}`` (multi-label, per image)."""
        out = {}
        for name in self.vocabulary:
            tp = sum(name in t and name in p for t, p in self.pairs)
            fp = sum(name not in t and name in p for t, p in self.pairs)
            fn = sum(name in t and name not in p for t, p in self.pairs)
            prec = tp / (tp + fp) if tp + fp else 0.0
            rec = tp / (tp + fn) if tp + fn else 0.0
            f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
            out[name] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn}
        return out

    @property
    def mean_f1(self) -> float:
        rows = [r["f1"] for r in self.per_type().values() if r["support"] > 0]
        return float(np.mean(rows)) if rows else 0.0

    def confusion(self) -> tuple[list[str], np.ndarray]:
        """Type confusion: row = a true type (``none`` = clean image), column = a predicted type
        (``none`` = nothing detected); a cell counts the images with that true and predicted type."""
        labels = [n for n in PHYSICAL_ORDER if n in self.vocabulary] + [NONE]
        index = {n: i for i, n in enumerate(labels)}
        mat = np.zeros((len(labels), len(labels)), dtype=np.int64)
        for t, p in self.pairs:
            for tn in (t or {NONE}):
                for pn in (p or {NONE}):
                    mat[index[tn], index[pn]] += 1
        return labels, mat

    def per_combination(self) -> list[tuple[tuple[str, ...], int, float, str]]:
        """``(true set, count, exact accuracy, most common wrong prediction)`` per true set."""
        groups: dict[frozenset, list[frozenset]] = {}
        for t, p in self.pairs:
            groups.setdefault(t, []).append(p)
        rows = []
        for t, preds in groups.items():
            acc = sum(p == t for p in preds) / len(preds)
            wrong = Counter(p for p in preds if p != t)
            worst = "+".join(physical_sort(wrong.most_common(1)[0][0])) or NONE if wrong else ""
            rows.append((physical_sort(t), len(preds), acc, worst))
        rows.sort(key=lambda r: (len(r[0]), [PHYSICAL_ORDER.index(n) for n in r[0]]))
        return rows

    def to_markdown(self) -> str:
        lines = [f"Images: {self.n}. Exact-set accuracy: **{self.exact_accuracy:.1%}**. "
                 f"Mean per-type F1: **{self.mean_f1:.1%}**.", "",
                 "| type | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for name, r in self.per_type().items():
            lines.append(f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |")
        labels, mat = self.confusion()
        short = [n[:6] for n in labels]
        lines += ["", "Type confusion (rows: true type, `none` = clean; columns: detected type, "
                  "`none` = nothing detected; multi-label images count once per true/detected pair):", "",
                  "| true \\ detected | " + " | ".join(short) + " |", "|---" * (len(labels) + 1) + "|"]
        for i, name in enumerate(labels):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in mat[i]) + " |")
        lines += ["", "| true set | n | exact | most common error |", "|---|---|---|---|"]
        for names, n, acc, worst in self.per_combination():
            lines.append(f"| {'+'.join(names) or 'clean'} | {n} | {acc:.2f} | {worst} |")
        return "\n".join(lines) + "\n"


def evaluate(detect: Callable[[np.ndarray], Iterable[str]], samples: Iterable[tuple[np.ndarray, Iterable[str]]],
             vocabulary: tuple[str, ...], total: int | None = None,
             progress: Callable[[ProgressEvent], None] | None = None) -> DetectionReport:
    """Run ``detect(image) -> names`` over ``(image, true names)`` samples and collect a report."""
    report = DetectionReport(vocabulary=tuple(vocabulary))
    for i, (image, truth) in enumerate(samples):
        report.add([n for n in truth if n != NONE], [n for n in detect(image) if n != NONE])
        if progress is not None:
            progress(ProgressEvent("eval", i + 1, total or 0))
    return report


def calibrate_thresholds(scores: list[dict[str, float]], truths: list[Iterable[str]],
                         vocabulary: tuple[str, ...], grid: Iterable[float] | None = None,
                         beta: float = 1.0) -> dict[str, float]:
    """Per-name detection thresholds that maximise each name's F-beta (F1 by default) on labelled scores.

    ``scores``: one ``{name: score}`` per image (a detection's ``scores``); ``truths``: its true names.
    Each name gets the grid value with the best F-beta; ties go to the higher threshold (fewer false
    alarms), so a name the detector cannot find at all gets the grid's highest value. The cap of two
    names per photo is not modelled. ``beta`` < 1 favours precision: fewer false alarms, which
    matter more to the restorer (a wrong condition changes a photo; a missed one leaves it as is).
    """
    values = np.asarray(sorted(grid if grid is not None else np.round(np.arange(0.20, 0.96, 0.01), 2)))
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not values.size or not ((values > 0) & (values < 1)).all():
        raise ValueError("the threshold grid must hold values between 0 and 1 (exclusive)")
    if len(scores) != len(truths) or not len(scores):
        raise ValueError("calibration needs one truth per score record, and at least one record")
    truth_sets = [frozenset(t) for t in truths]
    out = {}
    for name in vocabulary:
        s = np.array([float(rec.get(name, 0.0)) for rec in scores])
        y = np.array([name in t for t in truth_sets])
        pred = s[None, :] >= values[:, None]  # [T, N]
        tp = (pred & y).sum(1)
        b2 = beta * beta
        f = (1 + b2) * tp / np.maximum(1, b2 * y.sum() + pred.sum(1))
        best = np.flatnonzero(f == f.max())[-1]
        out[name] = float(values[best])
    return out
