"""``blurry`` (defocus / Gaussian) and ``motion-blurry`` (camera shake along a trajectory).

Severity (drawn per call, overridable by keyword):

* blurry: ``sigma`` 1-3 px (uniform), isotropic Gaussian PSF.
* motion-blurry: ``length`` 7-25 px (uniform) of path, ``angle`` 0-360 degrees (any direction),
  ``trajectory`` straight (40%) or curved (60%) with a total heading change ``curvature`` of
  0.5-2.5 rad either way, and an uneven speed along the path (``speed_jitter`` 0-0.6).
  Convolution by FFT with reflected borders.
"""

from __future__ import annotations

import numpy as np

from engine.degradations._common import Params, fft_convolve, gaussian_blur, line_kernel


def blurry(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Gaussian defocus blur, sigma 1-3 px."""
    p = Params(rng, overrides)
    sigma = p.uniform("sigma", 1.0, 3.0)
    return np.clip(gaussian_blur(image, sigma), 0.0, 1.0), p.done()


def motion_kernel(rng: np.random.Generator, p: Params) -> np.ndarray:
    """Draw a straight or curved camera-shake PSF (sums to 1) with parameters recorded in ``p``."""
    length = p.uniform("length", 7.0, 25.0)
    angle = p.uniform("angle", 0.0, 360.0)
    trajectory = p.choice("trajectory", ("straight", "curved"), p=(0.4, 0.6))
    if trajectory == "curved":
        curvature = p.uniform("curvature", 0.5, 2.5) * (1 if rng.random() < 0.5 else -1)
    else:
        curvature = 0.0
    jitter = p.uniform("speed_jitter", 0.0, 0.6)
    steps = max(16, int(length * 4))
    phase = rng.uniform(0, 2 * np.pi)
    speed = 1.0 + jitter * np.sin(np.linspace(0, rng.uniform(1, 3) * np.pi, steps) + phase)
    # the sensor collects more light where the camera moves slowly
    return line_kernel(length, angle, width_sigma=0.0, curvature=curvature, speed_variation=1.0 / speed)


def motion_blurry(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Motion blur along a random straight or curved trajectory of 7-25 px."""
    p = Params(rng, overrides)
    kernel = motion_kernel(rng, p)
    out = fft_convolve(image, kernel)
    return np.clip(out, 0.0, 1.0), p.done()
