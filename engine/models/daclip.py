"""DA-CLIP with a degradation controller that has one or two degradation slots.

The network is built on the installed ``open_clip`` (its ``CLIP`` class, vision and text towers,
tokenizer); nothing of open_clip is copied. The project's small CLIP configs live in
``engine/models/clip_configs/*.json`` and are registered with :func:`open_clip.add_model_config`
by :func:`register_clip_configs`.

Architecture (DA-CLIP, Luo et al. 2024, extended to two slots):

* ``clip``: a frozen open_clip ``CLIP``. Its image tower gives the **content** embedding.
* ``controller``: a trainable copy of the image tower. After each of its residual blocks the
  features pass through a zero-initialised linear layer (``zero_linears``) and are added to the
  output of a block of the frozen tower. Because the linears start at zero, a fresh controller
  leaves the content embedding exactly equal to the frozen encoder's. Two image towers of
  open_clip are supported:

  - ``VisionTransformer`` (``vision_cfg.layers`` an int): a ``Linear`` on the tokens; as in the
    official DA-CLIP code, the controller's last block feeds the frozen tower's first block
    (reversed order).
  - ``ModifiedResNet`` (``vision_cfg.layers`` a list; the bundled CPU default, because a small
    convolutional tower learns pixel-level damage such as noise and JPEG blocks far faster from
    scratch than a small ViT): a 1x1 convolution (a per-pixel linear layer) on each bottleneck
    block's output, added to the output of the frozen tower's block at the same position (the
    stages have different shapes, so the order cannot be reversed). The frozen tower's batch
    norms stay in eval mode while the controller trains.
* ``slot_proj``: one projection per slot applied to the controller's pooled output gives the
  **degradation embeddings** (2 slots for PhotoMend models, 1 for official DA-CLIP checkpoints).
* Prototypes: the text tower encodes one prompt per vocabulary name plus, for two-slot models,
  a prompt for ``none`` (an empty slot). Each slot is scored by cosine similarity times the
  learned ``logit_scale`` and a softmax over the prototypes.

Input contract: ``images`` are ``float32 [B, 3, S, S]`` in ``[0, 1]`` at the model's
``image_size`` S; the model applies CLIP's mean/std normalisation itself.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.bundle import DETECTOR, ModelBundle
from engine.models.configs import ModelFileError
from engine.models.conv_tower import STAND_IN_VISION_CFG, UnshuffleConvTower, is_custom_tower
from engine.models.serialization import Tensors, load_weights, read_config, save_model
from engine.vocab import DEGRADATIONS, NONE, PHYSICAL_ORDER

ARCHITECTURE = "daclip-slots"
CLIP_CONFIG_DIR = Path(__file__).parent / "clip_configs"
DEFAULT_CLIP_MODEL = "PhotoMend-RN-96"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_registered = False


def register_clip_configs() -> None:
    """Register the project's small open_clip configs (idempotent)."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CLIP_CONFIG_DIR)
        _registered = True


