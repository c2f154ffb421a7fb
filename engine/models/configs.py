"""Typed hyperparameters of the restorer, free of torch so that recipes and the CLI load fast, and the
reading of a model's config file (shared by the model bundle and the weights loader).

:class:`UNetConfig` builds :class:`engine.models.unet.ConditionalUNet`; :class:`IRSDEConfig`
builds :class:`engine.inference.sde.IRSDEScheduler`. Both are saved beside the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.io.atomic import one_line


class ModelFileError(ValueError):
    """A model file that is missing, malformed or does not fit its architecture (one line, names the file)."""


def read_meta(path: Path):
    """The JSON in a model's config file (any JSON value: the callers check its shape), or a one-line
    :class:`ModelFileError` naming the file when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model config not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: unreadable model config ({one_line(exc)})") from None


@dataclass(frozen=True)
class UNetConfig:
    """Hyperparameters of :class:`ConditionalUNet` (saved beside the weights).

    ``base_channels`` at the first level (half resolution after the ``stem_factor`` unshuffle),
    multiplied by ``channel_mult[i]`` at level ``i``; ``num_res_blocks`` residual blocks per level
    in the encoder and in the decoder; ``attention_levels`` lists the levels (0 = finest) with
    cross-attention to the condition tokens; ``cond_dim`` is the DA-CLIP embedding size.
    ``global_affine`` adds a per-image colour correction: a gain and an offset per channel applied
    to the whole LQ image (see :class:`engine.models.unet.GlobalAffine`), predicted from the
    condition (conditioned networks) and, with ``image_stats``, from colour statistics of the whole
    LQ photo (:func:`engine.models.unet.image_statistics`; the ablation gets those too).
    """

    in_channels: int = 3
    base_channels: int = 24
    channel_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2, 3)
    attention_heads: int = 4
    stem_factor: int = 2
    time_dim: int = 128
    cond_dim: int = 192
    num_cond_tokens: int = 3
    conditioned: bool = True
    global_affine: bool = False
    image_stats: bool = False

    @property
    def has_global_affine(self) -> bool:
        return self.global_affine and (self.conditioned or self.image_stats)

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this (callers pad)."""
        return self.stem_factor * 2 ** (len(self.channel_mult) - 1)

    @property
    def receptive_radius(self) -> int:
        """Theoretical receptive-field radius in input pixels (the effective one is much smaller)."""
        r = self.stem_factor
        radius = 2 * r  # stem and head convolutions
        for i in range(len(self.channel_mult)):
            scale = r * 2**i
            passes = 1 if i == len(self.channel_mult) - 1 else 2  # encoder and decoder, bottom once
            radius += passes * (2 * self.num_res_blocks * scale + scale)  # two 3x3 convs per block + resampling
        return radius


@dataclass(frozen=True)
class IRSDEConfig:
    """``num_train_timesteps`` discrete steps; ``max_sigma`` is the stationary std ``lambda`` (in [0, 1]
    image units); ``eps`` fixes the schedule's length: ``exp(-theta_bar_T) = eps`` (IR-SDE: 0.005)."""

    num_train_timesteps: int = 100
    max_sigma: float = 10.0 / 255.0
    eps: float = 0.005
    schedule: str = "cosine"
