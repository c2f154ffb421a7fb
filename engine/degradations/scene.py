"""Lighting degradations: ``low-light`` (in linear light) and ``shadowed``.

Severity (drawn per call, overridable by keyword):

* low-light: ``exposure`` x0.02-0.3 (log-uniform) applied to linear RGB, then sensor noise in the
  linear domain: shot noise with ``photons`` 300-3000 at full scale (log-uniform) and read noise
  ``read_sigma`` 0.0005-0.005 (linear units), independent per channel; re-encoded to sRGB.
* shadowed: one or two (``shadows``) soft-edged polygonal cast shadows (3-9 vertices, radius
  0.2-0.7 of the short side) that multiply the sRGB values by ``factor`` 0.3-0.7 (about 0.07-0.46 in
  linear light, the shadow/lit ratios of shadow-removal datasets), slightly less in blue
  (``blue_tint`` 0-0.15, sky-lit shadows are bluish); penumbra ``softness`` 1-6% of the short side
  (Gaussian sigma of the mask edge).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from engine.degradations._common import Params, linear_to_srgb, resize, srgb_to_linear


def low_light(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Underexpose by x0.02-0.3 in linear light and add shot + read noise."""
    p = Params(rng, overrides)
    exposure = p.log_uniform("exposure", 0.02, 0.3)
    photons = p.log_uniform("photons", 300.0, 3000.0)
    read = p.log_uniform("read_sigma", 0.0005, 0.005)
    dark = srgb_to_linear(image) * np.float32(exposure)
    std = np.sqrt(dark / np.float32(photons) + np.float32(read * read))
    dark = dark + std * rng.standard_normal(image.shape, dtype=np.float32)
    return linear_to_srgb(dark), p.done()


def shadow_mask(rng: np.random.Generator, height: int, width: int, p: Params) -> np.ndarray:
    """Soft shadow coverage in [0, 1], computed at <= 256 px and upsampled (fast at any size)."""
    scale = min(1.0, 256.0 / max(height, width))
    h, w = max(8, round(height * scale)), max(8, round(width * scale))
    short = min(h, w)
    count = p.integer("shadows", 1, 2)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(count):
        n = int(rng.integers(3, 10))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        radius = rng.uniform(0.2, 0.7) * short
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = radius * rng.uniform(0.5, 1.3, n)
        stretch, rot = rng.uniform(1.0, 2.5), rng.uniform(0, math.pi)
        pts = []
        for a, r in zip(angles, radii, strict=True):
            x, y = r * math.cos(a) * stretch, r * math.sin(a)
            pts.append((cx + x * math.cos(rot) - y * math.sin(rot), cy + x * math.sin(rot) + y * math.cos(rot)))
        draw.polygon(pts, fill=255)
    mask = np.asarray(canvas, dtype=np.float32) / 255.0
    if mask.max() == 0:  # polygon fell outside the frame: shade a half-plane instead
        mask[:, : w // 2] = 1.0
    softness = p.uniform("softness", 0.01, 0.06)
    mask = ndimage.gaussian_filter(mask, max(0.5, softness * short), mode="nearest")
    return np.clip(resize(mask, height, width), 0.0, 1.0)


def shadowed(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Cast one or two soft-edged shadows that scale linear light by 0.3-0.7."""
    p = Params(rng, overrides)
    factor = p.uniform("factor", 0.3, 0.7)
    tint = p.uniform("blue_tint", 0.0, 0.15)
    mask = shadow_mask(rng, image.shape[0], image.shape[1], p)
    factors = np.array([factor, factor * (1 + tint / 2), factor * (1 + tint)], dtype=np.float32).clip(0, 1)
    gain = 1.0 - mask[..., None] * (1.0 - factors)
    p.set("coverage", round(float(np.mean(mask > 0.5)), 4))
    return np.clip(image * gain, 0.0, 1.0).astype(np.float32), p.done()
