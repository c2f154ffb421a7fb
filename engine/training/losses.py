"""The trainers' losses: the detector's slot, caption, content, presence and separation terms, and the
restorer's loss on the predicted clean image.

The networks (:mod:`engine.models.daclip`, :mod:`engine.models.unet`) only compute embeddings and
logits; what is learnt from them is defined here. The detector's two stages are each one module
(:class:`BaseStage`, :class:`ControlStage`) whose ``forward`` returns ``(loss, accuracy)``, so that
DDP wraps a forward that returns the loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.vocab import NONE

SEPARATION_TEMPERATURE = 0.1
RELATIVE_FLOOR = 0.05  # MSE of a 13 dB input
PSNR_FLOOR = 1e-4      # MSE of a 40 dB result: below it an image no longer gains weight


# ---------------------------------------------------------------------------------------- detector


def set_targets(names_batch, classes: tuple[str, ...], n_slots: int = 2) -> torch.Tensor:
    """Class indices ``[B, n_slots]`` for each sample's degradation names, filled with ``none``."""
    index = {c: i for i, c in enumerate(classes)}
    rows = []
    for names in names_batch:
        names = [n for n in names if n != NONE]
        if len(names) > n_slots:
            raise ValueError(f"{len(names)} degradations do not fit {n_slots} slots: {names}")
        rows.append([index[n] for n in names] + [index[NONE]] * (n_slots - len(names)))
    return torch.tensor(rows, dtype=torch.long)


def slot_set_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Permutation-invariant contrastive loss between 2 slots and the prototypes of the true set.

    For each sample, the cross-entropy of slot 1 -> target a plus slot 2 -> target b, minimised
    over the two assignments (a, b) and (b, a). ``logits [B, 2, C]``, ``targets [B, 2]``.
    """
    if logits.shape[1] == 1:
        return F.cross_entropy(logits[:, 0], targets[:, 0])
    straight = _slot_ce(logits, targets, 0, 0) + _slot_ce(logits, targets, 1, 1)
    swapped = _slot_ce(logits, targets, 0, 1) + _slot_ce(logits, targets, 1, 0)
    return torch.minimum(straight, swapped).mean() / 2


def _slot_ce(logits: torch.Tensor, targets: torch.Tensor, slot: int, target: int) -> torch.Tensor:
    return F.cross_entropy(logits[:, slot], targets[:, target], reduction="none")


def predicted_sets(logits: torch.Tensor, classes: tuple[str, ...]) -> list[frozenset[str]]:
    """The detected set per sample (argmax per slot, ``none`` dropped)."""
    idx = logits.argmax(-1).tolist()
    return [frozenset(classes[i] for i in row if classes[i] != NONE) for row in idx]


def presence_target(names_batch, vocabulary: tuple[str, ...]) -> torch.Tensor:
    """Multi-hot targets ``[B, len(vocabulary)]`` of the presence head."""
    index = {n: i for i, n in enumerate(vocabulary)}
    out = torch.zeros(len(names_batch), len(vocabulary))
    for row, names in enumerate(names_batch):
        for n in names:
            out[row, index[n]] = 1.0
    return out


def presence_exact(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Share of samples whose every name is right (logit above 0 where the target is 1)."""
    return ((logits > 0) == (targets > 0.5)).all(-1).float().mean()


def separation_loss(embeddings: torch.Tensor) -> torch.Tensor:
    """Keeps L2-normalised text embeddings ``[C, D]`` apart: each must be its own nearest neighbour
    (cross-entropy of the scaled cosine matrix against the identity). Without it the small text
    tower trained from scratch collapsed every prompt onto nearly one direction (mean cosine 0.98
    in the first bundled detector), leaving the image side nothing to tell the classes apart by."""
    sim = embeddings @ embeddings.t() / SEPARATION_TEMPERATURE
    return F.cross_entropy(sim, torch.arange(len(embeddings), device=embeddings.device))


