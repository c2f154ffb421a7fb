"""``uncompleted``: missing regions painted white (1.0) along random brush strokes, as in DA-CLIP.

Severity (drawn per call, overridable by keyword):

* ``target_coverage`` 5-25% of the image (uniform); strokes are added until it is reached
  (the exact ``coverage`` is returned).
* each stroke: 3-10 vertices with random turns, width 3-9% of the short side, round joints and caps.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from engine.degradations._common import Params


def stroke_mask(rng: np.random.Generator, height: int, width: int, target: float) -> np.ndarray:
    """Boolean (H, W) mask of brush strokes covering about ``target`` of the image."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    short = min(height, width)
    covered = 0.0
    for _ in range(200):
        if covered >= target:
            break
        stroke_w = max(2, int(rng.uniform(0.03, 0.09) * short))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        heading = rng.uniform(0, 2 * math.pi)
        pts = [(x, y)]
        # stop the stroke early when its area would overshoot what is still missing
        budget = (target - covered) * height * width * 1.1
        length = 0.0
        for _ in range(int(rng.integers(3, 11))):
            heading += rng.uniform(-1.2, 1.2)
            step = rng.uniform(0.05, 0.2) * short
            if pts[1:] and (length + step) * stroke_w > budget:
                break
            length += step
            x = float(np.clip(x + step * math.cos(heading), 0, width - 1))
            y = float(np.clip(y + step * math.sin(heading), 0, height - 1))
            pts.append((x, y))
        draw.line(pts, fill=255, width=stroke_w, joint="curve")
        r = stroke_w / 2
        for px, py in (pts[0], pts[-1]):
            draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
        covered = float(np.count_nonzero(np.asarray(canvas))) / (height * width)
    return np.asarray(canvas) > 0


def uncompleted(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Fill brush-stroke regions covering 5-25% of the image with white."""
    p = Params(rng, overrides)
    target = p.uniform("target_coverage", 0.05, 0.25)
    mask = stroke_mask(rng, image.shape[0], image.shape[1], target)
    out = image.astype(np.float32, copy=True)
    out[mask] = 1.0
    p.set("coverage", round(float(mask.mean()), 4))
    return out, p.done()
