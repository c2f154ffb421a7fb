"""Held-out figures logged while the detector trains: exact-set accuracy and F1 on fixed regions.

Two fixed sets of regions are cut from held-out photos (preset ``all``: the 24 seed pairs, the 11
singles and clean photos, uniformly), one degraded by the training renderers, one by the held-out
renderer (:mod:`engine.degradations.heldout`), which no trainer uses. Each region is seen as
detection sees a photo (global view plus native crops) and scored by the presence head at 0.5.
These are learning-curve points; the figures that decide what ships come from ``photomend detect
--eval`` on full-size images.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from engine.training.region_pool import PoolSpec, RegionPool, region_views


def set_scores(pred: list[frozenset], true: list[frozenset], vocabulary: tuple[str, ...]) -> dict:
    """Exact-set accuracy, mean per-name F1 (over names that occur) and the clean photos' false-alarm rate."""
    exact = float(np.mean([p == t for p, t in zip(pred, true, strict=True)]))
    f1s = []
    for name in vocabulary:
        tp = sum(name in p and name in t for p, t in zip(pred, true, strict=True))
        fp = sum(name in p and name not in t for p, t in zip(pred, true, strict=True))
        fn = sum(name not in p and name in t for p, t in zip(pred, true, strict=True))
        if tp + fn:
            f1s.append(2 * tp / max(1, 2 * tp + fp + fn))
    clean = [bool(p) for p, t in zip(pred, true, strict=True) if not t]
    return {"exact": round(exact, 4), "f1": round(float(np.mean(f1s)) if f1s else 0.0, 4),
            "clean_false": round(float(np.mean(clean)), 4) if clean else None}


class ValidationSets:
    """The two fixed region sets (training renderers, held-out renderer) of the photos in ``val_dir``."""

    def __init__(self, val_dir: Path, spec: PoolSpec, n_regions: int, seed: int = 1, max_side: int = 1536):
        spec = dataclasses.replace(spec, preset="all", photo_jitter=0.0, photo_turns=False,  # the photos as they are
                                   photo_highlights=0.0)
        train = RegionPool(val_dir, spec, n_regions, seed=seed, max_side=max_side)
        held = RegionPool(None, dataclasses.replace(spec, renderers=("heldout",)), n_regions, seed=seed,
                          photos=train.photos)
        self.sets = {"train_renderers": self._views(train, spec, seed), "heldout_renderer": self._views(held, spec, seed)}

    @staticmethod
    def _views(pool: RegionPool, spec: PoolSpec, seed: int):
        rng = np.random.default_rng([seed, 99])
        views = [region_views(r, spec, rng)[0] for r in pool.regions]
        return torch.stack(views), [frozenset(r.names) for r in pool.regions]

    @torch.no_grad()
    def evaluate(self, model, batch: int = 32, stage: str = "control") -> dict:
        """Figures per set. ``stage`` ``"base"`` reads the base tower (the controller is an untrained
        copy until the control stage starts), ``"control"`` the controller, as detection does."""
        vocab = model.cfg.vocabulary
        out = {}
        for key, (views, true) in self.sets.items():
            preds = []
            for i in range(0, len(views), batch):
                chunk = views[i:i + batch]
                n, v = chunk.shape[:2]
                if stage == "base":
                    pooled = model.encode_base(chunk.flatten(0, 1))
                else:
                    _, pooled, _ = model.control_features(chunk.flatten(0, 1))
                probs = torch.sigmoid(model.presence_logits(pooled, v))
                for row in probs:
                    ranked = sorted(range(len(vocab)), key=lambda j: -float(row[j]))
                    preds.append(frozenset(vocab[j] for j in ranked[:2] if row[j] >= 0.5))
            out[key] = set_scores(preds, true, vocab)
        return out
