"""Degradation detection and restorer conditioning with a DA-CLIP :class:`~engine.models.daclip.DaClip`.

Inference contract: photos are ``float32 (H, W, 3)`` arrays in ``[0, 1]``; batches of training
patches are ``float32 [B, 3, H, W]`` in ``[0, 1]``. A condition is ``[3, embed_dim]`` (or
``[B, 3, embed_dim]``): ``[content; slot 1; slot 2]``, every row L2-normalised.

Canonical slot order: each slot is labelled with its most probable prototype; slots are sorted
by the physical order of those names (:data:`engine.vocab.PHYSICAL_ORDER`), ``none`` last, so
the restorer sees e.g. the haze slot before the noise slot whatever slot the controller used.
One-slot models (official DA-CLIP) give a zero second slot.

Full-size photos (:meth:`Detector.analyze`). DA-CLIP's resize to the model's small input erases
noise, blur and JPEG blocks, so the photo is looked at through several views:

* the **global view**: the whole photo resized (antialiased) to the input size;
* up to ``n_crops`` **native crops**: input-size crops at full resolution on an even grid.

Combination rule. For each view and name, the presence probability is
``1 - prod_slots(1 - p_slot(name))``. A name's score is the larger of its global-view presence
and its mean presence over the native crops (``max(global, mean(crops))``): scene-scale damage
(haze, missing regions) shows in the global view, pixel-scale damage (noise, JPEG) in the crops,
and averaging the crops keeps one odd crop from raising a false alarm. Detected names are those
scoring at least their threshold (0.5, or the per-name thresholds that ``photomend detect
--calibrate`` stores in the detector's config), at most two (most probable first). The content
embedding comes from the global view.

Each slot of the condition averages the canonicalised slot embeddings of the views whose slot at
that position names the same degradation as the final detection, so a full-size photo gets the
kind of slot embedding a training patch would get. When no view agrees at that position, the
slots labelled with that name at any position are used; when no slot anywhere is labelled with
it, its text prototype (``none`` included; zero for the empty slot of a one-slot model, as in
:meth:`Detector.condition_for`). A name the detection rejected therefore never conditions the
restorer (before, the fallback averaged all views, and a sub-threshold "hazy" slot still made
the restorer dehaze).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.inference.analysis import Analysis
from engine.jobs.api import Detection
from engine.models.daclip import DaClip, load_pretrained
from engine.vocab import NONE, PHYSICAL_ORDER, physical_sort

OFFICIAL_SUFFIXES = (".pt", ".pth", ".bin")
DETECT_THRESHOLD = 0.5


def select_names(scores: dict[str, float], thresholds: dict[str, float], limit: int) -> tuple[str, ...]:
    """The detected names: those scoring at least their threshold, most probable first, at most ``limit``."""
    ranked = sorted(scores, key=lambda n: -scores[n])
    return tuple(n for n in ranked if scores[n] >= thresholds.get(n, DETECT_THRESHOLD))[:limit]


def _order_key(name: str) -> int:
    return PHYSICAL_ORDER.index(name) if name in PHYSICAL_ORDER else len(PHYSICAL_ORDER)


DEFAULT_CROPS = 8  # native crops per photo when the detector's config does not say how many it trained with
CROP_GRID = 16  # native crops start on this grid, so JPEG's 8 px blocks (16 px with 4:2:0 chroma) stay aligned


def crop_boxes(height: int, width: int, size: int, n_crops: int) -> list[tuple[int, int]]:
    """Top-left corners of up to ``n_crops`` ``size`` x ``size`` crops spread evenly over the image,
    each on the :data:`CROP_GRID` (when the image leaves room for it)."""
    if height < size or width < size or n_crops <= 0:
        return []
    rows = max(1, int(round((n_crops * height / width) ** 0.5)))
    cols = max(1, int(np.ceil(n_crops / rows)))
    ys = np.linspace(0, height - size, rows + 2)[1:-1] if rows > 1 else [(height - size) / 2]
    xs = np.linspace(0, width - size, cols + 2)[1:-1] if cols > 1 else [(width - size) / 2]
    snap = lambda v: int(v) // CROP_GRID * CROP_GRID  # noqa: E731  (rounds down: stays inside)
    boxes = [(snap(y), snap(x)) for y in ys for x in xs]
    return boxes[:n_crops]


class Detector:
    """A loaded DA-CLIP model in eval mode with its text prototypes computed once."""

    def __init__(self, model: DaClip, device: torch.device | str = "cpu", n_crops: int | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        # as many native crops as in training, where the config records it (the presence head pools them)
        self.n_crops = n_crops if n_crops is not None else (model.cfg.n_crops or DEFAULT_CROPS)
        self.classes: tuple[str, ...] = model.cfg.classes
        self.vocabulary: tuple[str, ...] = model.cfg.vocabulary
        self.embed_dim: int = model.embed_dim
        self.image_size: int = model.image_size
        self.n_slots: int = model.cfg.n_slots
        self.thresholds: dict[str, float] = dict(zip(self.vocabulary, model.cfg.thresholds or
                                                     (DETECT_THRESHOLD,) * len(self.vocabulary), strict=True))
        with torch.no_grad():
            self.prototypes = model.prototypes()  # [C, D], normalised
        order = [_order_key(c) for c in self.classes]
        self._class_order = torch.tensor(order, device=self.device)

    @classmethod
    def from_dir(cls, model_dir: str | Path, device: torch.device | str = "cpu",
                 n_crops: int | None = None) -> Detector:
        """Load the detector of a bundle (or detector-only) folder, or an official DA-CLIP ``.pt`` file."""
        path = Path(model_dir)
        if path.is_file() and path.suffix.lower() in OFFICIAL_SUFFIXES:
            from engine.models.official import load_official

            return cls(load_official(path), device, n_crops)
        return cls(load_pretrained(path), device, n_crops)

    # -- batched core -------------------------------------------------------------------------
    @torch.no_grad()
    def _encode(self, images: torch.Tensor, with_pooled: bool = False):
        """``(content [B,D], canonical slots [B,S,D], canonical slot probs [B,S,C])`` for [0,1] images,
        plus the controller's pooled features ``[B, W]`` with ``with_pooled``."""
        images = images.to(self.device, torch.float32)
        s = self.image_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        hiddens, pooled, slots = self.model.control_features(images)
        content = self.model.content(images, hiddens)
        probs = self.model.slot_logits(slots, self.prototypes).softmax(-1)
        # canonical order: physical order of each slot's most probable name, none last (stable sort)
        keys = self._class_order[probs.argmax(-1)]  # [B, S]
        perm = torch.sort(keys, dim=1, stable=True).indices
        slots = torch.gather(slots, 1, perm[..., None].expand_as(slots))
        probs = torch.gather(probs, 1, perm[..., None].expand_as(probs))
        if with_pooled:
            return F.normalize(content, dim=-1), F.normalize(slots, dim=-1), probs, pooled
        return F.normalize(content, dim=-1), F.normalize(slots, dim=-1), probs

    def _condition(self, content: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        if slots.shape[-2] == 1:
            slots = torch.cat([slots, torch.zeros_like(slots)], dim=-2)
        return torch.cat([content.unsqueeze(-2), slots], dim=-2)

    @torch.no_grad()
    def condition_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Conditions ``[B, 3, embed_dim]`` for training patches ``[B, 3, H, W]`` in [0, 1].

        Each patch is one view (resized to the model's input size). Returned on ``images.device``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
        content, slots, _ = self._encode(images)
        return self._condition(content, slots).to(images.device)

    def presence(self, probs: torch.Tensor) -> torch.Tensor:
        """Per-name presence ``[B, len(vocabulary)]``: ``1 - prod_slots(1 - p_slot(name))``."""
        p = probs[..., : len(self.vocabulary)]
        return 1.0 - torch.prod(1.0 - p, dim=-2)

    # -- full-size photos ---------------------------------------------------------------------
    def _views(self, image: np.ndarray) -> tuple[torch.Tensor, int]:
        """Global view first, then native crops; returns ``([V,3,S,S], number of crops)``."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an image of shape (H, W, 3), got {image.shape}")
        s = self.image_size
        h, w = image.shape[:2]
        full = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
        glob = F.interpolate(full[None], size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        boxes = crop_boxes(h, w, s, self.n_crops)
        crops = [full[:, y:y + s, x:x + s] for y, x in boxes]
        views = torch.cat([glob, torch.stack(crops)]) if crops else glob
        return views.clamp_(0.0, 1.0), len(crops)

    @torch.no_grad()
    def analyze(self, image: np.ndarray) -> Analysis:
        """Detection and condition for one full-size photo (see the module docstring for the rule)."""
        views, n_crops = self._views(image)
        if self.model.presence_head is not None:  # detector v2: one head reads all the views together
            content, slots, probs, pooled = self._encode(views, with_pooled=True)
            score = torch.sigmoid(self.model.presence_logits(pooled, len(views)))[0]
        else:
            content, slots, probs = self._encode(views)
            pres = self.presence(probs)  # [V, N]
            score = pres[0] if n_crops == 0 else torch.maximum(pres[0], pres[1:].mean(0))
        detection = self._detection(score)
        # condition slots: average the views whose slot at each canonical position agrees
        target = list(physical_sort(detection.degradations)) + [NONE] * self.n_slots
        labels = probs.argmax(-1)  # [V, S]
        rows = []
        for j in range(self.n_slots):
            want = self.classes.index(target[j]) if target[j] in self.classes else -1
            agree = labels[:, j] == want
            if bool(agree.any()):
                sel = slots[agree, j]
            elif bool((labels == want).any()):  # the name sits at another position in every view
                sel = slots[labels == want]
            elif want >= 0:  # no slot is labelled with it anywhere: its text prototype
                sel = self.prototypes[want][None]
            else:  # an empty slot of a one-slot model (no "none" class): zero, as condition_for
                sel = torch.zeros_like(slots[:1, j])
            rows.append(F.normalize(sel.mean(0), dim=-1))
        condition = self._condition(content[0], torch.stack(rows))
        return Analysis(detection=detection, condition=condition.cpu())

    def _detection(self, score: torch.Tensor) -> Detection:
        values = score.tolist()
        scores = {name: float(values[i]) for i, name in enumerate(self.vocabulary)}
        return Detection(degradations=select_names(scores, self.thresholds, max(self.n_slots, 1)), scores=scores)

    def detect(self, image: np.ndarray) -> Detection:
        """The degradations seen in one photo."""
        return self.analyze(image).detection

    @torch.no_grad()
    def condition_for(self, image: np.ndarray, names: tuple[str, ...]) -> torch.Tensor:
        """Condition ``[3, embed_dim]`` (CPU) with user-chosen degradations instead of detected ones.

        Content comes from the image's global view; the slots are the text prototypes of ``names``
        in physical order, filled with ``none`` (zero for one-slot models without ``none``).
        """
        names = physical_sort(names)
        if len(names) > 2:
            raise ValueError(f"at most two degradations can condition the restorer, got {', '.join(names)}")
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise ValueError(f"this detector does not know {', '.join(unknown)}")
        views, _ = self._views(image)
        content, _, _ = self._encode(views[:1])
        rows = []
        for name in list(names) + [NONE] * (2 - len(names)):
            if name in self.classes:
                rows.append(self.prototypes[self.classes.index(name)])
            else:
                rows.append(torch.zeros(self.embed_dim, device=self.device))
        return torch.cat([content, torch.stack(rows)]).cpu()
