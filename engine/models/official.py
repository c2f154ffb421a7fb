"""Load the official DA-CLIP checkpoint layout (``daclip_ViT-B-32.pt``) as a one-slot :class:`DaClip`.

The official ``DaCLIP`` module's state dict holds

* ``clip.*``: an open_clip ``CLIP`` (same key names as the installed open_clip),
* ``visual.*``: an alias of ``clip.visual`` (dropped here),
* ``visual_control.*``: the controller, a copy of the image tower whose transformer is wrapped:
  ``visual_control.transformer.transformer.resblocks.N.*`` are its blocks and
  ``visual_control.transformer.zero_modules.N.{weight,bias}`` the zero-initialised linears;
  ``visual_control.proj`` projects its pooled token to the degradation embedding,
* ``logit_scale``.

The file may also be a training checkpoint ``{"state_dict": ..., ...}`` with DDP's ``module.``
prefix. It is read with ``torch.load(weights_only=True)``; nothing else is unpickled. Its
vocabulary is the ten official degradation names, each used as its own prompt.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from engine.models.daclip import DaClip, DaClipConfig
from engine.models.serialization import ModelFileError, check_state_dict
from engine.vocab import OFFICIAL_DACLIP_DEGRADATIONS


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official DA-CLIP ``.pt`` file (weights only) and return its flat state dict."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # pickle errors, refused globals, truncated files
        raise ModelFileError(f"{path}: not a readable weights-only checkpoint ({str(exc).splitlines()[0]})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(f"{path}: not a DA-CLIP state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _count_blocks(sd: dict, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    return max(found) + 1 if found else 0


def config_from_official(sd: dict[str, torch.Tensor], head_width: int = 64, source: str = "checkpoint") -> DaClipConfig:
    """Infer the open_clip CLIP config of an official DA-CLIP state dict from its tensor shapes.

    Head counts are not visible in the weights: ``head_width`` (64 for every official CLIP) sets them.
    """
    try:
        conv = sd["clip.visual.conv1.weight"]
        width, patch = int(conv.shape[0]), int(conv.shape[-1])
        grid = int(round((sd["clip.visual.positional_embedding"].shape[0] - 1) ** 0.5))
        embed_dim = int(sd["clip.visual.proj"].shape[1])
        text_width = int(sd["clip.ln_final.weight"].shape[0])
        vision_cfg = {
            "image_size": grid * patch,
            "patch_size": patch,
            "width": width,
            "layers": _count_blocks(sd, "clip.visual.transformer.resblocks."),
            "head_width": min(head_width, width),
        }
        text_cfg = {
            "context_length": int(sd["clip.positional_embedding"].shape[0]),
            "vocab_size": int(sd["clip.token_embedding.weight"].shape[0]),
            "width": text_width,
            "heads": max(1, text_width // min(head_width, text_width)),
            "layers": _count_blocks(sd, "clip.transformer.resblocks."),
        }
    except KeyError as exc:
        raise ModelFileError(f"{source}: not the official DA-CLIP layout (missing {exc})") from None
    return DaClipConfig(
        clip_model="official-daclip",
        clip_cfg={"embed_dim": embed_dim, "vision_cfg": vision_cfg, "text_cfg": text_cfg},
        vocabulary=OFFICIAL_DACLIP_DEGRADATIONS,
        prompts=OFFICIAL_DACLIP_DEGRADATIONS,
        none_prompt="",
        n_slots=1,
    )


def official_to_project(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official DA-CLIP keys to :class:`DaClip` keys."""
    out = {}
    for k, v in sd.items():
        if k.startswith("visual."):
            continue  # alias of clip.visual
        if k.startswith("visual_control.transformer.transformer."):
            out["controller.transformer." + k.removeprefix("visual_control.transformer.transformer.")] = v
        elif k.startswith("visual_control.transformer.zero_modules."):
            out["zero_linears." + k.removeprefix("visual_control.transformer.zero_modules.")] = v
        elif k == "visual_control.proj":
            out["slot_proj"] = v.unsqueeze(0)
        elif k.startswith("visual_control."):
            out["controller." + k.removeprefix("visual_control.")] = v
        else:
            out[k] = v
    return out


def load_official(path: str | Path, head_width: int = 64) -> DaClip:
    """Build a one-slot :class:`DaClip` from an official DA-CLIP checkpoint file."""
    sd = read_official_state_dict(path)
    return model_from_official_state_dict(sd, head_width=head_width, source=str(path))


def model_from_official_state_dict(sd: dict[str, torch.Tensor], head_width: int = 64,
                                   source: str = "checkpoint") -> DaClip:
    """Build a one-slot :class:`DaClip` from an official DA-CLIP state dict."""
    cfg = config_from_official(sd, head_width=head_width, source=source)
    model = DaClip(cfg)
    tensors = official_to_project(sd)
    expected = model.state_dict()
    check_state_dict(model, tensors, Path(source))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
    return model.eval()
