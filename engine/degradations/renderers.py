"""Renderers registered by name, and the mixed registry every trainer draws from.

A *renderer* maps each degradation name to a function with the project's signature
``fn(image, rng, **overrides) -> (out, params)``:

* ``project``: the project's own library (:data:`engine.degradations.DEGRADATIONS_FUNCS`);
* ``albumentations``: :mod:`engine.degradations.albu`;
* ``heldout``: :mod:`engine.degradations.heldout`, never used for training.

:func:`registry` builds what :func:`engine.degradations.apply_degradations` takes: for a list of
renderers, each degradation is drawn by one of them chosen uniformly with the same ``rng`` (so one
seed still gives one image) and the choice is recorded in the params as ``"renderer"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.degradations.compose import Degradation
from engine.vocab import DEGRADATIONS

RENDERER_NAMES = ("project", "albumentations", "heldout")
TRAIN_RENDERERS: tuple[str, ...] = ("project", "albumentations")
# what `photomend synth --renderer` accepts: a renderer, or "train" for the trainers' mix
RENDERER_CHOICES = RENDERER_NAMES + ("train",)


def renderer(name: str) -> dict[str, Degradation]:
    """The degradation functions of one renderer."""
    if name == "project":
        from engine.degradations import DEGRADATIONS_FUNCS

        return DEGRADATIONS_FUNCS
    if name == "albumentations":
        from engine.degradations.albu import RENDERER

        return RENDERER
    if name == "heldout":
        from engine.degradations.heldout import RENDERER

        return RENDERER
    raise ValueError(f"unknown renderer {name!r}; choose one of {', '.join(RENDERER_CHOICES)}")


def _chooser(name: str, funcs: Sequence[Degradation], labels: Sequence[str]) -> Degradation:
    def render(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
        k = int(rng.integers(len(funcs)))
        out, params = funcs[k](image, rng, **overrides)
        return out, {"renderer": labels[k], **params}

    render.__name__ = f"mixed_{name}"
    return render


def registry(names: str | Sequence[str] = TRAIN_RENDERERS) -> dict[str, Degradation]:
    """A registry drawing each degradation from one of ``names`` (``"train"``: the trainers' mix)."""
    if isinstance(names, str):
        names = TRAIN_RENDERERS if names == "train" else (names,)
    tables = [renderer(n) for n in names]
    if len(tables) == 1:
        only = tables[0]
        return {d: _chooser(d, [only[d]], list(names)) for d in DEGRADATIONS}
    return {d: _chooser(d, [t[d] for t in tables], list(names)) for d in DEGRADATIONS}
