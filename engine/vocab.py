"""The degradation vocabulary and its physical ordering.

DA-CLIP's ten degradation names plus ``blurry`` (defocus / Gaussian blur).
``none`` fills an empty detection slot.
"""

from __future__ import annotations

NONE = "none"

# The ten names of the official DA-CLIP checkpoint, in its order.
OFFICIAL_DACLIP_DEGRADATIONS: tuple[str, ...] = (
    "motion-blurry",
    "hazy",
    "jpeg-compressed",
    "low-light",
    "noisy",
    "raindrop",
    "rainy",
    "shadowed",
    "snowy",
    "uncompleted",
)

# PhotoMend's names: the official ten, then Gaussian/defocus blur.
DEGRADATIONS: tuple[str, ...] = (*OFFICIAL_DACLIP_DEGRADATIONS, "blurry")


def by_name(namespace: dict) -> dict:
    """``{name: namespace[python_name]}`` for every degradation: a renderer module's functions are named
    after the degradations (``motion-blurry`` -> ``motion_blurry``), so its table is built, not written."""
    return {name: namespace[name.replace("-", "_")] for name in DEGRADATIONS}


# Physical order of application: scene, then optics, then sensor, then compression; uncompleted last.
SCENE = ("hazy", "rainy", "snowy", "raindrop", "shadowed", "low-light")
OPTICS = ("motion-blurry", "blurry")
SENSOR = ("noisy",)
COMPRESSION = ("jpeg-compressed",)
LAST = ("uncompleted",)
PHYSICAL_ORDER: tuple[str, ...] = SCENE + OPTICS + SENSOR + COMPRESSION + LAST

# The 24 combinations of the original two-degradation DA-CLIP study.
SEED24_FIRST = ("motion-blurry", "hazy", "low-light", "raindrop", "rainy", "shadowed", "snowy", "uncompleted")
SEED24_SECOND = ("noisy", "blurry", "jpeg-compressed")
SEED24: tuple[tuple[str, str], ...] = tuple((a, b) for a in SEED24_FIRST for b in SEED24_SECOND)


def physical_sort(names) -> tuple[str, ...]:
    """Return ``names`` (without ``none``) sorted in the order they are applied physically."""
    unknown = [n for n in names if n != NONE and n not in DEGRADATIONS]
    if unknown:
        raise ValueError(f"unknown degradation(s): {', '.join(unknown)}; known: {', '.join(DEGRADATIONS)}")
    return tuple(sorted({n for n in names if n != NONE}, key=PHYSICAL_ORDER.index))


def parse_names(text: str) -> tuple[str, ...]:
    """Parse a comma-separated list such as ``"noisy,hazy"`` (``none`` or empty means no degradation)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return physical_sort(parts)
