"""A small convolutional image tower for DA-CLIP that sees pixel-level damage: ``UnshuffleConvTower``.

open_clip's towers downsample early (a ViT patchifies at 12-16 px; ``ModifiedResNet`` strides its first
3x3 convolution into a few channels), which erases exactly what a degradation detector must see at
native resolution: sensor noise, JPEG's 8 px blocks, the direction of a motion streak. This tower
starts with a lossless 2x2 pixel-unshuffle (every pixel kept, as channels) and one 3x3 convolution at
1/2 of the input, then strided residual stages at 1/4, 1/8, 1/16 and 1/32, and summarises the last
stage by its mean and its max (damage may fill the view or sit in one corner) projected to
``output_dim``. At 128 px it costs about as much per view as open_clip's ``ModifiedResNet`` of width 16.

It is built from the ``vision_cfg`` of a project CLIP config with ``"tower": "unshuffle-conv"``
(``engine/models/clip_configs/PhotoMend-UC-128.json``); :class:`~engine.models.daclip.DaClip` puts it
in place of open_clip's image tower, so the text tower, the tokenizer and the ``CLIP`` class stay
open_clip's. It exposes what the controller needs, like ``ModifiedResNet``: ``stem``, the residual
``blocks`` (one control signal is added after each) and ``attnpool`` (here the mean/max pooling).
"""

from __future__ import annotations

import torch
from torch import nn

TOWER_NAME = "unshuffle-conv"


class ResidualStage(nn.Module):
    """conv(stride) -> BN -> ReLU -> conv -> BN, plus a (strided 1x1) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.out_channels = cout
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(y)) + self.shortcut(x))


class MeanMaxPool(nn.Module):
    """``[B, C, H, W] -> [B, output_dim]``: the spatial mean and max, concatenated and projected."""

    def __init__(self, channels: int, output_dim: int):
        super().__init__()
        self.proj = nn.Linear(2 * channels, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1))


class UnshuffleConvTower(nn.Module):
    """Image tower: ``[B, 3, S, S]`` (CLIP-normalised) -> ``[B, output_dim]``."""

    def __init__(self, image_size: int, widths: tuple[int, ...] = (32, 48, 64, 96), output_dim: int = 192,
                 unshuffle: int = 2, stem_width: int = 24):
        super().__init__()
        if image_size % (unshuffle * 2 ** len(widths)):
            raise ValueError(f"image_size {image_size} must be a multiple of {unshuffle * 2 ** len(widths)}")
        self.image_size = image_size
        self.output_dim = output_dim
        self.stem = nn.Sequential(nn.PixelUnshuffle(unshuffle),
                                  nn.Conv2d(3 * unshuffle * unshuffle, stem_width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True))
        stages, cin = [], stem_width
        for w in widths:
            stages.append(ResidualStage(cin, w, 2))
            cin = w
        self.blocks = nn.ModuleList(stages)
        self.attnpool = MeanMaxPool(cin, output_dim)

    @classmethod
    def from_config(cls, vision_cfg: dict, embed_dim: int) -> UnshuffleConvTower:
        unknown = set(vision_cfg) - {"tower", "image_size", "widths", "unshuffle", "stem_width"}
        if unknown:
            raise ValueError(f"unknown {TOWER_NAME} tower setting(s): {', '.join(sorted(unknown))}")
        return cls(int(vision_cfg["image_size"]), tuple(vision_cfg.get("widths", (32, 48, 64, 96))), embed_dim,
                   int(vision_cfg.get("unshuffle", 2)), int(vision_cfg.get("stem_width", 24)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.attnpool(x)


def is_custom_tower(vision_cfg: dict) -> bool:
    return vision_cfg.get("tower") == TOWER_NAME


# open_clip builds a CLIP from a vision config of its own kinds; this small one stands in for the
# image tower while the CLIP is built, and is replaced at once by the tower above
STAND_IN_VISION_CFG = {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16}
