"""The trainers' losses: the permutation-invariant slot loss and its targets, the control stage's
learning signal, the prototype separation term, and the restorer's losses on x0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.models.daclip import DaClip, DaClipConfig
from engine.training.losses import (
    ControlStage,
    predicted_sets,
    presence_exact,
    presence_target,
    separation_loss,
    set_targets,
    slot_set_loss,
    x0_loss,
)
from engine.vocab import DEGRADATIONS, NONE


def test_slot_loss_is_permutation_invariant():
    torch.manual_seed(1)
    logits = torch.randn(5, 2, 12)
    targets = torch.randint(0, 12, (5, 2))
    loss = slot_set_loss(logits, targets)
    assert torch.allclose(loss, slot_set_loss(logits, targets.flip(1)))  # {a, b} == {b, a}
    assert torch.allclose(loss, slot_set_loss(logits.flip(1), targets))  # slots swapped
    # the min over assignments is never worse than the fixed assignment
    fixed = (torch.nn.functional.cross_entropy(logits[:, 0], targets[:, 0], reduction="none")
             + torch.nn.functional.cross_entropy(logits[:, 1], targets[:, 1], reduction="none")).mean() / 2
    assert loss <= fixed + 1e-6


def test_slot_loss_prefers_the_true_set_in_either_order():
    classes = DaClipConfig().classes
    t = set_targets([("hazy", "noisy")], classes)
    good = torch.full((1, 2, len(classes)), -5.0)
    good[0, 0, classes.index("noisy")] = 5.0
    good[0, 1, classes.index("hazy")] = 5.0
    bad = torch.full((1, 2, len(classes)), -5.0)
    bad[0, 0, classes.index("noisy")] = 5.0
    bad[0, 1, classes.index("rainy")] = 5.0
    assert slot_set_loss(good, t) < 0.01 < slot_set_loss(bad, t)


def test_targets_and_predicted_sets_are_order_free_and_none_filled():
    classes = DaClipConfig().classes
    assert classes[-1] == NONE and classes[:-1] == DEGRADATIONS
    t = set_targets([(), ("noisy",), ("noisy", "hazy")], classes)
    assert t[0].tolist() == [classes.index(NONE)] * 2
    assert t[1].tolist() == [classes.index("noisy"), classes.index(NONE)]
    with pytest.raises(ValueError):
        set_targets([("noisy", "hazy", "rainy")], classes)
    logits = torch.zeros(3, 2, len(classes))
    for i, row in enumerate(t.tolist()):
        for s, c in enumerate(reversed(row)):
            logits[i, s, c] = 1.0
    sets = predicted_sets(logits, classes)
    assert sets == [frozenset(), frozenset({"noisy"}), frozenset({"hazy", "noisy"})]


@pytest.mark.parametrize("clip_model", ["PhotoMend-ViT-Tiny-Test", "PhotoMend-RN-Tiny-Test"])
def test_controller_learns_degradations_well_above_chance(clip_model):
    """The control stage (permutation-invariant slot loss) separates clean / noisy / dark / both."""
    from engine.degradations import apply_degradations

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = DaClip(DaClipConfig.for_clip_model(clip_model))
    model.freeze_clip()
    stage = ControlStage(model, content_weight=0.1, content_fraction=0.5)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    combos = [(), ("noisy",), ("low-light",), ("low-light", "noisy")]

    def batch(n):
        hq, lq, names = [], [], []
        for i in range(n):
            phase = rng.uniform(0, 6.28)
            img = np.stack([0.5 + 0.3 * np.sin(6 * xx + phase), 0.5 + 0.3 * np.cos(5 * yy + phase),
                            0.4 + 0.2 * xx], -1).astype(np.float32)
            combo = combos[i % len(combos)]
            out, _ = apply_degradations(img, combo, rng)
            hq.append(torch.from_numpy(img).permute(2, 0, 1))
            lq.append(torch.from_numpy(out).permute(2, 0, 1))
            names.append(combo)
        return torch.stack(lq), torch.stack(hq), names

    test_lq, _, test_names = batch(64)

    def accuracy():
        model.eval()
        with torch.no_grad():
            _, _, logits = model(test_lq)
        model.train()
        pred = predicted_sets(logits, model.cfg.classes)
        return np.mean([p == frozenset(t) for p, t in zip(pred, test_names, strict=True)])

    before = accuracy()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    for _ in range(150):
        lq, hq, names = batch(16)
        loss, _ = stage(lq, hq, set_targets(names, model.cfg.classes), [frozenset(n) for n in names])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = accuracy()
    assert after >= 0.5 and after > before + 0.2, (before, after)  # a constant guess gets 1 in 4


def test_separation_loss_pushes_collapsed_prototypes_apart():
    eye = torch.eye(12, 32)
    collapsed = F.normalize(torch.ones(12, 32) + 0.01 * torch.randn(12, 32), dim=-1)
    assert separation_loss(eye) < 1e-3
    assert separation_loss(collapsed) > 0.9 * np.log(12)
    raw = collapsed.clone().requires_grad_(True)
    opt = torch.optim.SGD([raw], lr=0.5)
    for _ in range(50):
        loss = separation_loss(F.normalize(raw, dim=-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    spread = F.normalize(raw.detach(), dim=-1)
    off_diagonal = (spread @ spread.t())[~torch.eye(12, dtype=torch.bool)]
    assert off_diagonal.mean() < 0.5 < float((collapsed @ collapsed.t()).min())


def test_x0_losses():
    hq = torch.zeros(2, 3, 4, 4)
    lq = torch.stack([torch.full((3, 4, 4), 0.5), torch.full((3, 4, 4), 0.01)])  # input MSE 0.25 and 1e-4
    pred = lq / 2  # halves each error
    assert x0_loss(pred, hq, lq, "mse") == pytest.approx((0.0625 + 0.25e-4) / 2)
    # relative: the nearly clean image weighs ~6x more than the dark one
    w = torch.tensor([0.05 / 0.30, 0.05 / 0.0501])
    expected = (torch.tensor([0.0625, 0.25e-4]) * w).mean()
    assert x0_loss(pred, hq, lq, "relative_mse") == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="loss"):
        x0_loss(pred, hq, lq, "l7")


def test_psnr_mse_loss_follows_the_gradient_of_mean_log_mse():
    hq = torch.zeros(2, 3, 4, 4)
    lq = torch.stack([torch.full((3, 4, 4), 0.5), torch.full((3, 4, 4), 0.01)])
    pred = (lq / 2).requires_grad_()
    x0_loss(pred, hq, lq, "psnr_mse").backward()
    ours = pred.grad.clone()
    pred.grad = None
    per = (pred - hq).pow(2).flatten(1).mean(1)
    torch.log(per + 1e-4).mean().mul(1e-4).backward()
    assert torch.allclose(ours, pred.grad, rtol=1e-5, atol=0)
    # a nearly clean image pulls far harder per unit of error than a dark one (1/MSE weighting)
    assert ours[1].abs().max() / 0.005 > 100 * ours[0].abs().max() / 0.25


def test_presence_targets_are_multi_hot_and_exact_accuracy_needs_every_name():
    vocabulary = ("hazy", "noisy", "rainy")
    t = presence_target([(), ("noisy",), ("rainy", "hazy")], vocabulary)
    assert t.tolist() == [[0, 0, 0], [0, 1, 0], [1, 0, 1]]
    logits = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 2.0, -1.0], [1.0, -1.0, -1.0]])  # the last misses rainy
    assert presence_exact(logits, t) == pytest.approx(2 / 3)