def _grouped(pooled: torch.Tensor, n_views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features ``[B * n_views, D]`` as (global views ``[B, D]``, crops ``[B, n_views - 1, D]``)."""
    g = pooled.reshape(-1, n_views, pooled.shape[-1])
    return g[:, 0], g[:, 1:]


class BaseStage(nn.Module):
    """Caption matching over all degradation sets + degraded/clean content InfoNCE."""

    def __init__(self, model, caption_tokens: torch.Tensor, content_weight: float, hq_fraction: float,
                 separation: float = 0.0, presence_weight: float = 1.0):
        super().__init__()
        self.model = model
        self.register_buffer("caption_tokens", caption_tokens, persistent=False)
        self.content_weight = content_weight
        self.hq_fraction = hq_fraction
        self.separation = separation
        self.presence_weight = presence_weight

    def forward(self, lq, hq, set_index, presence_targets=None, n_views=1):
        m = self.model
        b = max(1, int(round(lq.shape[0] * self.hq_fraction)))  # clean crops used (cost)
        raw = m.encode_base(torch.cat([lq, hq[:b]]))
        emb = F.normalize(raw, dim=-1)
        text = F.normalize(m.encode_text(self.caption_tokens), dim=-1)
        scale = m.clip.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * emb @ text.t()
        n = lq.shape[0]
        targets = torch.cat([set_index, torch.zeros_like(set_index[:b])])  # clean crops: caption 0
        loss = F.cross_entropy(logits, targets)
        sim = scale * emb[:b] @ emb[n:].t()
        labels = torch.arange(b, device=lq.device)
        content = (F.cross_entropy(sim, labels) + F.cross_entropy(sim.t(), labels)) / 2
        acc = (logits[:n].argmax(-1) == set_index).float().mean()
        loss = loss + self.content_weight * content + self.separation * separation_loss(text)
        if presence_targets is not None:  # the base tower's pooled output feeds the same head
            pres = m.presence_head(*_grouped(raw[:n], n_views))
            loss = loss + self.presence_weight * F.binary_cross_entropy_with_logits(pres, presence_targets)
            acc = presence_exact(pres, presence_targets)
        return loss, acc.detach()


class ControlStage(nn.Module):
    """Permutation-invariant slot loss + content loss toward the clean crop's frozen embedding."""

    def __init__(self, model, content_weight: float, content_fraction: float, separation: float = 0.0,
                 presence_weight: float = 1.0):
        super().__init__()
        self.model = model
        self.content_weight = content_weight
        self.content_fraction = content_fraction
        self.separation = separation
        self.presence_weight = presence_weight

    def forward(self, lq, hq, targets, true_sets, presence_targets=None, n_views=1):
        m = self.model
        protos = m.prototypes()
        hiddens, pooled, slots = m.control_features(lq)
        logits = m.slot_logits(slots, protos)
        loss = slot_set_loss(logits, targets) + self.separation * separation_loss(protos)
        k = max(1, int(round(lq.shape[0] * self.content_fraction)))
        if self.content_weight > 0:
            content = m.content(lq[:k], [h[:k] for h in hiddens])
            with torch.no_grad():
                clean = F.normalize(m.encode_base(hq[:k]), dim=-1)
            loss = loss + self.content_weight * (1 - (F.normalize(content, dim=-1) * clean).sum(-1)).mean()
        if presence_targets is not None:
            pres = m.presence_logits(pooled, n_views)
            loss = loss + self.presence_weight * F.binary_cross_entropy_with_logits(pres, presence_targets)
            return loss, presence_exact(pres.detach(), presence_targets)
        pred = predicted_sets(logits.detach(), m.cfg.classes)
        acc = torch.tensor(sum(p == t for p, t in zip(pred, true_sets, strict=True)) / len(pred))
        return loss, acc


# ---------------------------------------------------------------------------------------- restorer


def x0_loss(pred, target, lq, kind: str):
    """MSE on the predicted clean image, over the batch (``mse``), weighted per image by the inverse
    of its input's error (``relative_mse``; the weight depends on the LQ crop only, not on ``t``), or
    by the inverse of its own current error (``psnr_mse``; see
    :class:`~engine.training.recipes.RestorerRecipe`)."""
    per_image = (pred - target).pow(2).flatten(1).mean(1)
    if kind == "mse":
        return per_image.mean()
    if kind == "relative_mse":
        # inputs better than 13 dB weigh about 1; a 5 dB input (MSE 0.32) weighs 0.14
        weight = RELATIVE_FLOOR / ((lq - target).pow(2).flatten(1).mean(1) + RELATIVE_FLOOR)
        return (per_image * weight).mean()
    if kind == "psnr_mse":
        # each image's MSE over its own current error (no gradient through the weight): the gradient of
        # the mean log-MSE, i.e. of the mean PSNR that evaluation reports
        weight = 1.0 / (per_image.detach() + PSNR_FLOOR)
        return (per_image * weight).mean() * PSNR_FLOOR
    raise ValueError(f"unknown loss {kind!r} (mse, relative_mse, psnr_mse)")
