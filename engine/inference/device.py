"""Device choice shared by inference and training: CUDA, then Apple MPS, then CPU, or forced."""

from __future__ import annotations

import contextlib

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; anything else (``cpu``, ``cuda:1``, ``mps``) is forced."""
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available")
    return device


def autocast(device: torch.device, enabled: bool = True):
    """fp16/bf16 autocast on a GPU, a no-op on CPU."""
    if not enabled or device.type not in ("cuda", "mps"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def available_devices() -> list[str]:
    """Names a user may choose: ``auto``, ``cpu`` and each GPU."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names
