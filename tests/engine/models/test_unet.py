"""Conditional U-Net: shapes, odd sizes (via padding), conditioning path, ablation variant."""

import pytest
import torch
import torch.nn.functional as F

from engine.models.unet import STATS_FEATURES, ConditionalUNet, UNetConfig, image_statistics

TINY = UNetConfig(base_channels=8, channel_mult=(1, 2, 4), attention_levels=(1, 2), attention_heads=2,
                  time_dim=16, cond_dim=12)


def _perturb(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_shapes_and_multiple():
    net = ConditionalUNet(TINY)
    assert net.multiple == 2 * 4
    x = torch.rand(2, 3, 32, 48)
    out = net(x, x, torch.rand(2), torch.randn(2, 3, 12))
    assert out.shape == x.shape


def test_fresh_network_returns_its_state():
    """Zero-initialised head: an untrained network predicts x0 = x_t (so x0 = mu at the one-step start)."""
    net = ConditionalUNet(TINY)
    mu, x_t = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    assert torch.equal(net(x_t, mu, torch.rand(1), torch.randn(1, 3, 12)), x_t)


def test_non_multiple_size_rejected():
    net = ConditionalUNet(TINY)
    x = torch.rand(1, 3, 37, 53)
    with pytest.raises(ValueError, match="multiple"):
        net(x, x, torch.rand(1), torch.randn(1, 3, 12))


def test_condition_changes_output_and_is_required():
    torch.manual_seed(0)
    net = ConditionalUNet(TINY)
    _perturb(net)
    x = torch.rand(1, 3, 16, 16)
    t = torch.rand(1)
    a = net(x, x, t, torch.randn(1, 3, 12))
    b = net(x, x, t, torch.randn(1, 3, 12))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="condition"):
        net(x, x, t, None)


def test_unconditioned_variant_has_no_conditioning_path():
    net = ConditionalUNet(UNetConfig(**{**TINY.__dict__, "conditioned": False}))
    names = [n for n, _ in net.named_parameters()]
    assert not any("cond" in n or "attns" in n for n in names)
    x = torch.rand(1, 3, 16, 16)
    assert net(x, x, torch.rand(1)).shape == x.shape


def test_timestep_changes_output():
    torch.manual_seed(0)
    net = ConditionalUNet(TINY)
    _perturb(net)
    x = torch.rand(1, 3, 16, 16)
    c = torch.randn(1, 3, 12)
    assert not torch.allclose(net(x, x, torch.tensor([0.1]), c), net(x, x, torch.tensor([0.9]), c))


def test_locality_tiles_match_away_from_borders():
    """No spatial statistics: a crop's output equals the full output in the crop's interior."""
    torch.manual_seed(0)
    net = ConditionalUNet(TINY).eval()
    _perturb(net)
    k = TINY.receptive_radius
    x = torch.rand(1, 3, 96, 96)
    c = torch.randn(1, 3, 12)
    t = torch.ones(1)
    with torch.no_grad():
        full = net(x, x, t, c)
        crop = net(x[..., :80, :80], x[..., :80, :80], t, c)
    inner = 80 - k
    assert inner >= 8
    assert torch.allclose(full[..., :inner, :inner], crop[..., :inner, :inner], atol=1e-5)
    assert not torch.allclose(full[..., :80, :80], crop, atol=1e-5)  # borders do differ


AFFINE = UNetConfig(**{**TINY.__dict__, "global_affine": True})


def test_global_affine_is_identity_when_fresh_and_absent_by_default():
    assert ConditionalUNet(TINY).global_affine is None  # older restorer.json files keep their network
    net = ConditionalUNet(AFFINE)
    mu, x_t = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    assert torch.equal(net(x_t, mu, torch.rand(1), torch.randn(1, 3, 12)), x_t)


def test_global_affine_applies_the_predicted_gain_and_offset_through_the_gate():
    net = ConditionalUNet(AFFINE)
    head = net.global_affine
    with torch.no_grad():
        head.out[-1].bias.copy_(torch.tensor([0.6931472, 0.0, 0.0, 0.0, 0.1, -0.2]))  # red x2, green +0.1, blue -0.2
        head.gate.bias.fill_(30.0)  # gate ~ 1
    mu = torch.rand(2, 3, 16, 16) * 0.5
    out = net(mu, mu, torch.ones(2), torch.randn(2, 3, 12))  # the one-step start: x_T = mu
    assert torch.allclose(out[:, 0], 2 * mu[:, 0], atol=1e-5)
    assert torch.allclose(out[:, 1], mu[:, 1] + 0.1, atol=1e-5)
    assert torch.allclose(out[:, 2], mu[:, 2] - 0.2, atol=1e-5)
    with torch.no_grad():
        head.gate.bias.fill_(-30.0)  # gate ~ 0: x_t passes through
    assert torch.allclose(net(mu, mu, torch.ones(2), torch.randn(2, 3, 12)), mu, atol=1e-5)


