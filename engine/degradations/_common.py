"""Helpers shared by the degradation modules: parameter drawing, colour transfer, fast filters."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

REFERENCE_SIDE = 256.0  # sizes of scene elements (rain streaks, flakes, drops) scale with the short side


class Params:
    """Draws severity parameters from ``rng`` unless the caller overrides them by keyword.

    Every value drawn or overridden is recorded (as a plain JSON type) and returned by :meth:`done`.
    An override that the degradation never asked for raises ``TypeError`` (catches typos).
    """

    def __init__(self, rng: np.random.Generator, overrides: dict):
        self.rng = rng
        self._overrides = dict(overrides)
        self.values: dict = {}

    def _take(self, key: str, draw):
        value = self._overrides.pop(key) if key in self._overrides else draw()
        if isinstance(value, np.generic):
            value = value.item()
        self.values[key] = value
        return value

    def uniform(self, key: str, low: float, high: float) -> float:
        return float(self._take(key, lambda: self.rng.uniform(low, high)))

    def log_uniform(self, key: str, low: float, high: float) -> float:
        return float(self._take(key, lambda: math.exp(self.rng.uniform(math.log(low), math.log(high)))))

    def integer(self, key: str, low: int, high: int) -> int:
        """Integer in ``[low, high]`` inclusive."""
        return int(self._take(key, lambda: self.rng.integers(low, high + 1)))

    def choice(self, key: str, options, p=None):
        return self._take(key, lambda: options[int(self.rng.choice(len(options), p=p))])

    def set(self, key: str, value) -> None:
        """Record a derived value (not overridable)."""
        self.values[key] = value.item() if isinstance(value, np.generic) else value

    def done(self) -> dict:
        if self._overrides:
            raise TypeError(f"unused severity override(s): {', '.join(sorted(self._overrides))}")
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.values.items()}


def size_scale(image: np.ndarray) -> float:
    """How much larger than a 256 px crop the image is (short side / 256)."""
    return min(image.shape[:2]) / REFERENCE_SIDE


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def luminance(image: np.ndarray) -> np.ndarray:
    """Rec. 709 weighted sum of the channels (of whatever encoding ``image`` has)."""
    return image @ LUMA


def gaussian_blur(image: np.ndarray, sigma: float | tuple[float, float]) -> np.ndarray:
    """Gaussian blur over the spatial axes only (reflect at borders)."""
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    spatial = (sy, sx) + (0.0,) * (image.ndim - 2)
    return ndimage.gaussian_filter(image, spatial, mode="reflect", truncate=3.0).astype(np.float32)


def blur_any_sigma(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (H, W, C) for any sigma; above 4 px it is computed at reduced resolution."""
    if sigma <= 4.0:
        return gaussian_blur(image, sigma)
    h, w = image.shape[:2]
    factor = sigma / 2.0
    sh, sw = max(1, round(h / factor)), max(1, round(w / factor))
    planes = []
    for c in range(image.shape[2]):
        small = resize_area(image[..., c], sh, sw)
        small = ndimage.gaussian_filter(small, sigma * sh / h, mode="reflect", truncate=3.0)
        planes.append(resize(small, h, w))
    return np.stack(planes, axis=-1)


def resize(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float (H, W) plane with PIL (fast at any size)."""
    if plane.shape == (height, width):
        return plane.astype(np.float32)
    im = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    return np.asarray(im.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about ``[-1, 1]``: a ``cells``-wide random grid upsampled smoothly."""
    gh = max(2, round(cells * height / max(height, width)) + 1)
    gw = max(2, round(cells * width / max(height, width)) + 1)
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
    return resize(grid, height, width)


def blurred_plane(plane: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an (H, W) plane; large sigmas are computed at reduced resolution for speed.

    The result keeps the plane's total mass per unit area (a blurred point keeps its integral).
    """
    if sigma <= 4.0:
        return ndimage.gaussian_filter(plane, sigma, mode="constant", truncate=3.0).astype(np.float32)
    factor = sigma / 2.0
    h, w = plane.shape
    sh, sw = max(1, round(h / factor)), max(1, round(w / factor))
    small = resize_area(plane, sh, sw)
    small = ndimage.gaussian_filter(small, sigma * sh / h, mode="constant", truncate=3.0)
    return resize(small, h, w)


def resize_area(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-preserving (box) downscale of a float plane: mean values are kept."""
    im = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    return np.asarray(im.resize((width, height), Image.Resampling.BOX), dtype=np.float32)


def fft_convolve(plane: np.ndarray, kernel: np.ndarray, mode: str = "reflect") -> np.ndarray:
    """Same-size convolution of an (H, W) or (H, W, C) array with a 2-D kernel (odd sides), via FFT."""
    from scipy.signal import fftconvolve

    ky, kx = kernel.shape[0] // 2, kernel.shape[1] // 2
    pad = ((ky, ky), (kx, kx)) + ((0, 0),) * (plane.ndim - 2)
    if mode == "constant":
        padded = np.pad(plane, pad, mode="constant")
    else:
        padded = np.pad(plane, pad, mode="reflect" if min(plane.shape[:2]) > max(ky, kx) else "edge")
    k = kernel.astype(np.float32)
    if plane.ndim == 3:
        k = k[:, :, None]
    out = fftconvolve(padded, k, mode="valid", axes=(0, 1))
    return out.astype(np.float32)


def splat(points_y: np.ndarray, points_x: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Bilinear splat of weighted sub-pixel points into a ``size`` x ``size`` grid centred on 0."""
    c = size // 2
    y = points_y + c
    x = points_x + c
    y0 = np.floor(y).astype(int)
    x0 = np.floor(x).astype(int)
    fy = y - y0
    fx = x - x0
    grid = np.zeros((size, size), dtype=np.float64)
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy = np.clip(y0 + dy, 0, size - 1)
        xx = np.clip(x0 + dx, 0, size - 1)
        np.add.at(grid, (yy, xx), w * weights)
    return grid.astype(np.float32)


def line_kernel(length: float, angle_deg: float, width_sigma: float = 0.0, curvature: float = 0.0,
                speed_variation: np.ndarray | None = None) -> np.ndarray:
    """A normalised (sum 1) kernel tracing a path of ``length`` px.

    ``angle_deg`` is the direction (0 = horizontal, counter-clockwise on screen), ``curvature`` the total
    change of heading along the path in radians, ``speed_variation`` optional per-step weights.
    """
    steps = max(16, int(length * 4))
    s = (np.arange(steps) + 0.5) / steps
    heading = math.radians(angle_deg) + curvature * (s - 0.5)
    ds = length / steps
    x = np.cumsum(np.cos(heading)) * ds
    y = -np.cumsum(np.sin(heading)) * ds
    w = np.ones(steps) if speed_variation is None else np.asarray(speed_variation, dtype=np.float64)
    x -= np.average(x, weights=w)
    y -= np.average(y, weights=w)
    extent = max(np.abs(x).max(), np.abs(y).max()) + 3 * width_sigma + 2
    size = 2 * int(math.ceil(extent)) + 1
    k = splat(y, x, w, size)
    if width_sigma > 0:
        k = ndimage.gaussian_filter(k, width_sigma, mode="constant")
    return (k / k.sum()).astype(np.float32)
