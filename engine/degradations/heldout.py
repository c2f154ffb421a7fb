"""The held-out renderer: degradations drawn by code that no trainer ever uses.

It exists only to measure how a model does on damage rendered unlike anything it trained on
(``photomend synth --renderer heldout``). The trainers draw from the ``project`` and
``albumentations`` renderers; :data:`engine.degradations.renderers.TRAIN_RENDERERS` never names this
one, and a test checks that.

* The ``imagecorruptions`` package (Hendrycks & Dietterich's common corruptions) renders noise,
  blur, motion blur, snow, fog, JPEG and spatter (raindrops), at severity 1-5.
* The rest (low light, rain, shadow, missing regions) are written here with plain PIL/numpy,
  independently of the project's own renderer: exposure and gamma in linear light, anti-aliased rain
  lines, soft-edged shadow blobs, and free-hand ellipse/line holes.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from engine.degradations._common import Params


@functools.lru_cache(maxsize=1)
def _imagecorruptions():
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import imagecorruptions
    except ImportError:
        raise RuntimeError("the held-out renderer needs the imagecorruptions-imaug package "
                           "(`make venv` installs it: it is a development dependency)") from None
    return imagecorruptions


def _corrupt(image: np.ndarray, rng: np.random.Generator, name: str, severity: int) -> np.ndarray:
    ic = _imagecorruptions()
    u8 = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    state = np.random.get_state()  # imagecorruptions draws from numpy's global generator
    np.random.seed(int(rng.integers(2**31 - 1)))
    try:
        out = ic.corrupt(u8, corruption_name=name, severity=severity)
    finally:
        np.random.set_state(state)
    out = np.asarray(out, dtype=np.float32)
    if out.shape[:2] != image.shape[:2]:  # some corruptions work on a fixed canvas
        out = np.asarray(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).resize(
            (image.shape[1], image.shape[0]), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(out / 255.0, 0.0, 1.0)


def _corruption(names: tuple[str, ...], severities: tuple[int, int] = (1, 5)):
    def render(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
        p = Params(rng, overrides)
        name = p.choice("corruption", names)
        severity = p.integer("severity", *severities)
        return _corrupt(image, rng, name, severity), p.done()

    return render


def low_light(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Exposure cut to 5-30% in linear light, then a flatter tone curve."""
    p = Params(rng, overrides)
    exposure = p.uniform("exposure", 0.05, 0.3)
    linear = np.clip(image, 0.0, 1.0) ** 2.2 * exposure
    out = linear ** (1 / p.uniform("display_gamma", 2.0, 2.6))
    return out.astype(np.float32), p.done()


def rainy(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Anti-aliased translucent lines of one slant, drawn at 2x and downsampled, over a dimmed scene."""
    p = Params(rng, overrides)
    h, w = image.shape[:2]
    density = p.uniform("density", 0.3, 1.5)
    angle = np.deg2rad(p.uniform("angle", -25.0, 25.0))
    length = p.uniform("length", 0.03, 0.12) * min(h, w)
    n = int(density * h * w / 400)
    layer = Image.new("L", (2 * w, 2 * h), 0)
    draw = ImageDraw.Draw(layer)
    ys, xs = rng.uniform(0, 2 * h, n), rng.uniform(0, 2 * w, n)
    dy, dx = 2 * length * np.cos(angle), 2 * length * np.sin(angle)
    for y, x, a in zip(ys, xs, rng.integers(60, 200, n), strict=True):
        draw.line([(x, y), (x + dx, y + dy)], fill=int(a), width=2)
    streaks = np.asarray(layer.resize((w, h), Image.Resampling.BOX), dtype=np.float32)[..., None] / 255.0
    dim = p.uniform("dim", 0.75, 0.95)
    out = image * dim + streaks * (0.85 - image * dim) * 0.8
    return np.clip(out, 0.0, 1.0).astype(np.float32), p.done()


def _blank_mask(image: np.ndarray):
    """``(h, w, mask, draw)``: a black 8-bit mask the image's size and a pen on it."""
    h, w = image.shape[:2]
    mask = Image.new("L", (w, h), 0)
    return h, w, mask, ImageDraw.Draw(mask)


def shadowed(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """A few soft-edged random blobs (unions of ellipses) darkened by 35-75%, slightly blue."""
    p = Params(rng, overrides)
    h, w, mask, draw = _blank_mask(image)
    for _ in range(p.integer("blobs", 1, 3)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        for _ in range(int(rng.integers(3, 8))):
            ry, rx = rng.uniform(0.08, 0.3) * h, rng.uniform(0.08, 0.3) * w
            oy, ox = rng.normal(0, 0.1 * h), rng.normal(0, 0.1 * w)
            draw.ellipse([cx + ox - rx, cy + oy - ry, cx + ox + rx, cy + oy + ry], fill=255)
    soft = p.uniform("softness", 0.005, 0.03) * min(h, w)
    m = np.asarray(mask.filter(ImageFilter.GaussianBlur(soft)), dtype=np.float32)[..., None] / 255.0
    depth = p.uniform("depth", 0.35, 0.75)
    tint = np.array([1.0, 1.0, 1.08], dtype=np.float32)
    out = image * (1 - m * depth * tint.clip(0, 1) / tint.max())
    return np.clip(out, 0.0, 1.0).astype(np.float32), p.done()


def uncompleted(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Holes made of ellipses and thick free-hand lines, filled with one flat colour."""
    p = Params(rng, overrides)
    h, w, mask, draw = _blank_mask(image)
    short = min(h, w)
    for _ in range(p.integer("shapes", 2, 6)):
        if rng.random() < 0.5:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            r = rng.uniform(0.04, 0.15) * short
            draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r * rng.uniform(0.5, 1.5)], fill=255)
        else:
            pts = [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(int(rng.integers(2, 5)))]
            draw.line(pts, fill=255, width=max(2, int(rng.uniform(0.02, 0.07) * short)))
    fill = p.choice("fill", ("white", "black", "grey"))
    colour = {"white": 1.0, "black": 0.0, "grey": 0.5}[fill]
    m = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    out = image * (1 - m) + colour * m
    return out.astype(np.float32), p.done()


RENDERER = {
    "motion-blurry": _corruption(("motion_blur",)),
    "hazy": _corruption(("fog",), (2, 5)),
    "jpeg-compressed": _corruption(("jpeg_compression",)),
    "low-light": low_light,
    "noisy": _corruption(("gaussian_noise", "shot_noise", "speckle_noise")),
    "raindrop": _corruption(("spatter",), (1, 3)),
    "rainy": rainy,
    "shadowed": shadowed,
    "snowy": _corruption(("snow",)),
    "uncompleted": uncompleted,
    "blurry": _corruption(("defocus_blur", "gaussian_blur")),
}
