"""The do-no-harm guard: per photo, how likely restoring helps, and the strength that follows.

A restorer told that a photo is hazy dehazes it, whether or not it is hazy; on a photo that needs
nothing, every false detection costs PSNR. So before restoring, the guard turns the detector's
confidence into an estimate of whether restoring will help and lowers the strength toward the
input where help is unlikely.

The rule (no learning, only the detector's own figures):

* Each detected name's score ``p`` (for detector v2 the presence head's sigmoid probability) is
  put on a common scale against that name's detection threshold ``t`` (0.5 unless calibrated):
  ``confidence = 0.5 * p / t`` below the threshold and ``0.5 + 0.5 * (p - t) / (1 - t)`` above,
  so 0.5 is "just detected" and 1 is "certain" for every name, whatever its calibration.
* The photo's **estimate** is the largest confidence among the detected names (0 when nothing is
  detected): the restoration helps if the best-supported degradation is really there.
* The guard's **strength** rises linearly from 0 at ``keep_below`` to 1 at ``full_above``
  (:class:`GuardConfig`). No confident detection means strength 0: the input is kept as it is; a
  confident one means full strength: a correct detection loses nothing.
* The user's strength (``RestoreOptions.strength``) stays a cap: the applied strength is the
  smaller of the two (:func:`applied_strength`).

A name the user forces (``RestoreOptions.degradations``) is not guarded: the user said what to
restore. The guard needs no torch, so the desktop may import this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class GuardConfig:
    """Where the guard's strength ramp starts (``keep_below``: input kept) and ends (``full_above``:
    full restoration), on the confidence scale of the module docstring (0.5 = at the threshold)."""

    keep_below: float = 0.5
    full_above: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 <= self.keep_below < self.full_above <= 1.0:
            raise ValueError(f"guard: need 0 <= keep_below < full_above <= 1, got {self.keep_below}, "
                             f"{self.full_above}")


@dataclass(frozen=True)
class GuardDecision:
    """What the guard decided for one photo.

    ``estimate``: how likely restoring helps, 0-1 (the most confident detected name).
    ``strength``: the guard's strength, 0-1, before the user's cap.
    ``name``: the detected name the estimate comes from (``None`` when nothing is detected).
    """

    estimate: float
    strength: float
    name: str | None = None

    @property
    def keeps_input(self) -> bool:
        return self.strength <= 0.0

    def describe(self) -> str:
        """One short line for logs, progress messages and the GUI row."""
        if self.name is None:
            return "guard: nothing detected, kept as is"
        what = f"{self.name} {self.estimate:.2f}"
        if self.keeps_input:
            return f"guard: help unlikely ({what}), kept as is"
        return f"guard: {what}, strength {self.strength:.2f}"

    def to_json(self) -> dict:
        return {"estimate": round(self.estimate, 4), "strength": round(self.strength, 4), "name": self.name}


def confidence(score: float, threshold: float = DEFAULT_THRESHOLD) -> float:
    """``score`` on the common scale: 0.5 at ``threshold``, 0 and 1 at the ends (piecewise linear)."""
    t = min(max(float(threshold), 1e-6), 1.0 - 1e-6)
    p = min(max(float(score), 0.0), 1.0)
    return 0.5 * p / t if p < t else 0.5 + 0.5 * (p - t) / (1.0 - t)


def decide(degradations: tuple[str, ...], scores: Mapping[str, float],
           thresholds: Mapping[str, float] | None = None, config: GuardConfig | None = None) -> GuardDecision:
    """The guard's decision for a photo whose detection is ``degradations`` with ``scores``.

    ``thresholds``: the detector's per-name thresholds (missing names: 0.5). A detected name without
    a score counts as certain (it did not come from the detector's figures).
    """
    config = config or GuardConfig()
    thresholds = thresholds or {}
    best, best_name = 0.0, None
    for name in degradations:
        c = confidence(scores[name], thresholds.get(name, DEFAULT_THRESHOLD)) if name in scores else 1.0
        if best_name is None or c > best:
            best, best_name = c, name
    ramp = (best - config.keep_below) / (config.full_above - config.keep_below)
    return GuardDecision(estimate=best, strength=min(1.0, max(0.0, ramp)), name=best_name)


def applied_strength(user_strength: float, decision: GuardDecision | None) -> float:
    """The strength a photo is restored at: the user's, capped by the guard's when there is one."""
    return float(user_strength) if decision is None else min(float(user_strength), decision.strength)
