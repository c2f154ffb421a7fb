"""``raindrop``: water drops on the lens or window, in front of an in-focus scene.

Each drop is a small, slightly irregular ellipse that acts as a lens: it shows a minified,
inverted and out-of-focus view of the scene around it, has a soft edge, a dark outline, a bright
rim on the side away from the light and a small specular highlight.

Severity (drawn per call, overridable by keyword; sizes for a 256 px short side, scaled):

* ``drops`` 5-35 drops, radii log-uniform between 3 px and ``max_radius`` 8-40 px;
* ``defocus`` 1-4 px: Gaussian sigma of the scene seen through the drops;
* ``magnification`` 1.5-3.5: how much wider the view inside a drop is than the drop;
* ``edge_softness`` 0.1-0.35 (fraction of the radius blended at the rim);
* ``rim`` 0.1-0.45: brightness added along the rim.
"""

from __future__ import annotations

import math

import numpy as np

from engine.degradations._common import Params, blur_any_sigma, size_scale


def _sample(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear lookup of all channels at (ys, xs), clamped to the border."""
    h, w = image.shape[:2]
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    y0 = np.minimum(ys.astype(np.int32), max(h - 2, 0))
    x0 = np.minimum(xs.astype(np.int32), max(w - 2, 0))
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def raindrop(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Refracting, blurred raindrops with bright rims."""
    p = Params(rng, overrides)
    s = size_scale(image)
    height, width = image.shape[:2]
    count = p.integer("drops", 5, 35)
    max_radius = p.uniform("max_radius", 8.0, 40.0)
    defocus = p.uniform("defocus", 1.0, 4.0)
    magnification = p.uniform("magnification", 1.5, 3.5)
    edge = p.uniform("edge_softness", 0.1, 0.35)
    rim = p.uniform("rim", 0.1, 0.45)
    light = rng.uniform(-math.pi, math.pi)  # direction the light comes from
    seen = blur_any_sigma(image, defocus * s)
    out = image.astype(np.float32, copy=True)
    covered = np.zeros((height, width), dtype=bool)
    for _ in range(count):
        r = math.exp(rng.uniform(math.log(3.0), math.log(max_radius))) * s
        aspect = rng.uniform(0.75, 1.25)
        rot = rng.uniform(0, math.pi)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        harm = rng.uniform(0, 0.08, 2)
        phase = rng.uniform(0, 2 * math.pi, 2)
        ext = 1.3 * r * max(aspect, 1 / aspect)
        y0, y1 = max(0, int(cy - ext)), min(height, int(cy + ext) + 1)
        x0, x1 = max(0, int(cx - ext)), min(width, int(cx + ext) + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        u = (dx * math.cos(rot) + dy * math.sin(rot)) / aspect
        v = (-dx * math.sin(rot) + dy * math.cos(rot)) * aspect
        phi = np.arctan2(dy, dx)
        shape = 1 + harm[0] * np.cos(2 * phi + phase[0]) + harm[1] * np.cos(3 * phi + phase[1])
        rho = np.hypot(u, v) / (r * shape)
        inside = rho < 1.0
        if not inside.any():
            continue
        # work on the pixels inside the drop only (1-D arrays)
        rho, phi, dy, dx = rho[inside], phi[inside], dy[inside], dx[inside]
        alpha = np.clip((1.0 - rho) / edge, 0.0, 1.0)[:, None]
        # an inverted, minified and defocused view of the surroundings
        view = _sample(seen, cy - dy * magnification, cx - dx * magnification)
        view = view * np.float32(rng.uniform(1.0, 1.15)) + np.float32(0.03)
        facing = np.clip(np.cos(phi - light - math.pi), 0.0, 1.0)  # rim lit opposite the light
        rim_light = rim * np.exp(-(((rho - 0.82) / 0.1) ** 2)) * facing
        outline = 0.35 * np.exp(-(((rho - 0.98) / 0.06) ** 2)) * (1 - facing)
        spot = np.exp(-(((dx + 0.35 * r * math.cos(light)) ** 2 + (dy + 0.35 * r * math.sin(light)) ** 2)
                        / (0.12 * r) ** 2))
        color = view * (1.0 - outline[:, None]) + (rim_light + 0.5 * spot)[:, None]
        region = out[y0:y1, x0:x1]
        region[inside] = region[inside] * (1.0 - alpha) + color * alpha
        cover = covered[y0:y1, x0:x1]
        cover[inside] |= alpha[:, 0] > 0.5
    p.set("coverage", round(float(covered.mean()), 4))
    return np.clip(out, 0.0, 1.0).astype(np.float32), p.done()
