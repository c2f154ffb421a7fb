"""The degradation library: eleven seeded degradations and their composition.

Every degradation is ``fn(image, rng, **severity_overrides) -> (degraded, params)`` where ``image``
is float32 ``(H, W, 3)`` in ``[0, 1]``, ``rng`` a :class:`numpy.random.Generator` and ``params`` a
JSON-serialisable dict of the severity actually used (keyword overrides fix a parameter instead of
drawing it). Severity ranges are documented in each module: :mod:`.noise`, :mod:`.blur`,
:mod:`.jpeg`, :mod:`.scene` (low light, shadow), :mod:`.weather` (haze, rain, snow),
:mod:`.lens` (raindrops) and :mod:`.inpaint` (missing regions).

:func:`apply_degradations` composes them in physical order; :func:`sample_combination` draws
combinations for datasets (presets ``mixed``, ``seed24``, ``train``, ``all``).
"""

from __future__ import annotations

from engine.degradations import blur, inpaint, jpeg, lens, noise, scene, weather
from engine.degradations.compose import (
    EXCLUSIVE,
    PRESETS,
    Degradation,
    apply_degradations,
    preset_combinations,
    sample_combination,
)
from engine.vocab import DEGRADATIONS, by_name

DEGRADATIONS_FUNCS: dict[str, Degradation] = by_name(
    {k: v for module in (blur, inpaint, jpeg, lens, noise, scene, weather) for k, v in vars(module).items()})
assert set(DEGRADATIONS_FUNCS) == set(DEGRADATIONS)

__all__ = [
    "DEGRADATIONS_FUNCS",
    "EXCLUSIVE",
    "PRESETS",
    "apply_degradations",
    "preset_combinations",
    "sample_combination",
]
