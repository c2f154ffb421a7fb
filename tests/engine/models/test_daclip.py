"""DA-CLIP model: zero-init identity, captions, save/load, official checkpoint layout (its losses: test_losses.py)."""

from __future__ import annotations

import pytest
import torch

from engine.bundle import DETECTOR, ModelBundle
from engine.models.daclip import (
    DaClip,
    DaClipConfig,
    all_sets,
    load_pretrained,
    save_pretrained,
    set_caption,
)
from engine.models.official import load_official, official_to_project
from engine.models.serialization import ModelFileError
from engine.vocab import DEGRADATIONS, OFFICIAL_DACLIP_DEGRADATIONS

TINY = "PhotoMend-ViT-Tiny-Test"
TINY_RN = "PhotoMend-RN-Tiny-Test"
TINY_UC = "PhotoMend-UC-Tiny-Test"


@pytest.fixture(scope="module", params=[TINY, TINY_RN, TINY_UC])
def model(request) -> DaClip:
    """A tiny DA-CLIP on each supported image tower (open_clip's ViT and ModifiedResNet, the project's
    pixel-unshuffle conv tower)."""
    torch.manual_seed(0)
    return DaClip(DaClipConfig.for_clip_model(request.param)).eval()


def test_registered_configs_are_open_clip_models():
    import open_clip

    from engine.models.daclip import register_clip_configs

    register_clip_configs()
    assert {"PhotoMend-ViT-T12-96", "PhotoMend-RN-96", TINY, TINY_RN} <= set(open_clip.list_models())


def test_fresh_controller_leaves_content_exactly_equal_to_frozen_encoder(model):
    x = torch.rand(3, 3, model.image_size, model.image_size)
    with torch.no_grad():
        # a trained-looking controller body does not matter while the control linears are zero
        for p in model.controller.parameters():
            p.add_(0.1 * torch.randn_like(p))
        content, slots = model.encode_image(x)
        base = model.encode_base(x)
    assert torch.equal(content, base)
    assert slots.shape == (3, 2, model.embed_dim)
    model.init_controller()


def test_nonzero_control_changes_content(model):
    x = torch.rand(2, 3, model.image_size, model.image_size)
    m = DaClip(model.cfg).eval()
    with torch.no_grad():
        torch.nn.init.normal_(m.zero_linears[0].weight, std=0.5)
        content, _ = m.encode_image(x)
        assert not torch.allclose(content, m.encode_base(x))


def test_resnet_controller_is_a_conv_tower_with_zero_convs():
    m = DaClip(DaClipConfig.for_clip_model(TINY_RN))
    assert m.resnet and all(isinstance(z, torch.nn.Conv2d) for z in m.zero_linears)
    assert len(m.zero_linears) == 4  # one per bottleneck block of layers [1, 1, 1, 1]
    assert all(not z.weight.detach().any() and not z.bias.detach().any() for z in m.zero_linears)


def test_frozen_resnet_tower_keeps_batch_norm_statistics_in_training():
    m = DaClip(DaClipConfig.for_clip_model(TINY_RN))
    m.freeze_clip()
    m.train()
    assert not m.clip.visual.training and m.controller.training
    before = m.clip.visual.bn1.running_mean.clone()
    hiddens, slots = m.control(torch.rand(4, 3, m.image_size, m.image_size))
    m.content(torch.rand(4, 3, m.image_size, m.image_size), hiddens).sum().backward()
    assert torch.equal(m.clip.visual.bn1.running_mean, before)
    assert not torch.equal(m.controller.bn1.running_mean, before)  # the controller's own statistics move
    m.unfreeze_clip()
    m.train()
    assert m.clip.visual.training








def test_captions_cover_every_set_once():
    sets = all_sets(DEGRADATIONS)
    assert len(sets) == 1 + 11 + 55 and sets[0] == ()
    assert set_caption(("noisy", "hazy")) == set_caption(("hazy", "noisy")) == "a hazy and noisy photo"
    assert set_caption(()) == "a clean photo"


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_save_load_round_trip(model, tmp_path, dtype):
    with torch.no_grad():
        model.zero_linears[1].weight.normal_(std=0.1)  # make the control path matter
    save_pretrained(model, tmp_path, dtype=dtype)
    assert ModelBundle(tmp_path).has(DETECTOR)
    loaded = load_pretrained(tmp_path)
    assert loaded.cfg == model.cfg
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    tol = 0 if dtype is None else 2e-2
    for k, (u, v) in enumerate(zip(a, b, strict=True)):
        # fp16 storage perturbs cosines by ~1e-3; the logits are cosines times the logit scale (100)
        t = tol * (float(model.logit_scale.detach().exp()) if k == 2 else 1.0)
        assert torch.allclose(u, v, atol=t, rtol=tol)
    model.init_controller()


