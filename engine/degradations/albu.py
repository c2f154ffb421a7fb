"""A second renderer for every degradation, drawn with albumentations (domain randomisation).

Each function has the project's degradation signature ``fn(image, rng, **overrides) -> (out, params)``
(float32 ``(H, W, 3)`` in ``[0, 1]``). The severity is drawn from ``rng`` here, with the project's wide
ranges (noise sigma 5-50 of 255, blur sigma 0.8-4, JPEG quality 10-90, motion kernels up to 25 px);
albumentations renders it, seeded from ``rng``, so one seed gives one image. Scene elements (rain
streaks, drop sizes, shadows) are sized for the image's short side, as a whole photo would be.

albumentations is imported on first use: inference never pays for it.
"""

from __future__ import annotations

import functools

import numpy as np

from engine.degradations._common import Params, size_scale
from engine.vocab import by_name


@functools.lru_cache(maxsize=1)
def _albumentations():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import albumentations

    return albumentations


def _render(transform, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply one albumentations transform (``p=1``) to a float image via uint8, seeded from ``rng``."""
    A = _albumentations()
    pipeline = A.Compose([transform], seed=int(rng.integers(2**31 - 1)))
    u8 = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    out = pipeline(image=u8)["image"]
    return out.astype(np.float32) / 255.0


def _odd(value: float) -> int:
    v = max(3, int(round(value)))
    return v if v % 2 else v + 1


def noisy(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Gaussian (sigma 5-50 of 255), ISO (colour shift + intensity) or shot noise."""
    A, p = _albumentations(), Params(rng, overrides)
    variant = p.choice("variant", ("gauss", "iso", "shot"), p=(0.5, 0.25, 0.25))
    if variant == "gauss":
        sigma = p.uniform("sigma_255", 5.0, 50.0) / 255.0
        t = A.GaussNoise(std_range=(sigma, sigma), per_channel=bool(p.choice("per_channel", (True, False))), p=1.0)
    elif variant == "iso":
        shift, intensity = p.uniform("color_shift", 0.01, 0.06), p.uniform("intensity", 0.3, 1.0)
        t = A.ISONoise(color_shift=(shift, shift), intensity=(intensity, intensity), p=1.0)
    else:
        scale = p.log_uniform("scale", 0.05, 0.6)
        t = A.ShotNoise(scale_range=(scale, scale), p=1.0)
    return _render(t, image, rng), p.done()


def blurry(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Gaussian blur (sigma 0.8-4) or a defocus disc (radius 2-8 px)."""
    A, p = _albumentations(), Params(rng, overrides)
    if p.choice("variant", ("gaussian", "defocus")) == "gaussian":
        sigma = p.uniform("sigma", 0.8, 4.0)
        t = A.GaussianBlur(blur_limit=0, sigma_limit=(sigma, sigma), p=1.0)
    else:
        radius = p.integer("radius", 2, 8)
        alias = p.uniform("alias_blur", 0.1, 0.5)
        t = A.Defocus(radius=(radius, radius), alias_blur=(alias, alias), p=1.0)
    return _render(t, image, rng), p.done()


def motion_blurry(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """A straight motion kernel of 7-25 px at any angle, centred or shifted."""
    A, p = _albumentations(), Params(rng, overrides)
    k = _odd(p.uniform("length", 7.0, 25.0))
    t = A.MotionBlur(blur_limit=(k, k), angle_range=(0, 360), direction_range=(-1.0, 1.0), allow_shifted=True, p=1.0)
    p.set("kernel", k)
    return _render(t, image, rng), p.done()


def jpeg_compressed(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """OpenCV's JPEG encoder (4:2:0 chroma) at quality 10-90."""
    A, p = _albumentations(), Params(rng, overrides)
    q = p.integer("quality", 10, 90)
    return _render(A.ImageCompression(compression_type="jpeg", quality_range=(q, q), p=1.0), image, rng), p.done()


def low_light(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Underexposure: a darkening gamma (1.6-4) then lower brightness and contrast."""
    A, p = _albumentations(), Params(rng, overrides)
    gamma = p.uniform("gamma", 1.6, 4.0)
    bright = p.uniform("brightness", -0.35, -0.05)
    contrast = p.uniform("contrast", -0.5, -0.1)
    t = A.Compose([A.RandomGamma(gamma_limit=(gamma * 100, gamma * 100), p=1.0),
                   A.RandomBrightnessContrast(brightness_limit=(bright, bright), contrast_limit=(contrast, contrast),
                                              p=1.0)])
    return _render(t, image, rng), p.done()


def hazy(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """albumentations' fog of 0.3-1 density."""
    A, p = _albumentations(), Params(rng, overrides)
    coef = p.uniform("fog_coef", 0.3, 1.0)
    alpha = p.uniform("alpha_coef", 0.04, 0.15)
    return _render(A.RandomFog(fog_coef_range=(coef, coef), alpha_coef=alpha, p=1.0), image, rng), p.done()


def rainy(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Rain streaks: drizzle to torrential, slanted up to 20 degrees, sized for the image."""
    A, p = _albumentations(), Params(rng, overrides)
    scale = size_scale(image)
    kind = p.choice("rain_type", ("default", "drizzle", "heavy", "torrential"))
    slant = p.uniform("slant", -20.0, 20.0)
    length = max(4, int(round(p.uniform("drop_length", 8.0, 30.0) * scale)))
    grey = p.integer("drop_grey", 170, 235)
    t = A.RandomRain(slant_range=(slant, slant), drop_length=length, drop_width=1 + int(scale > 2.0),
                     drop_color=(grey, grey, grey), blur_value=p.integer("blur_value", 3, 7),
                     brightness_coefficient=p.uniform("brightness", 0.6, 0.95), rain_type=kind, p=1.0)
    return _render(t, image, rng), p.done()


def snowy(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """albumentations' snow: bleached bright areas, or a snow texture with a veil."""
    A, p = _albumentations(), Params(rng, overrides)
    method = p.choice("method", ("bleach", "texture"), p=(0.2, 0.8))
    amount = p.uniform("snow_point", 0.1, 0.5) if method == "texture" else p.uniform("snow_point", 0.05, 0.25)
    bright = p.uniform("brightness", 1.5, 2.5) if method == "texture" else p.uniform("brightness", 1.1, 1.6)
    t = A.RandomSnow(snow_point_range=(amount, amount), brightness_coeff=bright, method=method, p=1.0)
    return _render(t, image, rng), p.done()


def raindrop(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """albumentations' Spatter in rain mode: water splashes with refraction-like blur.

    The drops are where the blurred liquid layer (mean ``mean``) exceeds ``cutout_threshold``; a threshold
    more than about 0.1 above the mean leaves no drop at all (a "raindrop" label on a clean image, 17 % of
    draws when the two were drawn apart), so the threshold is drawn relative to the mean."""
    A, p = _albumentations(), Params(rng, overrides)
    mean = p.uniform("mean", 0.55, 0.7)
    cutout = p.uniform("cutout_threshold", mean - 0.1, mean + 0.06)
    sigma = p.uniform("gauss_sigma", 1.5, 4.0) * max(1.0, size_scale(image))
    intensity = p.uniform("intensity", 0.4, 0.8)
    t = A.Spatter(mean=(mean, mean), std=(0.3, 0.3), gauss_sigma=(sigma, sigma), cutout_threshold=(cutout, cutout),
                  intensity=(intensity, intensity), mode="rain", p=1.0)
    return _render(t, image, rng), p.done()


def shadowed(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """1-3 polygonal shadows anywhere in the image, 30-80% darker."""
    A, p = _albumentations(), Params(rng, overrides)
    n = p.integer("shadows", 1, 3)
    lo = p.uniform("intensity", 0.3, 0.8)
    t = A.RandomShadow(shadow_roi=(0.0, 0.0, 1.0, 1.0), num_shadows_limit=(n, n),
                       shadow_dimension=p.integer("vertices", 3, 7), shadow_intensity_range=(lo, lo), p=1.0)
    return _render(t, image, rng), p.done()


def uncompleted(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Rectangular holes (2-8, 5-25% of the side each) filled white, black or with noise."""
    A, p = _albumentations(), Params(rng, overrides)
    n = p.integer("holes", 2, 8)
    fill = p.choice("fill", ("white", "black", "random"), p=(0.6, 0.2, 0.2))
    value = {"white": 255, "black": 0, "random": "random"}[fill]
    t = A.CoarseDropout(num_holes_range=(n, n), hole_height_range=(0.05, 0.25), hole_width_range=(0.05, 0.25),
                        fill=value, p=1.0)
    return _render(t, image, rng), p.done()


RENDERER = by_name(globals())
