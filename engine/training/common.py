"""Training plumbing shared by the DA-CLIP and restorer trainers.

Recipes are TOML files loaded into typed dataclasses (:func:`load_recipe`); runs write
``RUN_DIR/checkpoint.safetensors`` (model weights) plus ``RUN_DIR/trainer_state.pt`` (optimizer,
step, RNG; plain tensors and numbers, loaded with ``weights_only=True``) so an interrupted run
resumes. DDP through ``torchrun`` (NCCL on CUDA, gloo on CPU). Training's own errors
(:class:`RecipeError`, :class:`TrainingDataError`) are turned into one-line usage errors by the
command line (:mod:`engine.commands.train`); nothing here imports it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from pathlib import Path

import tomllib
import torch
import torch.distributed as dist

from engine.io.atomic import atomic_path
from engine.models.serialization import build_dataclass


class RecipeError(ValueError):
    """A recipe file that is missing or malformed, or settings that exclude each other (one line
    naming the file or the settings). The CLI prints it as a usage error (exit status 2)."""


class TrainingDataError(ValueError):
    """The photos, run folder or models that a run is given do not fit it: no photos, nothing to
    resume, a conditioning that differs from the run's (one line naming the path). The CLI prints it
    as a usage error (exit status 2)."""


def load_recipe(path: str | Path, cls):
    """Load a TOML recipe into dataclass ``cls``; unknown keys are an error, missing keys take defaults."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"{path}: unreadable recipe ({exc})") from None
    try:
        return build_dataclass(cls, data, path)
    except ValueError as exc:
        raise RecipeError(str(exc)) from None


def override(cfg, **changes):
    """``dataclasses.replace`` ignoring ``None`` values (CLI flags that were not given)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed() -> DistInfo:
    """Initialise DDP when launched by ``torchrun`` (env ``WORLD_SIZE`` > 1); otherwise single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def cleanup_distributed() -> None:
    """Leave the process group once every rank is done: rank 0 validates and writes checkpoints
    after the others finish their last step, and a gloo group torn down under it aborted a rank."""
    if dist.is_initialized():
        if sys.exc_info()[0] is None:  # not while an error unwinds: the other ranks may never arrive
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


class EMA:
    """Exponential moving average of a module's parameters (used for the restorer's released weights)."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # warm-up so early weights do not dominate
        for s, p in zip(self.shadow.state_dict().values(), module.state_dict().values(), strict=True):
            if s.is_floating_point():
                s.mul_(d).add_(p.detach(), alpha=1 - d)
            else:
                s.copy_(p)


def save_trainer_state(run_dir: Path, state: dict) -> None:
    """Atomically write optimizer/scheduler/step state (tensors, numbers, strings only)."""
    with atomic_path(run_dir / "trainer_state.pt") as tmp:
        torch.save(state, tmp)


def load_trainer_state(run_dir: Path) -> dict | None:
    path = run_dir / "trainer_state.pt"
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