def clip_config(model_name: str) -> dict:
    """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) registered as ``model_name``."""
    register_clip_configs()
    import open_clip

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(f"unknown open_clip model {model_name!r}")
    return {k: copy.deepcopy(cfg[k]) for k in ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu") if k in cfg}


def name_prompt(name: str) -> str:
    """Prompt of one prototype: ``"a noisy photo"``, ``"a clean photo"`` for ``none``."""
    return "a clean photo" if name == NONE else f"a {name} photo"


def set_caption(names) -> str:
    """Caption of a degradation set in physical order: ``"a hazy and noisy photo"``."""
    names = sorted({n for n in names if n != NONE}, key=PHYSICAL_ORDER.index)
    if not names:
        return name_prompt(NONE)
    return f"a {' and '.join(names)} photo"


def all_sets(vocabulary: tuple[str, ...], max_size: int = 2) -> list[tuple[str, ...]]:
    """Every set of at most ``max_size`` names (the empty set first), each in physical order."""
    out: list[tuple[str, ...]] = [()]
    for k in range(1, max_size + 1):
        for combo in itertools.combinations(vocabulary, k):
            out.append(tuple(sorted(combo, key=PHYSICAL_ORDER.index)))
    return out


@dataclasses.dataclass(frozen=True)
class DaClipConfig:
    """Everything needed to rebuild a :class:`DaClip` network (stored in the detector's config file).

    ``clip_cfg``: open_clip ``CLIP`` keyword arguments (``embed_dim``, ``vision_cfg``, ``text_cfg``).
    ``vocabulary``: degradation names (``none`` excluded). ``prompts``: one text prompt per name;
    ``none_prompt``: prompt of the empty slot (two-slot models) or ``""`` (official one-slot).
    ``thresholds``: the score at which each vocabulary name counts as detected, in vocabulary order
    (``photomend detect --calibrate``); empty means 0.5 for every name.
    ``presence``: the model has a :class:`PresenceHead` (detector v2; ResNet towers only), which reads
    the controller's pooled features of a photo's global view and native crops together and gives one
    sigmoid probability per vocabulary name; detection then uses it instead of the slot softmax.
    ``n_crops``: how many native crops the detector saw beside the global view in training; detection
    uses as many unless told otherwise (0: not recorded, the detector's default).
    """

    clip_model: str = DEFAULT_CLIP_MODEL
    clip_cfg: dict = dataclasses.field(default_factory=dict)
    vocabulary: tuple[str, ...] = DEGRADATIONS
    prompts: tuple[str, ...] = tuple(name_prompt(n) for n in DEGRADATIONS)
    none_prompt: str = name_prompt(NONE)
    n_slots: int = 2
    thresholds: tuple[float, ...] = ()
    presence: bool = False
    presence_hidden: int = 256
    n_crops: int = 0  # native crops per photo in training (the presence head's view count); 0: not recorded

    def __post_init__(self) -> None:
        if self.thresholds:
            if len(self.thresholds) != len(self.vocabulary):
                raise ValueError(f"thresholds: {len(self.thresholds)} values for {len(self.vocabulary)} names")
            if not all(isinstance(t, (int, float)) and 0.0 < t < 1.0 for t in self.thresholds):
                raise ValueError("thresholds must be numbers between 0 and 1 (exclusive)")

    @property
    def image_size(self) -> int:
        size = self.clip_cfg["vision_cfg"]["image_size"]
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def context_length(self) -> int:
        return int(self.clip_cfg["text_cfg"].get("context_length", 77))

    @property
    def classes(self) -> tuple[str, ...]:
        """Prototype names in logit order: the vocabulary, then ``none`` when the model has one."""
        return self.vocabulary + ((NONE,) if self.none_prompt else ())

    @classmethod
    def for_clip_model(cls, clip_model: str = DEFAULT_CLIP_MODEL, **kwargs) -> DaClipConfig:
        return cls(clip_model=clip_model, clip_cfg=clip_config(clip_model), **kwargs)


class PresenceHead(nn.Module):
    """Per-name presence logits of one photo from its views' pooled features.

    ``glob [B, D]`` is the global view's feature, ``crops [B, K, D]`` the native crops' (``K`` may be 0:
    the global view stands in). The crops are summarised by their mean (what most of the photo shows)
    and their max (damage in one corner, e.g. a missing region), so any number of crops can be read.
    """

    def __init__(self, dim: int, n_names: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(3 * dim), nn.Linear(3 * dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, n_names))

    def forward(self, glob: torch.Tensor, crops: torch.Tensor | None = None) -> torch.Tensor:
        if crops is None or crops.shape[1] == 0:
            crops = glob[:, None]
        return self.net(torch.cat([glob, crops.mean(1), crops.amax(1)], dim=-1))


def is_resnet_tower(visual: nn.Module) -> bool:
    """True for a convolutional tower (open_clip's ``ModifiedResNet`` or the project's
    :class:`~engine.models.conv_tower.UnshuffleConvTower`), False for a ``VisionTransformer``."""
    return hasattr(visual, "attnpool") and (hasattr(visual, "layer4") or hasattr(visual, "blocks"))


def _resnet_blocks(visual: nn.Module) -> list[nn.Module]:
    if hasattr(visual, "blocks"):
        return list(visual.blocks)
    return [block for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4) for block in layer]


