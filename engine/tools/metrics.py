"""Image quality metrics (PSNR, SSIM) from scikit-image, on float images in ``[0, 1]``.

Arrays are ``(H, W, 3)`` (or ``(H, W)``); the batch helpers take ``[B, 3, H, W]`` tensors (or arrays)
and return one value per image. Inputs outside ``[0, 1]`` are clipped first.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

MAX_PSNR = 100.0  # reported for identical images instead of infinity


def _prepare(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.clip(np.asarray(a, dtype=np.float64), 0.0, 1.0)
    b = np.clip(np.asarray(b, dtype=np.float64), 0.0, 1.0)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio in dB (data range 1); identical images give :data:`MAX_PSNR`."""
    a, b = _prepare(a, b)
    if np.array_equal(a, b):
        return MAX_PSNR
    return float(min(MAX_PSNR, peak_signal_noise_ratio(a, b, data_range=1.0)))


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB (data range 1) of a mean squared error; 0 gives :data:`MAX_PSNR`."""
    return MAX_PSNR if mse <= 0 else float(min(MAX_PSNR, -10.0 * np.log10(mse)))


def ssim(a, b) -> float:
    """Structural similarity (data range 1, Gaussian window as in Wang et al. 2004) over RGB channels."""
    a, b = _prepare(a, b)
    small = min(a.shape[:2])
    kwargs = {"channel_axis": -1} if a.ndim == 3 else {}
    if small < 7:  # skimage needs a window that fits the image
        win = small if small % 2 else small - 1
        return float(structural_similarity(a, b, data_range=1.0, win_size=max(1, win), **kwargs))
    return float(structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, **kwargs))


def _to_hwc_list(batch) -> list[np.ndarray]:
    arr = batch.detach().float().cpu().numpy() if hasattr(batch, "detach") else np.asarray(batch)
    if arr.ndim != 4:
        raise ValueError(f"expected a batch [B, C, H, W], got shape {arr.shape}")
    return [x.transpose(1, 2, 0) for x in arr]


def batch_psnr(pred, target) -> list[float]:
    """PSNR per image of two ``[B, 3, H, W]`` batches (tensors or arrays)."""
    return [psnr(p, t) for p, t in zip(_to_hwc_list(pred), _to_hwc_list(target), strict=True)]


def batch_ssim(pred, target) -> list[float]:
    """SSIM per image of two ``[B, 3, H, W]`` batches (tensors or arrays)."""
    return [ssim(p, t) for p, t in zip(_to_hwc_list(pred), _to_hwc_list(target), strict=True)]
