"""Restorer pairs from the region pool: seeded, identity samples, seed24 share, conditions per region."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.training.region_pool import PoolSpec, Region
from engine.training.restorer_data import (
    PairEntry,
    PairSpec,
    RegionPairPool,
    make_entry,
    mild_blend,
    native_crop,
    validation_regions,
    validation_set,
    with_false_name,
)
from engine.vocab import DEGRADATIONS, SEED24

SPEC = PoolSpec(size=32, n_crops=0, region_min=40, region_max=64, renderers=("project",))


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 200)[None, :, None] * np.ones((150, 1, 3))
    return [np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8) for _ in range(3)]


class CountingConditioner:
    """Records what it was asked to condition; the condition encodes the call number."""

    def __init__(self):
        self.calls: list[tuple[tuple[int, ...], tuple[str, ...] | None]] = []

    def __call__(self, image, names=None):
        assert image.dtype == np.float32 and image.max() <= 1.0
        self.calls.append((image.shape, names))
        return torch.full((3, 4), float(len(self.calls)))


def _same(a: dict, b: dict) -> bool:
    return (torch.equal(a["lq"], b["lq"]) and torch.equal(a["hq"], b["hq"]) and torch.equal(a["cond"], b["cond"])
            and a["names"] == b["names"])


def test_same_seed_same_samples(photos):
    pair = PairSpec(crop=32, seed24_fraction=0.25, identity_fraction=0.2, label_condition_fraction=0.1)
    a = RegionPairPool(photos, SPEC, pair, 12, seed=5, condition=CountingConditioner())
    b = RegionPairPool(photos, SPEC, pair, 12, seed=5, condition=CountingConditioner())
    for _ in range(3):
        assert _same(a.batch(6), b.batch(6))
        a.refresh(2)
        b.refresh(2)
    other = RegionPairPool(photos, SPEC, pair, 12, seed=6, condition=CountingConditioner())
    assert not torch.equal(other.batch(6)["lq"], a.batch(6)["lq"])


def test_identity_samples_target_their_own_input(photos):
    pair = PairSpec(crop=32, identity_fraction=0.3, identity_mild_share=0.5, identity_mild_max=0.2)
    pool = RegionPairPool(photos, SPEC, pair, 120, seed=1)
    entries = pool.all_entries()
    share = np.mean([e.identity for e in entries])
    assert 0.18 < share < 0.42
    assert any(e.identity and not e.names for e in entries) and any(e.identity and e.names for e in entries)
    assert all(e.hq is e.lq for e in entries if e.identity)
    # a mild sample lies between its clean region and the degraded one, close to the clean one
    for e, r in zip(pool.entries["train"], pool.pools["train"].regions, strict=True):
        if e.identity and e.names:
            far = np.abs(r.lq.astype(float) - r.hq).mean()
            near = np.abs(e.lq.astype(float) - r.hq).mean()
            assert near <= 0.2 * far + 0.5
        elif e.identity:
            assert np.array_equal(e.lq, r.hq)
    batch = pool.batch(64)
    ident = batch["identity"]
    assert ident.any() and (~ident).any()
    assert all(torch.equal(batch["lq"][i], batch["hq"][i]) for i in torch.nonzero(ident).flatten())
    assert any(not torch.equal(batch["lq"][i], batch["hq"][i]) for i in torch.nonzero(~ident).flatten())


def test_seed24_share_comes_from_the_study_pairs(photos):
    pool = RegionPairPool(photos, SPEC, PairSpec(crop=32, seed24_fraction=0.5), 20, seed=2)
    assert len(pool.entries["seed24"]) == 10 and len(pool.entries["train"]) == 10
    assert all(tuple(e.names) in SEED24 for e in pool.entries["seed24"])
    only = RegionPairPool(photos, SPEC, PairSpec(crop=32, seed24_fraction=1.0), 6, seed=2)
    assert set(only.pools) == {"seed24"}
    pool.refresh(10)
    assert len(pool) == 20


def test_each_region_is_conditioned_once_on_the_whole_region(photos):
    cond = CountingConditioner()
    pool = RegionPairPool(photos, SPEC, PairSpec(crop=32), 8, seed=3, condition=cond)
    assert len(cond.calls) == 8
    assert all(min(shape[:2]) >= SPEC.region_min for shape, _ in cond.calls)  # regions, not crops
    assert all(names is None for _, names in cond.calls)  # the detector's own analysis
    batch = pool.batch(16)
    assert len(cond.calls) == 8  # batches reuse the stored conditions
    values = {float(c[0, 0]) for c in batch["cond"]}
    assert values <= set(range(1, 9))
    pool.refresh(3)
    assert len(cond.calls) == 11  # only the new regions


def test_label_conditions_pass_the_true_names():
    region = Region(lq=np.full((40, 40, 3), 50, np.uint8), hq=np.full((40, 40, 3), 100, np.uint8),
                    names=("hazy", "noisy"))
    cond = CountingConditioner()
    entry = make_entry(region, PairSpec(crop=32, label_condition_fraction=1.0), np.zeros(6), cond, "train")
    assert cond.calls[-1][1] == ("hazy", "noisy") and not entry.identity
    triple = Region(region.lq, region.hq, ("hazy", "noisy", "blurry"))  # no condition_for for three names
    make_entry(triple, PairSpec(crop=32, label_condition_fraction=1.0), np.zeros(6), cond, "train")
    assert cond.calls[-1][1] is None
    ablation = make_entry(region, PairSpec(crop=32), np.ones(6), None, "train")
    assert ablation.condition is None


def test_a_false_name_is_one_the_image_does_not_have():
    invented = {with_false_name(("hazy",), d)[-1] for d in np.linspace(0, 0.999, 200)}
    assert invented == set(DEGRADATIONS) - {"hazy"}  # every other name, never the true one
    assert with_false_name((), 0.0) == (DEGRADATIONS[0],)
    two = with_false_name(("hazy", "noisy"), 0.5)
    assert len(two) == 2 and two[0] == "hazy" and two[1] not in ("hazy", "noisy")  # a miss and an invention


def test_false_name_entries_keep_their_target():
    region = Region(lq=np.full((40, 40, 3), 50, np.uint8), hq=np.full((40, 40, 3), 100, np.uint8), names=("noisy",))
    cond = CountingConditioner()
    spec = PairSpec(crop=32, identity_fraction=0.5, identity_mild_share=0.0, false_name_fraction=0.5)
    draws = np.array([0.9, 0.0, 0.0, 0.9, 0.1, 0.3])  # a restoration pair with a false name
    pair = make_entry(region, spec, draws, cond, "train")
    names = cond.calls[-1][1]
    assert names[0] == "noisy" and len(names) == 2 and names[1] != "noisy"
    assert np.array_equal(pair.hq, region.hq) and np.array_equal(pair.lq, region.lq)
    clean = make_entry(region, spec, np.array([0.1, 0.9, 0.0, 0.0, 0.1, 0.3]), cond, "train")  # identity, clean
    assert clean.identity and np.array_equal(clean.lq, region.hq) and np.array_equal(clean.hq, region.hq)
    assert len(cond.calls[-1][1]) == 1 and cond.calls[-1][1][0] in DEGRADATIONS  # told it has what it lacks
    make_entry(region, spec, np.array([0.9, 0.0, 0.0, 0.9, 0.6, 0.3]), cond, "train")
    assert cond.calls[-1][1] is None  # above the fraction: the detector's own output


def test_native_crop_is_unresized_and_aligned():
    yy, xx = np.mgrid[0:48, 0:64]
    lq = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)
    entry = PairEntry(lq=lq, hq=255 - lq, names=("noisy",), identity=False, condition=None, source="train")
    rng = np.random.default_rng(0)
    for _ in range(10):
        a, b = native_crop(entry, 16, rng)
        assert a.shape == (3, 16, 16)
        assert torch.allclose(a + b, torch.ones_like(a))  # input and target from the same place
        xs = (a[1] * 255).round()
        assert float(xs.max() - xs.min()) == 15  # native resolution
    with pytest.raises(ValueError, match="smaller than the crop"):
        native_crop(entry, 60, rng)


def test_mild_blend_moves_part_way():
    hq, lq = np.full((2, 2, 3), 100, np.uint8), np.full((2, 2, 3), 200, np.uint8)
    assert int(mild_blend(hq, lq, 0.1)[0, 0, 0]) == 110 and np.array_equal(mild_blend(hq, lq, 0.0), hq)


def test_validation_sets_are_fixed_and_clean_targets_itself(photos):
    spec = PoolSpec(size=32, n_crops=0, region_min=40, region_max=64, renderers=("heldout",), preset="seed24")
    regions = validation_regions(photos, spec, 4, seed=9)
    again = validation_regions(photos, spec, 4, seed=9)
    assert all(np.array_equal(r.lq, s.lq) for r, s in zip(regions, again, strict=True))
    pairs = validation_set(regions, 32, CountingConditioner())
    clean = validation_set(regions, 32, None, clean=True)
    assert pairs["lq"].shape == (4, 3, 32, 32) and pairs["cond"].shape == (4, 3, 4)
    assert torch.equal(clean["lq"], clean["hq"]) and clean["cond"] is None
    assert torch.equal(clean["hq"], pairs["hq"]) and not torch.equal(pairs["lq"], pairs["hq"])


def test_bad_specs_are_refused(photos):
    with pytest.raises(ValueError, match="identity_fraction"):
        PairSpec(identity_fraction=1.5)
    with pytest.raises(ValueError, match="false_name_fraction"):
        PairSpec(false_name_fraction=-0.1)
    with pytest.raises(ValueError, match="region_min"):
        RegionPairPool(photos, SPEC, PairSpec(crop=48), 4)