def _block_width(block: nn.Module) -> int:
    return block.out_channels if hasattr(block, "out_channels") else block.conv3.out_channels


def _run_resnet(visual: nn.Module, x: torch.Tensor, control: list[torch.Tensor] | None = None,
                zero_convs: nn.ModuleList | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run a ``ModifiedResNet`` on normalised images ``x`` up to its attention pool.

    ``control``: tensors added to the output of the block at the same position.
    ``zero_convs``: when given, returns ``zero_convs[i](block_i output)`` for every block.
    """
    x = visual.stem(x)
    hiddens = []
    for i, block in enumerate(_resnet_blocks(visual)):
        x = block(x)
        if zero_convs is not None:
            hiddens.append(zero_convs[i](x))
        if control is not None:
            x = x + control[i]
    return visual.attnpool(x), hiddens


def _run_blocks(visual: nn.Module, x: torch.Tensor, control: list[torch.Tensor] | None = None,
                zero_linears: nn.ModuleList | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run an open_clip ``VisionTransformer``'s residual blocks on embedded tokens ``x`` (NLD).

    ``control``: tensors added to the block outputs (block i gets ``control[-1 - i]``).
    ``zero_linears``: when given, returns ``zero_linears[i](block_i output)`` for every block.
    """
    transformer = visual.transformer
    batch_first = getattr(transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    hiddens = []
    n = len(transformer.resblocks)
    for i, block in enumerate(transformer.resblocks):
        x = block(x)
        if zero_linears is not None:
            h = zero_linears[i](x)
            hiddens.append(h if batch_first else h.transpose(0, 1))
        if control is not None:
            c = control[n - 1 - i]
            x = x + (c if batch_first else c.transpose(0, 1))
    if not batch_first:
        x = x.transpose(0, 1)
    return x, hiddens


class DaClip(nn.Module):
    """Frozen open_clip CLIP + degradation controller with ``cfg.n_slots`` slot embeddings."""

    def __init__(self, cfg: DaClipConfig):
        super().__init__()
        import open_clip

        if not cfg.clip_cfg:
            cfg = dataclasses.replace(cfg, clip_cfg=clip_config(cfg.clip_model))
        if len(cfg.prompts) != len(cfg.vocabulary):
            raise ValueError("prompts must give one prompt per vocabulary name")
        if cfg.n_slots not in (1, 2):
            raise ValueError("n_slots must be 1 or 2")
        self.cfg = cfg
        vision_cfg = cfg.clip_cfg["vision_cfg"]
        if is_custom_tower(vision_cfg):  # the project's tower in place of open_clip's image tower
            self.clip = open_clip.CLIP(**{**cfg.clip_cfg, "vision_cfg": STAND_IN_VISION_CFG})
            self.clip.visual = UnshuffleConvTower.from_config(vision_cfg, cfg.clip_cfg["embed_dim"])
        else:
            self.clip = open_clip.CLIP(**cfg.clip_cfg)
        visual = self.clip.visual
        self.controller = copy.deepcopy(visual)
        self.resnet = is_resnet_tower(visual)
        if self.resnet:
            widths = [_block_width(block) for block in _resnet_blocks(visual)]
            self.zero_linears = nn.ModuleList(nn.Conv2d(c, c, 1) for c in widths)
            dim = visual.output_dim
            self.slot_proj = nn.Parameter(torch.eye(dim).unsqueeze(0).repeat(cfg.n_slots, 1, 1))
        else:
            width = visual.conv1.out_channels
            self.controller.proj = None  # replaced by one projection per slot
            self.zero_linears = nn.ModuleList(nn.Linear(width, width) for _ in visual.transformer.resblocks)
            self.slot_proj = nn.Parameter(visual.proj.detach().clone().unsqueeze(0).repeat(cfg.n_slots, 1, 1))
        self.presence_head = None
        if cfg.presence:
            if not self.resnet:
                raise ValueError("a presence head needs a ResNet image tower")
            self.presence_head = PresenceHead(visual.output_dim, len(cfg.vocabulary), cfg.presence_hidden)
        self._visual_frozen = False
        self.logit_scale = nn.Parameter(self.clip.logit_scale.detach().clone())
        self.register_buffer("mean", torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(OPENAI_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("prompt_tokens", open_clip.tokenize(
            list(cfg.prompts) + ([cfg.none_prompt] if cfg.none_prompt else []),
            context_length=cfg.context_length), persistent=False)
        self.init_controller()

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def embed_dim(self) -> int:
        return int(self.slot_proj.shape[-1])

    @torch.no_grad()
    def init_controller(self, slot_noise: float = 0.02) -> None:
        """Make the controller a copy of the frozen image tower and zero the control linears.

        Slot projections start from the tower's projection; slots after the first get a little
        noise so that the two slots can specialise. The slot logit scale starts at 100, the value
        a trained CLIP reaches (a scalar learns too slowly to get there in a short run).
        """
        visual = self.clip.visual
        state = {k: v for k, v in visual.state_dict().items() if k != "proj"}
        self.controller.load_state_dict(state, strict=True)
        for lin in self.zero_linears:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        base = torch.eye(visual.output_dim) if self.resnet else visual.proj.detach()
        for s in range(self.cfg.n_slots):
            self.slot_proj[s].copy_(base + (slot_noise * base.std() * torch.randn_like(base) if s else 0.0))
        self.logit_scale.fill_(math.log(100.0))

    def freeze_clip(self, keep_text_trainable: bool = False) -> None:
        """Freeze the base CLIP; only the controller side (and, if asked, the text tower without
        its token table, so the prototypes can move apart) stays trainable."""
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self._visual_frozen = True
        self.clip.visual.eval()
        if keep_text_trainable:
            for name, p in self.clip.named_parameters():
                if not name.startswith("visual.") and name not in ("token_embedding.weight", "logit_scale"):
                    p.requires_grad_(True)

    def unfreeze_clip(self) -> None:
        """Make the whole base CLIP trainable again (its batch norms follow ``train()``)."""
        for p in self.clip.parameters():
            p.requires_grad_(True)
        self._visual_frozen = False

    def train(self, mode: bool = True) -> DaClip:
        """As ``nn.Module.train``, but a frozen image tower keeps its batch-norm statistics."""
        super().train(mode)
        if self._visual_frozen:
            self.clip.visual.eval()
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def encode_base(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen encoder alone (no control): ``[B, embed_dim]``, not normalised."""
        return self.clip.encode_image(self.normalize(images))

    def control(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run the controller: ``(control tensors per block, slots [B, n_slots, D])``."""
        hiddens, _, slots = self.control_features(images)
        return hiddens, slots

    def control_features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """``(control tensors per block, pooled controller features [B, W], slots [B, n_slots, D])``."""
        ctrl = self.controller
        if self.resnet:
            pooled, hiddens = _run_resnet(ctrl, self.normalize(images), zero_convs=self.zero_linears)
        else:
            h, hiddens = _run_blocks(ctrl, ctrl._embeds(self.normalize(images)), zero_linears=self.zero_linears)
            pooled, _ = ctrl._pool(h)
        return hiddens, pooled, torch.einsum("bw,swd->bsd", pooled, self.slot_proj)

    def presence_logits(self, pooled: torch.Tensor, n_views: int) -> torch.Tensor:
        """Presence logits ``[B, N]`` from pooled features ``[B * n_views, W]`` grouped per photo
        (each group: the global view first, then its native crops)."""
        if self.presence_head is None:
            raise ValueError("this detector has no presence head")
        grouped = pooled.reshape(-1, n_views, pooled.shape[-1])
        return self.presence_head(grouped[:, 0], grouped[:, 1:])

    def content(self, images: torch.Tensor, hiddens: list[torch.Tensor]) -> torch.Tensor:
        """The frozen encoder with the controller's ``hiddens`` added: ``[B, D]``, not normalised."""
        visual = self.clip.visual
        if self.resnet:
            return _run_resnet(visual, self.normalize(images), control=hiddens)[0]
        y, _ = _run_blocks(visual, visual._embeds(self.normalize(images)), control=hiddens)
        content, _ = visual._pool(y)
        return content @ visual.proj if visual.proj is not None else content

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(content [B, D], slots [B, n_slots, D])`` (not normalised) for ``images`` in [0, 1]."""
        hiddens, slots = self.control(images)
        return self.content(images, hiddens), slots

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)

    def prototypes(self) -> torch.Tensor:
        """Normalised text embeddings of the classes (:attr:`DaClipConfig.classes`): ``[C, D]``."""
        return F.normalize(self.encode_text(self.prompt_tokens), dim=-1)

    def slot_logits(self, slots: torch.Tensor, prototypes: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled cosine similarity of each slot to each prototype: ``[B, n_slots, C]``."""
        protos = self.prototypes() if prototypes is None else prototypes
        return self.logit_scale.exp() * F.normalize(slots, dim=-1) @ protos.t()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(content, slots, logits)`` for ``images`` in [0, 1]."""
        content, slots = self.encode_image(images)
        return content, slots, self.slot_logits(slots)


# The text tower's token table (49408 rows from open_clip's tokenizer) is most of a small detector's file,
# but the model only ever reads the rows of its prompts and of the base stage's captions: the bundle
# stores those rows and their ids, and loading puts zeros in the others (files with the whole table load too).
TOKEN_TABLE = "clip.token_embedding.weight"
TOKEN_ROWS, TOKEN_VALUES = "clip.token_embedding.rows", "clip.token_embedding.values"


def used_token_ids(cfg: DaClipConfig) -> torch.Tensor:
    """Sorted ids of the token-table rows a model of ``cfg`` can read: its prompts' tokens and those of
    the caption of every set of at most two names (padding included)."""
    import open_clip

    texts = list(cfg.prompts) + ([cfg.none_prompt] if cfg.none_prompt else [])
    texts += [set_caption(s) for s in all_sets(cfg.vocabulary)]
    return torch.unique(open_clip.tokenize(texts, context_length=cfg.context_length))


def _pack_token_table(cfg: DaClipConfig):
    def pack(tensors: Tensors) -> Tensors:
        ids = used_token_ids(cfg)
        table = tensors.pop(TOKEN_TABLE)
        tensors[TOKEN_ROWS] = ids.to(torch.int32)
        tensors[TOKEN_VALUES] = table[ids].contiguous()
        return tensors
    return pack


def _unpack_token_table(shape: torch.Size):
    def unpack(tensors: Tensors, path: Path) -> Tensors:
        if TOKEN_ROWS not in tensors and TOKEN_VALUES not in tensors:
            return tensors  # the whole table (files written before 2026-12-02)
        rows, values = tensors.pop(TOKEN_ROWS, None), tensors.pop(TOKEN_VALUES, None)
        ok = (rows is not None and values is not None and rows.ndim == 1 and rows.dtype in (torch.int32, torch.int64)
              and tuple(values.shape) == (len(rows), shape[1]) and values.is_floating_point())
        if ok:
            ids = rows.long()
            ok = bool(((ids >= 0) & (ids < shape[0])).all()) and len(torch.unique(ids)) == len(ids)
        if not ok:
            raise ModelFileError(f"{path}: the stored rows of the token table do not fit the text tower "
                                 f"(expected unique ids below {shape[0]} and values of width {shape[1]})")
        table = torch.zeros(tuple(shape), dtype=values.dtype)
        table[ids] = values
        tensors[TOKEN_TABLE] = table
        return tensors
    return unpack


def save_pretrained(model: DaClip, model_dir: str | Path, dtype: torch.dtype | None = torch.float16) -> Path:
    """Write the detector part of the bundle folder ``model_dir`` (fp16 storage by default, the token
    table's used rows only); returns its stem."""
    stem = ModelBundle(Path(model_dir)).stem(DETECTOR)
    save_model(model, model.cfg, stem, ARCHITECTURE, dtype=dtype, pack=_pack_token_table(model.cfg))
    return stem


def load_pretrained(model_dir: str | Path) -> DaClip:
    """Rebuild a :class:`DaClip` from the detector config in ``model_dir`` and load its weights (fp32)."""
    stem = ModelBundle(Path(model_dir)).stem(DETECTOR)
    cfg = read_config(stem, ARCHITECTURE, DaClipConfig)
    model = DaClip(cfg)
    load_weights(model, stem, unpack=_unpack_token_table(model.clip.token_embedding.weight.shape))
    return model.eval()
