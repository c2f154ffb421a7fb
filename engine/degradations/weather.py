"""Weather degradations: ``hazy``, ``rainy`` and ``snowy`` (``raindrop`` on the lens is in :mod:`.lens`).

Sizes of streaks and flakes are given for a 256 px short side and scale with the image.

Severity (drawn per call, overridable by keyword):

* hazy: atmospheric scattering ``I = J*t + A*(1-t)``, ``t = exp(-beta*depth)``, ``beta`` 0.5-2.5,
  airlight ``A`` 0.7-1.0 (with a slight warm/cool ``tint`` of up to 0.05). Depth proxy in [0.1, 1]:
  a mix of vertical position (the top of a photo is usually farther; random tilt and horizon),
  smoothed brightness (sky and distant scenery are bright) and flatness (distant regions show less
  texture), computed at low resolution and smoothed so that haze does not halo around edges.
* rainy: ``layers`` 1-3 of streaks (far layers thinner, shorter, fainter); ``density`` 0.0003-0.004
  streak seeds per pixel (log-uniform, front layer), ``angle`` -35..35 degrees from vertical,
  ``length`` 8-60 px, ``width`` (Gaussian sigma) 0.3-1.5 px, ``intensity`` 0.3-0.9; plus a rain
  ``veil`` 0-0.15 that lowers contrast.
* snowy: ``layers`` 2-3 of flakes with radii 0.4-1.0 px (far), 1.0-2.5 px (middle) and 2.5-6 px
  (near, out of focus); ``density`` 0.5-4 flakes per 1000 pixels (log-uniform, far layer);
  slight vertical stretch from falling motion; whitish ``veil`` 0.05-0.35.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from engine.degradations._common import (
    Params,
    blurred_plane,
    fft_convolve,
    line_kernel,
    luminance,
    resize,
    resize_area,
    size_scale,
)


def depth_proxy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible relative depth map in [0.1, 1] (1 = far) from position, brightness and texture."""
    height, width = image.shape[:2]
    scale = min(1.0, 96.0 / max(height, width))
    h, w = max(4, round(height * scale)), max(4, round(width * scale))
    lum = resize_area(luminance(image), h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = rng.uniform(0.3, 0.9)
    tilt = rng.uniform(-0.3, 0.3)
    vertical = np.clip(1.0 - (yy / h) / horizon + tilt * (xx / w - 0.5), 0.0, 1.0)
    bright = ndimage.gaussian_filter(lum, 0.05 * max(h, w))
    texture = ndimage.gaussian_filter(np.abs(lum - ndimage.gaussian_filter(lum, 1.0)), 0.05 * max(h, w))
    flat = 1.0 - texture / (texture.max() + 1e-6)
    weights = rng.dirichlet((6.0, 2.5, 1.5))
    depth = weights[0] * vertical + weights[1] * bright + weights[2] * flat
    depth = ndimage.gaussian_filter(depth, 0.04 * max(h, w), mode="nearest")
    depth = (depth - depth.min()) / (np.ptp(depth) + 1e-6)
    return 0.1 + 0.9 * resize(depth.astype(np.float32), height, width)


def hazy(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Atmospheric scattering with beta 0.5-2.5 and airlight 0.7-1.0 over a depth proxy."""
    p = Params(rng, overrides)
    beta = p.uniform("beta", 0.5, 2.5)
    airlight = p.uniform("airlight", 0.7, 1.0)
    tint = p.uniform("tint", -0.05, 0.05)
    depth = depth_proxy(image, rng)
    t = np.exp(-beta * depth)[..., None].astype(np.float32)
    a = np.clip(np.array([airlight + tint, airlight, airlight - tint], dtype=np.float32), 0.0, 1.0)
    out = image * t + a * (1.0 - t)
    p.set("min_transmission", round(float(t.min()), 4))
    return np.clip(out, 0.0, 1.0).astype(np.float32), p.done()


def _streak_layer(rng, height, width, density, length, angle, width_sigma) -> np.ndarray:
    """Rain streaks of roughly unit peak brightness (before clipping) for one depth layer."""
    seeds = (rng.random((height, width), dtype=np.float32) < density).astype(np.float32)
    seeds *= rng.uniform(0.4, 1.0, size=(height, width)).astype(np.float32)
    kernel = line_kernel(length, 90.0 + angle, width_sigma=width_sigma)
    kernel /= kernel.max()
    return fft_convolve(seeds, kernel, mode="constant")


def rainy(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Rain streaks in 1-3 depth layers plus a faint veil."""
    p = Params(rng, overrides)
    s = size_scale(image)
    height, width = image.shape[:2]
    layers = p.integer("layers", 1, 3)
    density = p.log_uniform("density", 0.0003, 0.004)
    angle = p.uniform("angle", -35.0, 35.0)
    length = p.uniform("length", 8.0, 60.0)
    width_sigma = p.uniform("width", 0.3, 1.5)
    intensity = p.uniform("intensity", 0.3, 0.9)
    veil = p.uniform("veil", 0.0, 0.15)
    rain = np.zeros((height, width), dtype=np.float32)
    for i in range(layers):
        far = 0.6**i  # deeper layers: shorter, thinner, fainter, denser
        layer = _streak_layer(
            rng, height, width,
            density=min(0.2, density * (1.5**i) / (s * s)),
            length=max(3.0, length * far * s),
            angle=angle + rng.uniform(-4, 4),
            width_sigma=max(0.3, width_sigma * far * s),
        )
        rain = 1.0 - (1.0 - rain) * (1.0 - np.clip(layer * intensity * (0.5 + 0.5 * far), 0.0, 1.0))
    out = image * (1.0 - veil) + veil * 0.75
    brightness = np.float32(rng.uniform(0.85, 1.0))
    out = out * (1.0 - rain[..., None]) + brightness * rain[..., None]
    return np.clip(out, 0.0, 1.0).astype(np.float32), p.done()


def _flake_layer(rng, height, width, count, radius, stretch) -> np.ndarray:
    """Opacity in [0, 1] of ``count`` round flakes of about ``radius`` px."""
    impulses = np.zeros((height, width), dtype=np.float32)
    n = int(count)
    if n:
        ys = rng.integers(0, height, n)
        xs = rng.integers(0, width, n)
        np.add.at(impulses, (ys, xs), rng.uniform(0.5, 1.0, n).astype(np.float32))
    sigma = max(0.4, radius / 1.5)
    if sigma * stretch <= 4.0:
        blob = ndimage.gaussian_filter(impulses, (sigma * stretch, sigma), mode="constant", truncate=3.0)
    else:
        blob = blurred_plane(impulses, sigma * math.sqrt(stretch))
    peak = 2 * math.pi * sigma * sigma * stretch  # a unit impulse blurred this way peaks at 1/peak
    return np.clip(blob * peak * 1.6, 0.0, 1.0)


def snowy(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Snowflakes of several sizes in 2-3 layers over a whitish veil."""
    p = Params(rng, overrides)
    s = size_scale(image)
    height, width = image.shape[:2]
    layers = p.integer("layers", 2, 3)
    density = p.log_uniform("density", 0.5, 4.0) / 1000.0
    veil = p.uniform("veil", 0.05, 0.35)
    stretch = p.uniform("fall_stretch", 1.0, 2.0)
    sizes = ((0.4, 1.0), (1.0, 2.5), (2.5, 6.0))
    out = image * (1.0 - veil) + veil * np.float32(rng.uniform(0.8, 0.95))
    radii = []
    for i in range(layers):
        radius = rng.uniform(*sizes[i]) * s
        radii.append(round(radius, 3))
        count = rng.poisson(density * height * width / (s * s) / (1 + 3 * i))
        alpha = _flake_layer(rng, height, width, count, radius, stretch)[..., None]
        white = np.float32(rng.uniform(0.85, 1.0))
        out = out * (1.0 - alpha) + white * alpha
    p.set("radii_px", radii)
    return np.clip(out, 0.0, 1.0).astype(np.float32), p.done()
