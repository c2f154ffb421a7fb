"""Composition: apply several degradations in physical order, and draw combinations for datasets.

Order (``engine.vocab.PHYSICAL_ORDER``): scene (haze, rain, snow, raindrops, shadow, low light),
then optics (motion blur, blur), then sensor (noise), then compression (JPEG); uncompleted last.

Presets for :func:`sample_combination`:

* ``mixed``: 0-3 degradations (0: 10%, 1: 40%, 2: 35%, 3: 15%), no mutually exclusive pair.
* ``seed24``: one of the 24 pairs of the DA-CLIP two-degradation study, uniformly (the study pairs
  motion-blurry with blurry, so that exclusive pair does occur here and in ``train``).
* ``train``: clean 10%, single 30%, pair 50% (60% of them one of the 24 seed pairs), triple 10%.
* ``all``: uniformly one of the 36 evaluation combinations (24 seed pairs, 11 singles, clean).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from engine.vocab import DEGRADATIONS, NONE, PHYSICAL_ORDER, SEED24, physical_sort

Degradation = Callable[..., tuple[np.ndarray, dict]]

# Pairs that do not occur together (or that a detector could not tell apart in one photo).
EXCLUSIVE: frozenset[frozenset[str]] = frozenset(
    {frozenset({"blurry", "motion-blurry"}), frozenset({"rainy", "snowy"})}
)
PRESETS = ("mixed", "seed24", "train", "all")


def _valid(combo: Iterable[str]) -> bool:
    combo = set(combo)
    return not any(pair <= combo for pair in EXCLUSIVE)


def _valid_combos(k: int) -> list[tuple[str, ...]]:
    return [physical_sort(c) for c in itertools.combinations(PHYSICAL_ORDER, k) if _valid(c)]


_PAIRS = _valid_combos(2)
_TRIPLES = _valid_combos(3)
_SEED24 = [physical_sort(p) for p in SEED24]


def preset_combinations(preset: str) -> list[tuple[str, ...]]:
    """The fixed list of combinations a preset enumerates (``seed24``: 24, ``all``: 36)."""
    if preset == "seed24":
        return list(_SEED24)
    if preset == "all":
        return list(_SEED24) + [(n,) for n in PHYSICAL_ORDER] + [()]
    raise ValueError(f"preset {preset!r} has no fixed list of combinations; use seed24 or all")


def _pick(rng: np.random.Generator, items: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    return items[int(rng.integers(len(items)))]


def sample_combination(rng: np.random.Generator, preset: str) -> tuple[str, ...]:
    """Draw one combination of degradation names (physical order) according to ``preset``."""
    if preset == "seed24":
        return _pick(rng, _SEED24)
    if preset == "all":
        return _pick(rng, preset_combinations("all"))
    if preset == "mixed":
        k = int(rng.choice(4, p=(0.10, 0.40, 0.35, 0.15)))
    elif preset == "train":
        k = int(rng.choice(4, p=(0.10, 0.30, 0.50, 0.10)))
        if k == 2 and rng.random() < 0.6:
            return _pick(rng, _SEED24)
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if k == 0:
        return ()
    if k == 1:
        return (PHYSICAL_ORDER[int(rng.integers(len(PHYSICAL_ORDER)))],)
    return _pick(rng, _PAIRS if k == 2 else _TRIPLES)


def _as_rgb(image: np.ndarray) -> tuple[np.ndarray, str, np.ndarray | None]:
    """Split an input into float32 RGB, its layout ('gray2', 'gray3', 'rgb', 'rgba') and alpha."""
    arr = np.asarray(image)
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2), "gray2", None
    if arr.ndim == 3 and arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2), "gray3", None
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr.copy(), "rgb", None
    if arr.ndim == 3 and arr.shape[2] == 4:
        return arr[..., :3].copy(), "rgba", arr[..., 3].copy()
    raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}")


def _restore_layout(rgb: np.ndarray, layout: str, alpha: np.ndarray | None) -> np.ndarray:
    if layout in ("gray2", "gray3"):
        gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return gray if layout == "gray2" else gray[..., None]
    if layout == "rgba":
        return np.concatenate([rgb, alpha[..., None]], axis=2)
    return rgb


def apply_degradations(
    image: np.ndarray,
    names: Iterable[str],
    seed_or_rng: int | np.random.Generator | None,
    overrides: dict[str, dict] | None = None,
    registry: dict[str, Degradation] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Apply ``names`` to ``image`` in physical order; return the result and the parameters used.

    ``image``: float in [0, 1] (integers are rescaled) of shape (H, W), (H, W, 1), (H, W, 3) or
    (H, W, 4); grayscale is degraded as RGB and returned as luma in its own shape, alpha passes
    through untouched. ``overrides`` maps a name to keyword severity overrides for it.
    The result is float32, clipped to [0, 1]; the list holds one dict per applied degradation,
    in order, each ``{"name": ..., **params}``. Same seed, same output.
    """
    if registry is None:
        from engine.degradations import DEGRADATIONS_FUNCS as registry
    rng = seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)
    names = list(names)
    ordered = physical_sort(names)
    overrides = overrides or {}
    unknown = set(overrides) - set(ordered)
    if unknown:
        raise ValueError(f"severity overrides for degradations not applied: {', '.join(sorted(unknown))}")
    rgb, layout, alpha = _as_rgb(image)
    rgb = np.clip(rgb, 0.0, 1.0)
    params: list[dict] = []
    for name in ordered:
        rgb, used = registry[name](rgb, rng, **overrides.get(name, {}))
        rgb = np.clip(rgb, 0.0, 1.0).astype(np.float32, copy=False)
        params.append({"name": name, **used})
    return np.ascontiguousarray(_restore_layout(rgb, layout, alpha), dtype=np.float32), params


__all__ = ["DEGRADATIONS", "NONE", "EXCLUSIVE", "PRESETS", "apply_degradations", "preset_combinations",
           "sample_combination"]