def test_global_affine_is_bounded_and_tiling_safe():
    torch.manual_seed(0)
    net = ConditionalUNet(AFFINE).eval()
    _perturb(net)
    with torch.no_grad():
        net.global_affine.out[-1].bias.fill_(50.0)
    gain, _ = net.global_affine.params(torch.randn(1, 3, 12))
    assert gain.max() <= 16.0 + 1e-4
    with torch.no_grad():
        net.global_affine.out[-1].bias.fill_(0.3)
    k = AFFINE.receptive_radius
    x, c, t = torch.rand(1, 3, 96, 96), torch.randn(1, 3, 12), torch.ones(1)
    with torch.no_grad():
        full, crop = net(x, x, t, c), net(x[..., :80, :80], x[..., :80, :80], t, c)
    inner = 80 - k
    assert torch.allclose(full[..., :inner, :inner], crop[..., :inner, :inner], atol=1e-5)


STATS = UNetConfig(**{**TINY.__dict__, "global_affine": True, "image_stats": True})


def test_image_statistics_describe_colour_independently_of_resolution():
    flat = torch.full((1, 3, 40, 56), 0.25)
    flat[:, 1] = 0.5
    stats = image_statistics(flat).view(1, 3, -1)
    assert stats.shape[-1] * 3 == STATS_FEATURES
    assert torch.allclose(stats[0, 0], torch.tensor([0.25, 0.0] + [0.25] * 5))
    assert torch.allclose(stats[0, 1, 2:], torch.full((5,), 0.5))
    torch.manual_seed(0)
    small = F.interpolate(torch.rand(1, 3, 8, 8), size=(192, 192), mode="bilinear")
    large = F.interpolate(small, size=(768, 768), mode="bilinear")  # the same photo at 4x the pixels
    assert torch.allclose(image_statistics(small), image_statistics(large), atol=0.02)
    assert not torch.allclose(image_statistics(small), image_statistics(small * 0.5), atol=0.02)


def test_statistics_head_serves_the_ablation_and_shares_the_photo_statistics_across_tiles():
    assert ConditionalUNet(UNetConfig(**{**AFFINE.__dict__, "conditioned": False})).global_affine is None
    ablation = ConditionalUNet(UNetConfig(**{**STATS.__dict__, "conditioned": False}))
    assert ablation.global_affine is not None and ablation.global_affine.cond_in is None
    torch.manual_seed(0)
    net = ConditionalUNet(STATS).eval()
    _perturb(net)
    k = STATS.receptive_radius
    x, c, t = torch.rand(1, 3, 96, 96), torch.randn(1, 3, 12), torch.ones(1)
    x[..., 48:, :] *= 0.3  # a tile's statistics differ from the photo's
    with torch.no_grad():
        full = net(x, x, t, c)
        shared = net(x[..., :80, :80], x[..., :80, :80], t, c, image_statistics(x))
        own = net(x[..., :80, :80], x[..., :80, :80], t, c)
    inner = 80 - k
    assert torch.allclose(full[..., :inner, :inner], shared[..., :inner, :inner], atol=1e-5)
    assert not torch.allclose(full[..., :inner, :inner], own[..., :inner, :inner], atol=1e-3)


def test_weights_saved_before_the_statistics_input_still_load(tmp_path):
    from safetensors.torch import load_file, save_file

    from engine.inference.restoration import RestorationModel, RestorerConfig

    model = RestorationModel(RestorerConfig(unet=AFFINE))
    _perturb(model.net)
    model.save(tmp_path)
    from engine.bundle import RESTORER, ModelBundle

    weights = ModelBundle(tmp_path).weights_file(RESTORER)
    legacy = {k.replace("global_affine.cond_in.", "global_affine.mlp.").replace("global_affine.out.1.", "global_affine.mlp.3."): v
              for k, v in load_file(str(weights)).items()}  # the names of the old layout
    assert "global_affine.mlp.3.weight" in legacy
    save_file(legacy, str(weights))
    loaded = RestorationModel.from_dir(tmp_path)
    assert torch.equal(loaded.net.global_affine.out[1].weight, model.net.global_affine.out[1].weight)


def test_inference_fast_path_matches_the_training_path():
    """Channels-last input takes a fused layer norm, inference the in-place block: same outputs."""
    net = ConditionalUNet(TINY)
    _perturb(net)
    x, mu, t, c = torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 48), torch.rand(1), torch.randn(1, 3, 12)
    with torch.enable_grad():
        reference = net(x, mu, t, c).detach()  # the plain path: contiguous, with autograd
    fast = net.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = fast(x.contiguous(memory_format=torch.channels_last), mu.contiguous(memory_format=torch.channels_last),
                   t, c)
    assert torch.allclose(got, reference, atol=1e-5)
    assert not torch.equal(reference, x)  # the perturbed network does change its input


def test_channel_norm_is_the_same_in_both_layouts():
    from engine.models.unet import ChannelNorm

    norm = ChannelNorm(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    plain = norm(x)
    fused = norm(x.contiguous(memory_format=torch.channels_last))
    assert fused.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fused, plain, atol=1e-5)
