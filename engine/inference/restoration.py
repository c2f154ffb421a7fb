"""The restorer's inference contract: :class:`RestorationModel` (U-Net + IR-SDE sampler).

Contract for callers (the tiled runtime, evaluation, training validation):

* ``lq``: ``float32 [B, 3, h, w]`` in [0, 1], any size; ``predict`` pads (reflect) to a multiple of
  :attr:`RestorationModel.multiple` and crops back. Tiles that are already multiples avoid padding.
* ``condition``: the DA-CLIP embeddings ``[B, 3, cond_dim]`` (content; slot 1; slot 2), required
  when :attr:`conditioned`, ignored otherwise.
* ``stats``: with an ``image_stats`` network, the colour statistics of the whole photo
  (:meth:`RestorationModel.photo_statistics`) when ``lq`` is a tile of it; computed from ``lq`` when
  omitted. Every tile of a photo shares them, like the condition.
* ``steps=1`` is a deterministic restoration (one network call); more steps sample the IR-SDE
  reverse process (stochastic; pass a ``generator`` for reproducibility). Output in [0, 1].
* The network is local (no global normalisation or spatial attention): tiling with an overlap of
  :attr:`RestorationModel.receptive_radius` pixels matches the untiled result exactly.

Files: the restorer part of a model bundle (:mod:`engine.bundle`): its config (:class:`RestorerConfig`)
and its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.bundle import RESTORER, ModelBundle
from engine.inference.device import autocast
from engine.inference.sde import IRSDEConfig, IRSDEScheduler
from engine.models.serialization import load_weights, read_config, save_model
from engine.models.unet import ConditionalUNet, UNetConfig, image_statistics, upgrade_key

ARCHITECTURE = "photomend-restorer"


@dataclass(frozen=True)
class RestorerConfig:
    """The network's and the sampler's hyperparameters, saved together in the restorer's config file."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    sde: IRSDEConfig = field(default_factory=IRSDEConfig)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``[B, C, h, w]`` at the bottom/right (reflect, or replicate when too small) to multiples."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def sample(net: ConditionalUNet, scheduler: IRSDEScheduler, lq: torch.Tensor, condition: torch.Tensor | None,
           steps: int = 1, generator: torch.Generator | None = None,
           stats: torch.Tensor | None = None) -> torch.Tensor:
    """Run the IR-SDE reverse loop on an already padded batch; returns the (unclamped) restoration."""
    scheduler.set_timesteps(steps)
    x = scheduler.initial_sample(lq, generator)
    for t in scheduler.timesteps:
        x0_hat = net(x, lq, scheduler.network_time(t, lq.shape[0]).to(lq.device), condition, stats)
        x = scheduler.step(x0_hat.float(), int(t), x, lq, generator)
    return x


class RestorationModel:
    """A loaded restorer: ``predict(lq, condition, steps)``. Build with :meth:`from_dir` or directly."""

    def __init__(self, config: RestorerConfig, net: ConditionalUNet | None = None,
                 device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.net = (net or ConditionalUNet(config.unet)).to(self.device).eval()
        self.scheduler = IRSDEScheduler(config.sde)

    @classmethod
    def from_dir(cls, model_dir: Path | str, device: torch.device | str = "cpu") -> RestorationModel:
        """Load the restorer of the bundle in ``model_dir`` (ModelFileError if bad)."""
        stem = ModelBundle(Path(model_dir)).stem(RESTORER)
        config = read_config(stem, ARCHITECTURE, RestorerConfig)
        net = ConditionalUNet(config.unet)
        load_weights(net, stem, upgrade_key)
        return cls(config, net, device)

    def save(self, model_dir: Path | str, dtype: torch.dtype | None = None) -> None:
        """Write the restorer's config and weights into the bundle folder ``model_dir``."""
        save_model(self.net, self.config, ModelBundle(Path(model_dir)).stem(RESTORER), ARCHITECTURE, dtype=dtype)

    @property
    def multiple(self) -> int:
        """Tile height and width must be multiples of this to avoid padding inside :meth:`predict`."""
        return self.config.unet.multiple

    @property
    def cond_dim(self) -> int:
        return self.config.unet.cond_dim

    @property
    def conditioned(self) -> bool:
        return self.config.unet.conditioned

    @property
    def receptive_radius(self) -> int:
        """Theoretical receptive-field radius in pixels: a tile overlap of this much per side makes
        tiled and untiled results identical; in practice a quarter of it is visually seamless."""
        return self.config.unet.receptive_radius

    @torch.inference_mode()
    def photo_statistics(self, image: torch.Tensor) -> torch.Tensor | None:
        """The ``stats`` argument of :meth:`predict` for the tiles of ``image`` ``[B, 3, H, W]`` (the
        whole photos), or ``None`` when the network does not use them."""
        if not self.config.unet.image_stats:
            return None
        return image_statistics(image.to(self.device, torch.float32))

    @torch.inference_mode()
    def predict(self, lq: torch.Tensor, condition: torch.Tensor | None = None, steps: int = 1,
                generator: torch.Generator | None = None, stats: torch.Tensor | None = None) -> torch.Tensor:
        """Restore ``lq`` ``[B, 3, h, w]`` in [0, 1]; returns ``[B, 3, h, w]`` in [0, 1] on ``lq``'s device."""
        if lq.dim() != 4 or lq.shape[1] != 3:
            raise ValueError(f"expected lq of shape [B, 3, h, w], got {tuple(lq.shape)}")
        out_device = lq.device
        if not self.config.unet.image_stats:
            stats = None
        elif stats is None:
            stats = self.photo_statistics(lq)  # before padding: the padding is not part of the photo
        else:
            stats = stats.to(self.device, torch.float32)
        x, (h, w) = pad_to_multiple(lq.to(self.device, torch.float32), self.multiple)
        cond = None
        if self.conditioned:
            if condition is None:
                raise ValueError("this restorer is conditioned: pass the DA-CLIP condition [B, 3, cond_dim]")
            if tuple(condition.shape) != (lq.shape[0], 3, self.cond_dim):
                raise ValueError(f"condition must be [{lq.shape[0]}, 3, {self.cond_dim}], got {tuple(condition.shape)}")
            cond = condition.to(self.device, torch.float32)
        with autocast(self.device):
            y = sample(self.net, self.scheduler, x, cond, steps, generator, stats)
        return y[..., :h, :w].float().clamp_(0, 1).to(out_device)
