"""Conditional U-Net: shapes, odd sizes (via padding), conditioning path, ablation variant."""

import pytest
import torch

from engine.models.unet import ConditionalUNet, UNetConfig

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
