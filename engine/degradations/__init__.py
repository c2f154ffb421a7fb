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

from engine.degradations.blur import blurry, motion_blurry
from engine.degradations.compose import (
    EXCLUSIVE,
    PRESETS,
    Degradation,
    apply_degradations,
    preset_combinations,
    sample_combination,
)
from engine.degradations.inpaint import uncompleted
from engine.degradations.jpeg import jpeg_compressed
from engine.degradations.lens import raindrop
from engine.degradations.noise import noisy
from engine.degradations.scene import low_light, shadowed
from engine.degradations.weather import hazy, rainy, snowy
from engine.vocab import DEGRADATIONS

DEGRADATIONS_FUNCS: dict[str, Degradation] = {
    "motion-blurry": motion_blurry,
    "hazy": hazy,
    "jpeg-compressed": jpeg_compressed,
    "low-light": low_light,
    "noisy": noisy,
    "raindrop": raindrop,
    "rainy": rainy,
    "shadowed": shadowed,
    "snowy": snowy,
    "uncompleted": uncompleted,
    "blurry": blurry,
}
assert set(DEGRADATIONS_FUNCS) == set(DEGRADATIONS)

__all__ = [
    "DEGRADATIONS_FUNCS",
    "EXCLUSIVE",
    "PRESETS",
    "apply_degradations",
    "preset_combinations",
    "sample_combination",
]
