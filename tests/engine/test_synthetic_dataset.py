"""SyntheticPairs / FixedSyntheticSet: shapes, ranges, determinism, bad files, batching."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch.utils.data import DataLoader

from engine.training.synthetic import FixedSyntheticSet, SyntheticPairs, collate_pairs, random_crop
from engine.vocab import PHYSICAL_ORDER


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.chelsea()).save(folder / "chelsea.jpg")
    Image.fromarray(data.coffee()[:60, :90]).save(folder / "small.png")  # smaller than the crop
    return folder


def take(ds, n):
    return list(itertools.islice(iter(ds), n))


def test_shapes_ranges_and_names(clean_dir):
    ds = SyntheticPairs(clean_dir, crop=64, preset="train", seed=1, max_side=256)
    for item in take(ds, 20):
        assert item["lq"].shape == item["hq"].shape == (3, 64, 64)
        assert item["lq"].dtype == item["hq"].dtype == torch.float32
        for key in ("lq", "hq"):
            assert 0.0 <= float(item[key].min()) and float(item[key].max()) <= 1.0
        names = item["names"]
        assert isinstance(names, tuple)
        assert list(names) == sorted(names, key=PHYSICAL_ORDER.index)
        if names:
            assert not torch.equal(item["lq"], item["hq"])
        else:
            assert torch.equal(item["lq"], item["hq"])


def test_stream_is_deterministic_for_a_seed(clean_dir):
    a = take(SyntheticPairs(clean_dir, crop=32, seed=3, max_side=256), 6)
    b = take(SyntheticPairs(clean_dir, crop=32, seed=3, max_side=256), 6)
    c = take(SyntheticPairs(clean_dir, crop=32, seed=4, max_side=256), 6)
    assert all(torch.equal(x["lq"], y["lq"]) and x["names"] == y["names"] for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x["hq"], y["hq"]) for x, y in zip(a, c, strict=True))


def test_ranks_and_epochs_get_different_streams(clean_dir):
    r0 = take(SyntheticPairs(clean_dir, crop=32, seed=3, rank=0, world_size=2, max_side=256), 4)
    r1 = take(SyntheticPairs(clean_dir, crop=32, seed=3, rank=1, world_size=2, max_side=256), 4)
    assert not all(torch.equal(x["hq"], y["hq"]) for x, y in zip(r0, r1, strict=True))
    ds = SyntheticPairs(clean_dir, crop=32, seed=3, max_side=256)
    e0 = take(ds, 4)
    ds.set_epoch(1)
    e1 = take(ds, 4)
    assert not all(torch.equal(x["hq"], y["hq"]) for x, y in zip(e0, e1, strict=True))


def test_photos_from_disk_match_photos_in_memory(clean_dir):
    a = take(SyntheticPairs(clean_dir, crop=32, seed=5, max_side=256), 3)
    b = take(SyntheticPairs(clean_dir, crop=32, seed=5, max_side=256, photos_in_memory=False), 3)
    assert all(torch.equal(x["lq"], y["lq"]) for x, y in zip(a, b, strict=True))


def test_collate_and_dataloader(clean_dir):
    ds = SyntheticPairs(clean_dir, crop=48, seed=0, max_side=256)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_pairs)))
    assert batch["lq"].shape == batch["hq"].shape == (4, 3, 48, 48)
    assert len(batch["names"]) == 4 and all(isinstance(n, tuple) for n in batch["names"])


def test_random_scale_crop_and_small_photos():
    photo = (np.random.default_rng(0).uniform(size=(40, 50, 3)) * 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(10):
        patch = random_crop(photo, 64, rng, min_scale=0.5)
        assert patch.shape == (64, 64, 3) and patch.dtype == np.float32
        assert 0 <= patch.min() and patch.max() <= 1


def test_unreadable_files_are_skipped_with_a_warning(clean_dir, tmp_path):
    (tmp_path / "good.png").write_bytes((clean_dir / "astronaut.png").read_bytes())
    (tmp_path / "broken.jpg").write_bytes((clean_dir / "chelsea.jpg").read_bytes()[:300])
    (tmp_path / "text.png").write_text("not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = SyntheticPairs(tmp_path, crop=32, max_side=128)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert any("broken.jpg" in m for m in messages) and any("text.png" in m for m in messages)
    assert all("\n" not in m for m in messages)
    assert len(ds.source) == 1


def test_missing_or_empty_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        SyntheticPairs(tmp_path / "missing", crop=32)
    with pytest.raises(ValueError, match="no readable images"):
        SyntheticPairs(tmp_path, crop=32)


def test_bad_preset_is_rejected(clean_dir):
    with pytest.raises(ValueError, match="preset"):
        SyntheticPairs(clean_dir, crop=32, preset="nope", max_side=128)


def test_fixed_set_is_deterministic_and_covers_combinations(clean_dir):
    a = FixedSyntheticSet(clean_dir, crop=32, preset="seed24", n=48, seed=2, max_side=256)
    b = FixedSyntheticSet(clean_dir, crop=32, preset="seed24", n=48, seed=2, max_side=256)
    assert len(a) == 48
    assert torch.equal(a[7]["lq"], b[7]["lq"]) and torch.equal(a[7]["lq"], a[7]["lq"])
    assert len({a[i]["names"] for i in range(24)}) == 24
    with pytest.raises(IndexError):
        a[48]
    mixed = FixedSyntheticSet(clean_dir, crop=32, preset="mixed", n=5, seed=0, max_side=256)
    assert mixed[4]["lq"].shape == (3, 32, 32)