def test_load_refuses_wrong_architecture(model, tmp_path):
    save_pretrained(model, tmp_path)
    config = ModelBundle(tmp_path).config_file(DETECTOR)
    config.write_text(config.read_text().replace("daclip-slots", "unet"))
    with pytest.raises(ModelFileError, match="architecture"):
        load_pretrained(tmp_path)


def _detector_file(folder):
    return ModelBundle(folder).stem(DETECTOR).with_suffix(".safetensors")


def test_the_bundle_stores_only_the_token_rows_the_model_reads(model, tmp_path):
    import open_clip
    from safetensors.torch import load_file

    from engine.models.daclip import TOKEN_ROWS, TOKEN_TABLE, TOKEN_VALUES, used_token_ids

    save_pretrained(model, tmp_path, dtype=None)
    stored = load_file(str(_detector_file(tmp_path)))
    ids = used_token_ids(model.cfg)
    table = model.state_dict()[TOKEN_TABLE]
    assert TOKEN_TABLE not in stored and torch.equal(stored[TOKEN_ROWS].long(), ids)
    assert len(ids) < table.shape[0] // 100 and torch.equal(stored[TOKEN_VALUES], table[ids])
    # every prompt and every caption of the base stage reads the same embeddings after loading
    loaded = load_pretrained(tmp_path)
    texts = list(model.cfg.prompts) + [set_caption(s) for s in all_sets(model.cfg.vocabulary)]
    tokens = open_clip.tokenize(texts, context_length=model.cfg.context_length)
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), loaded.encode_text(tokens))


def test_a_file_with_the_whole_token_table_still_loads(model, tmp_path):
    from engine.models.daclip import ARCHITECTURE, TOKEN_TABLE
    from engine.models.serialization import save_model

    save_model(model, model.cfg, ModelBundle(tmp_path).stem(DETECTOR), ARCHITECTURE)  # the layout before
    assert torch.equal(load_pretrained(tmp_path).state_dict()[TOKEN_TABLE], model.state_dict()[TOKEN_TABLE])


