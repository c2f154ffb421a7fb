"""Weights as untrusted input: a model file is ``NAME.safetensors`` plus ``NAME.json``.

The JSON holds ``{"architecture": str, "format_version": int, "config": {...}}``; the network is
rebuilt from its typed config dataclass and the tensors are checked against it before loading.
Nothing is ever unpickled here.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.io import atomic
from engine.io.atomic import atomic_path
from engine.models.configs import ModelFileError, read_meta

FORMAT_VERSION = 1

Tensors = dict[str, torch.Tensor]


def save_model(module: torch.nn.Module, config, stem: str | Path, architecture: str,
               dtype: torch.dtype | None = None, pack: Callable[[Tensors], Tensors] | None = None) -> None:
    """Write ``stem.safetensors`` and ``stem.json`` (atomically) for ``module`` built from ``config``;
    ``pack`` may store some tensors in a smaller form (its loader's ``unpack`` restores them)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in module.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    if pack is not None:
        tensors = pack(tensors)
    meta = {"architecture": architecture, "format_version": FORMAT_VERSION, "config": dataclasses.asdict(config)}
    with atomic_path(stem.with_suffix(".safetensors")) as tmp:
        save_file(tensors, str(tmp), metadata={"architecture": architecture})
    atomic.write_json(stem.with_suffix(".json"), meta)


def build_dataclass(cls, data: dict, source: Path | str):
    """``cls(**data)`` for a dataclass read from a file (a model config, a recipe): unknown keys are
    an error, missing keys take their defaults, nested dataclass fields are built from their tables
    and lists become tuples. Every problem is a one-line :class:`ModelFileError` naming ``source``."""
    if not isinstance(data, dict):
        raise ModelFileError(f"{source}: config must be an object")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ModelFileError(f"{source}: unknown config keys {sorted(unknown)} for {cls.__name__}")
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        hint = hints.get(f.name)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = build_dataclass(hint, value, source)
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: bad config for {cls.__name__} ({exc})") from None


def read_config(stem: str | Path, architecture: str, cls):
    """Read ``stem.json``, check its architecture, and return ``cls(**config)``."""
    path = Path(stem).with_suffix(".json")
    meta = read_meta(path)
    if not isinstance(meta, dict) or meta.get("architecture") != architecture:
        got = meta.get("architecture") if isinstance(meta, dict) else None
        raise ModelFileError(f"{path}: unknown architecture {got!r}, expected {architecture!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: unsupported format_version {meta.get('format_version')!r}")
    return build_dataclass(cls, meta.get("config", {}), path)


def load_weights(module: torch.nn.Module, stem: str | Path, upgrade_key: Callable[[str], str] | None = None,
                 unpack: Callable[[Tensors, Path], Tensors] | None = None) -> None:
    """Load ``stem.safetensors`` into ``module``, refusing missing, extra or mis-shaped tensors;
    ``upgrade_key`` renames the tensors of an older layout first, ``unpack(tensors, path)`` restores
    what ``save_model``'s ``pack`` stored (raising :class:`ModelFileError`). The module's parameters and
    buffers become new tensors (``assign``): make optimizers after loading, not before."""
    path = Path(stem).with_suffix(".safetensors")
    if not path.is_file():
        raise ModelFileError(f"{path}: weights file not found")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: not a valid safetensors file ({str(exc).splitlines()[0]})") from None
    if upgrade_key is not None:
        tensors = {upgrade_key(k): v for k, v in tensors.items()}
    if unpack is not None:
        tensors = unpack(tensors, path)
    check_state_dict(module, tensors, path)
    expected = module.state_dict()
    # one copy into fresh torch storage (the file's tensors sit at unaligned offsets, which changes
    # kernels and their rounding), converted to the module's dtypes on the way (fp16 storage); the
    # module then takes these tensors (assign) instead of copying them into its initialised ones
    tensors = {k: v.to(expected[k].dtype, copy=True) for k, v in tensors.items()}
    module.load_state_dict(tensors, strict=True, assign=True)


def check_state_dict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ModelFileError(
            f"{source}: weights do not fit the architecture "
            f"(missing {len(missing)} e.g. {missing[:2]}, unexpected {len(extra)} e.g. {extra[:2]})"
        )
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ModelFileError(
                f"{source}: tensor {k!r} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
            )
