"""RestorationModel: the inference contract (padding, steps, determinism) and save/load."""

import re

import pytest
import torch

from engine.bundle import RESTORER, ModelBundle
from engine.inference.restoration import RestorationModel, RestorerConfig
from engine.inference.sde import IRSDEConfig
from engine.models.serialization import ModelFileError
from engine.models.unet import UNetConfig

TINY = RestorerConfig(
    unet=UNetConfig(base_channels=8, channel_mult=(1, 2, 4), attention_levels=(2,), attention_heads=2,
                    time_dim=16, cond_dim=12),
    sde=IRSDEConfig(num_train_timesteps=20),
)


def _model(conditioned=True):
    torch.manual_seed(0)
    cfg = TINY if conditioned else RestorerConfig(UNetConfig(**{**TINY.unet.__dict__, "conditioned": False}), TINY.sde)
    m = RestorationModel(cfg)
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_odd_size_is_padded_and_cropped():
    m = _model()
    lq = torch.rand(2, 3, 37, 53)
    out = m.predict(lq, torch.randn(2, 3, 12))
    assert out.shape == lq.shape and out.min() >= 0 and out.max() <= 1


def test_tiny_image_smaller_than_padding():
    m = _model()
    assert m.predict(torch.rand(1, 3, 3, 5), torch.randn(1, 3, 12)).shape == (1, 3, 3, 5)


def test_one_step_deterministic_more_steps_stochastic():
    m = _model()
    lq, c = torch.rand(1, 3, 16, 16), torch.randn(1, 3, 12)
    assert torch.equal(m.predict(lq, c, steps=1), m.predict(lq, c, steps=1))
    a = m.predict(lq, c, steps=4, generator=torch.Generator().manual_seed(1))
    b = m.predict(lq, c, steps=4, generator=torch.Generator().manual_seed(1))
    d = m.predict(lq, c, steps=4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, d)


def test_condition_checked():
    m = _model()
    with pytest.raises(ValueError, match="condition"):
        m.predict(torch.rand(1, 3, 16, 16), None)
    with pytest.raises(ValueError, match="condition"):
        m.predict(torch.rand(1, 3, 16, 16), torch.randn(1, 3, 7))


def test_unconditioned_ignores_condition():
    m = _model(conditioned=False)
    lq = torch.rand(1, 3, 16, 16)
    assert torch.equal(m.predict(lq, None), m.predict(lq, torch.randn(1, 3, 12)))
    assert not m.conditioned


@pytest.mark.parametrize("conditioned", [True, False])
def test_save_load_round_trip(tmp_path, conditioned):
    m = _model(conditioned)
    m.save(tmp_path)
    assert ModelBundle(tmp_path).config_file(RESTORER).is_file() and ModelBundle(tmp_path).weights_file(RESTORER).is_file()
    back = RestorationModel.from_dir(tmp_path)
    assert back.config == m.config and back.multiple == m.multiple and back.cond_dim == 12
    lq, c = torch.rand(1, 3, 16, 16), torch.randn(1, 3, 12)
    assert torch.equal(back.predict(lq, c), m.predict(lq, c))


def test_load_rejects_mismatched_weights(tmp_path):
    _model().save(tmp_path)
    other = RestorationModel(RestorerConfig(UNetConfig(base_channels=16, cond_dim=12), TINY.sde))
    other.save(tmp_path / "other")
    ModelBundle(tmp_path / "other").weights_file(RESTORER).replace(ModelBundle(tmp_path).weights_file(RESTORER))
    with pytest.raises(ModelFileError, match=re.escape(ModelBundle(tmp_path).weights_file(RESTORER).name)):
        RestorationModel.from_dir(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(ModelFileError, match=re.escape(ModelBundle(tmp_path).config_file(RESTORER).name)):
        RestorationModel.from_dir(tmp_path)