def test_bad_token_rows_are_refused_in_one_line(model, tmp_path):
    from safetensors.torch import load_file, save_file

    from engine.models.daclip import TOKEN_ROWS

    save_pretrained(model, tmp_path, dtype=None)
    path = _detector_file(tmp_path)
    tensors = load_file(str(path))
    rows = tensors[TOKEN_ROWS].clone()
    for bad in (rows.clone().fill_(rows[0]), rows + 10**6, None):  # duplicates, out of the table, missing
        broken = dict(tensors)
        if bad is None:
            del broken[TOKEN_ROWS]
        else:
            broken[TOKEN_ROWS] = bad
        save_file(broken, str(path))
        with pytest.raises(ModelFileError, match="token table") as err:
            load_pretrained(tmp_path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- official DA-CLIP layout


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with exactly the key layout of the official ``DaCLIP`` module, at tiny size."""
    import open_clip

    from engine.models.daclip import clip_config

    torch.manual_seed(seed)
    clip = open_clip.CLIP(**clip_config(TINY))
    sd = {f"clip.{k}": v.clone() for k, v in clip.state_dict().items()}
    sd.update({f"visual.{k}": v.clone() for k, v in clip.visual.state_dict().items()})  # alias
    width = clip.visual.conv1.out_channels
    for k, v in clip.visual.state_dict().items():
        if k.startswith("transformer."):
            sd[f"visual_control.transformer.{k}"] = v + 0.01  # ControlTransformer wraps the original
        else:
            sd[f"visual_control.{k}"] = v + 0.01
    for i in range(len(clip.visual.transformer.resblocks)):
        sd[f"visual_control.transformer.zero_modules.{i}.weight"] = torch.zeros(width, width)
        sd[f"visual_control.transformer.zero_modules.{i}.bias"] = torch.zeros(width)
    sd["logit_scale"] = torch.tensor(4.6)
    return sd


def test_official_layout_loads_as_one_slot_model(tmp_path):
    sd = official_state_dict()
    path = tmp_path / "daclip_tiny.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    m = load_official(path, head_width=16)
    assert m.cfg.n_slots == 1 and m.cfg.vocabulary == OFFICIAL_DACLIP_DEGRADATIONS
    assert m.cfg.classes == OFFICIAL_DACLIP_DEGRADATIONS  # no "none" prototype in the official model
    assert torch.equal(m.slot_proj[0], sd["visual_control.proj"])
    assert torch.equal(m.controller.transformer.resblocks[0].mlp.c_fc.weight,
                       sd["visual_control.transformer.transformer.resblocks.0.mlp.c_fc.weight"])
    assert torch.equal(m.clip.visual.conv1.weight, sd["clip.visual.conv1.weight"])
    assert torch.equal(m.logit_scale, sd["logit_scale"])
    x = torch.rand(2, 3, m.image_size, m.image_size)
    with torch.no_grad():
        content, slots, logits = m(x)
        assert torch.equal(content, m.encode_base(x))  # zero modules: DA-CLIP's identity at init
    assert slots.shape == (2, 1, m.embed_dim) and logits.shape == (2, 1, 10)


def test_official_zero_modules_feed_the_frozen_encoder():
    sd = official_state_dict()
    sd["visual_control.transformer.zero_modules.1.weight"] = 0.05 * torch.randn_like(
        sd["visual_control.transformer.zero_modules.1.weight"])
    from engine.models.official import model_from_official_state_dict

    m = model_from_official_state_dict(sd, head_width=16)
    x = torch.rand(1, 3, m.image_size, m.image_size)
    with torch.no_grad():
        assert not torch.allclose(m.encode_image(x)[0], m.encode_base(x))


def test_official_layout_errors_name_the_file(tmp_path):
    sd = official_state_dict()
    del sd["visual_control.transformer.zero_modules.0.bias"]
    path = tmp_path / "broken.pt"
    torch.save(sd, path)
    with pytest.raises(ModelFileError, match="broken.pt"):
        load_official(path, head_width=16)
    bad = tmp_path / "pickle.pt"
    torch.save({"obj": _Evil()}, bad)
    with pytest.raises(ModelFileError, match="pickle.pt"):
        load_official(bad)


class _Evil:
    """An arbitrary object: a weights-only load must refuse to unpickle it."""


def test_official_key_mapping_drops_the_visual_alias():
    mapped = official_to_project(official_state_dict())
    assert not any(k.startswith("visual.") or k.startswith("visual_control.") for k in mapped)
    assert mapped["slot_proj"].ndim == 3


def test_presence_head_saves_loads_and_needs_a_resnet(tmp_path):
    from engine.models.daclip import load_pretrained, save_pretrained

    torch.manual_seed(1)
    m = DaClip(DaClipConfig.for_clip_model("PhotoMend-RN-Tiny-Test", presence=True)).eval()
    x = torch.rand(6, 3, 32, 32)
    _, pooled, _ = m.control_features(x)
    logits = m.presence_logits(pooled, 3)
    assert logits.shape == (2, len(m.cfg.vocabulary))
    save_pretrained(m, tmp_path, dtype=None)
    again = load_pretrained(tmp_path)
    assert again.cfg.presence and torch.allclose(again.presence_logits(again.control_features(x)[1], 3), logits)
    with pytest.raises(ValueError, match="presence head needs a ResNet"):
        DaClip(DaClipConfig.for_clip_model("PhotoMend-ViT-Tiny-Test", presence=True))


def test_unshuffle_tower_replaces_open_clips_and_keeps_the_text_tower():
    from engine.models.conv_tower import UnshuffleConvTower

    m = DaClip(DaClipConfig.for_clip_model(TINY_UC, presence=True))
    assert isinstance(m.clip.visual, UnshuffleConvTower) and isinstance(m.controller, UnshuffleConvTower)
    assert m.resnet and len(m.zero_linears) == 4
    assert m.prototypes().shape == (len(m.cfg.classes), 32)
    m.freeze_clip()
    m.train()
    bn = m.clip.visual.stem[2]
    before = bn.running_mean.clone()
    hiddens, _ = m.control(torch.rand(4, 3, 32, 32))
    m.content(torch.rand(4, 3, 32, 32), hiddens).sum().backward()
    assert torch.equal(bn.running_mean, before)  # the frozen tower keeps its statistics


def test_unshuffle_tower_refuses_unknown_settings_and_bad_sizes():
    from engine.models.conv_tower import UnshuffleConvTower

    with pytest.raises(ValueError, match="unknown unshuffle-conv tower setting"):
        UnshuffleConvTower.from_config({"tower": "unshuffle-conv", "image_size": 64, "depth": 3}, 32)
    with pytest.raises(ValueError, match="multiple of 32"):
        UnshuffleConvTower(48)
