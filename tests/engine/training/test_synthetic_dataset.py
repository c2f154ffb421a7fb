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


# -- PhotoViews (detector training) and RegionPairs (restorer training) -----------------------


@pytest.fixture
def only(monkeypatch):
    """Make every drawn combination ``names`` (the datasets' own degradations stay random)."""
    import engine.training.synthetic as synthetic

    def use(*names):
        monkeypatch.setattr(synthetic, "sample_combination", lambda rng, preset: tuple(names))

    return use


@pytest.fixture(scope="module")
def grey_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grey")
    Image.fromarray(np.full((400, 520, 3), 128, np.uint8)).save(folder / "grey.png")
    return folder


def test_photo_views_group_a_global_view_and_native_crops_of_one_region(clean_dir):
    from engine.training.synthetic import PhotoViews

    ds = PhotoViews(clean_dir, crop=48, preset="train", seed=3, region_min=64, region_max=200,
                    views_per_region=4, max_side=256)
    items = take(ds, 12)
    for k in range(0, 12, 4):
        group = items[k:k + 4]
        assert [g["view"] for g in group] == [0, 1, 1, 1]
        assert len({g["names"] for g in group}) == 1
        for g in group:
            assert g["lq"].shape == g["hq"].shape == (3, 48, 48)
            assert 0.0 <= float(g["lq"].min()) and float(g["lq"].max()) <= 1.0
    again = take(PhotoViews(clean_dir, crop=48, preset="train", seed=3, region_min=64, region_max=200,
                            max_side=256), 12)
    assert all(torch.equal(a["lq"], b["lq"]) for a, b in zip(items, again, strict=True))


def test_native_crops_keep_pixel_noise_that_the_global_view_averages_away(grey_dir, only):
    from engine.training.synthetic import PhotoViews

    only("noisy")
    ds = PhotoViews(grey_dir, crop=48, seed=0, region_min=384, region_max=384, views_per_region=3)
    global_std, crop_std = [], []
    for item in take(ds, 30):
        residual = float((item["lq"] - item["hq"]).std())
        (global_std if item["view"] == 0 else crop_std).append(residual)
    # a 384 px region shrunk to 48 px averages about 8 x 8 pixels: the noise std drops several-fold
    assert np.mean(crop_std) > 3 * np.mean(global_std)


def test_photo_views_reject_bad_sizes(clean_dir):
    from engine.training.synthetic import PhotoViews

    with pytest.raises(ValueError, match="region_min"):
        PhotoViews(clean_dir, crop=96, region_min=64, region_max=128)


def test_region_pairs_are_native_crops_of_the_degraded_region(clean_dir, only):
    from engine.training.synthetic import RegionPairs

    only("hazy", "noisy")
    ds = RegionPairs(clean_dir, crop=64, seed=2, region_max=160, max_side=256)
    for item in take(ds, 6):
        region = item["region"]
        assert item["lq"].shape == item["hq"].shape == (3, 64, 64)
        assert 64 <= min(region.shape[:2]) and region.shape[2] == 3
        crop = item["lq"].permute(1, 2, 0).numpy()
        # the LQ crop is a piece of the region, found at some offset
        h, w = region.shape[:2]
        found = any(np.array_equal(region[y:y + 64, x:x + 64], crop)
                    for y in range(h - 63) for x in range(w - 63))
        assert found
        assert item["names"] == ("hazy", "noisy")
    batch = collate_pairs(take(ds, 3))
    assert len(batch["regions"]) == 3
    assert "regions" not in collate_pairs(take(RegionPairs(clean_dir, crop=64, with_region=False, max_side=256), 2))


def test_missing_or_empty_photo_folders_are_training_data_errors(tmp_path):
    from engine.training.common import TrainingDataError
    from engine.training.synthetic import load_photos

    with pytest.raises(TrainingDataError, match="no such folder"):
        load_photos(tmp_path / "missing")
    with pytest.raises(TrainingDataError, match="no readable images"):
        load_photos(tmp_path)
    with pytest.raises(TrainingDataError, match="no images"):
        SyntheticPairs(tmp_path, 32, photos_in_memory=False)
