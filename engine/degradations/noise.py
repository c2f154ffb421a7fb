"""``noisy``: sensor noise in sRGB.

Severity (drawn per call, overridable by keyword):

* ``variant``: ``"gaussian"`` (60%) or ``"poisson-gaussian"`` (40%).
* gaussian: ``sigma`` 5-50 on the 0-255 scale (uniform), stored as ``sigma_255``.
* poisson-gaussian: ``peak`` 10-1000 photons at white (log-uniform; signal-dependent shot noise,
  about 50/255 down to 5/255 at mid-grey) plus read noise ``read_sigma_255`` 1-10.
* ``chroma``: probability 0.75 of independent noise per channel, else the same noise in all three
  channels (luminance noise).
"""

from __future__ import annotations

import numpy as np

from engine.degradations._common import Params


def _normal(rng: np.random.Generator, shape: tuple[int, ...], chroma: bool) -> np.ndarray:
    if chroma:
        return rng.standard_normal(shape, dtype=np.float32)
    n = rng.standard_normal(shape[:2] + (1,), dtype=np.float32)
    return np.broadcast_to(n, shape)


def noisy(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Add Gaussian or Poisson-Gaussian noise; see the module docstring for the ranges."""
    p = Params(rng, overrides)
    variant = p.choice("variant", ("gaussian", "poisson-gaussian"), p=(0.6, 0.4))
    chroma = bool(p.choice("chroma", (True, False), p=(0.75, 0.25)))
    if variant == "gaussian":
        sigma = p.uniform("sigma_255", 5.0, 50.0) / 255.0
        out = image + sigma * _normal(rng, image.shape, chroma)
    elif variant == "poisson-gaussian":
        peak = p.log_uniform("peak", 10.0, 1000.0)
        read = p.uniform("read_sigma_255", 1.0, 10.0) / 255.0
        shot_std = np.sqrt(np.clip(image, 0.0, 1.0) / peak)
        out = image + shot_std * _normal(rng, image.shape, chroma) + read * _normal(rng, image.shape, chroma)
    else:
        raise ValueError(f"noisy: unknown variant {variant!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32), p.done()
