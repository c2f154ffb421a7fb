"""Model files are untrusted input: a pickle payload is refused on every loading path without any of
it running, and weights that do not fit give one clear line naming the file.

Each payload, if unpickled, would create a marker file (``test_payload_is_live`` proves it does);
every other test loads the payload through one engine path and checks the marker never appears.
"""

from __future__ import annotations

import pickle
import re
import shutil
import struct
from pathlib import Path

import pytest
import torch

from engine.bundle import DETECTOR, RESTORER, ModelBundle
from engine.cli import main as photomend
from engine.inference.detect import Detector
from engine.inference.restoration import RestorationModel
from engine.inference.runtime import Restorer
from engine.models.official import load_official, read_official_state_dict
from engine.models.serialization import ModelFileError, load_weights
from engine.training.common import load_trainer_state
from tests.reliability.conftest import build_bundle


class Payload:
    """Unpickling this runs ``open(marker, "w")``: arbitrary code, as a hostile model file would."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def raw_pickle(marker: Path) -> bytes:
    return pickle.dumps({"state_dict": {"weight": Payload(marker)}}, protocol=2)


def torch_zip(marker: Path, path: Path) -> Path:
    """A file in torch.save's zip format whose data.pkl carries the payload (as a .pt/.ckpt would)."""
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "extra": Payload(marker)}, path)
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "the payload ran"


def test_payload_is_live(tmp_path):
    """Control: plain unpickling does run the payload, so the other tests can fail."""
    marker = tmp_path / "PWNED-control"
    pickle.loads(raw_pickle(marker))
    assert marker.exists()
    marker.unlink()
    torch_zip(marker, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("security") / "good")


def poisoned_bundle(tmp_path: Path, good: Path, stem: str, data: bytes) -> Path:
    folder = tmp_path / f"poisoned-{stem}"
    shutil.copytree(good, folder)
    ModelBundle(folder).weights_file(stem).write_bytes(data)
    return folder


@pytest.mark.parametrize("stem", [DETECTOR, RESTORER])
@pytest.mark.parametrize("kind", ["raw", "zip"])
def test_pickle_disguised_as_safetensors_is_refused(tmp_path, good_bundle, marker, stem, kind):
    data = raw_pickle(marker) if kind == "raw" else torch_zip(marker, tmp_path / "evil.pt").read_bytes()
    folder = poisoned_bundle(tmp_path, good_bundle, stem, data)
    loaders = [lambda: Restorer(folder, "cpu")]
    loaders.append((lambda: Detector.from_dir(folder)) if stem == DETECTOR
                   else (lambda: RestorationModel.from_dir(folder)))
    for load in loaders:
        with pytest.raises(ModelFileError) as info:
            load()
        message = str(info.value)
        assert "\n" not in message and str(ModelBundle(folder).weights_file(stem)) in message
        assert "safetensors" in message


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
@pytest.mark.parametrize("kind", ["raw", "zip"])
def test_official_checkpoint_with_payload_is_refused(tmp_path, marker, suffix, kind):
    path = tmp_path / f"daclip_ViT-B-32{suffix}"
    if kind == "raw":
        path.write_bytes(raw_pickle(marker))
    else:
        torch_zip(marker, path)
    for load in (read_official_state_dict, load_official, Detector.from_dir):
        with pytest.raises(ModelFileError) as info:
            load(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_trainer_resume_state_with_payload_is_refused(tmp_path, marker, good_bundle):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch_zip(marker, run_dir / "trainer_state.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_trainer_state(run_dir)
    (run_dir / "trainer_state.pt").write_bytes(raw_pickle(marker))
    with pytest.raises(pickle.UnpicklingError):
        load_trainer_state(run_dir)
    # the resumed weights (checkpoint.safetensors) go through the safetensors loader
    (run_dir / "checkpoint.safetensors").write_bytes(raw_pickle(marker))
    model = RestorationModel.from_dir(good_bundle)
    with pytest.raises(ModelFileError, match="checkpoint.safetensors"):
        load_weights(model.net, run_dir / "checkpoint")


def test_clip_base_weights_with_payload_are_refused(tmp_path, marker):
    """``photomend train daclip --clip-weights FILE`` reads FILE through open_clip with weights_only."""
    import open_clip

    from engine.models.daclip import register_clip_configs

    register_clip_configs()
    path = torch_zip(marker, tmp_path / "clip.pt")
    with pytest.raises(Exception):  # noqa: B017  (open_clip re-raises torch's UnpicklingError)
        open_clip.create_model("PhotoMend-ViT-Tiny-Test", pretrained=str(path), weights_only=True)


def test_cli_refuses_a_poisoned_bundle(tmp_path, good_bundle, marker, capsys):
    folder = poisoned_bundle(tmp_path, good_bundle, DETECTOR, raw_pickle(marker))
    photo = tmp_path / "in" / "p.png"
    photo.parent.mkdir()
    from PIL import Image

    Image.new("RGB", (16, 16)).save(photo)
    assert photomend(["restore", str(photo), "-o", str(tmp_path / "out"), "--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ModelBundle(folder).weights_file(DETECTOR).name in err
    evil = tmp_path / "evil.pt"
    evil.write_bytes(raw_pickle(marker))
    assert photomend(["detect", str(photo), "--model", str(evil)]) == 2
    assert "evil.pt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------- wrong weights


def test_wrong_shapes_name_the_file(tmp_path, good_bundle):
    from engine.inference.restoration import RestorerConfig
    from engine.models.unet import UNetConfig

    folder = tmp_path / "wrong"
    shutil.copytree(good_bundle, folder)
    config = RestorationModel.from_dir(good_bundle).config
    wider = UNetConfig(**{**config.unet.__dict__, "base_channels": 16})
    other = tmp_path / "other"
    RestorationModel(RestorerConfig(unet=wider)).save(other)
    weights = ModelBundle(folder).weights_file(RESTORER)
    shutil.copy(ModelBundle(other).weights_file(RESTORER), weights)
    with pytest.raises(ModelFileError, match=re.escape(weights.name) + ": tensor .* has shape") as info:
        Restorer(folder, "cpu")
    assert str(weights) in str(info.value)


def test_missing_and_extra_tensors_name_the_file(tmp_path, good_bundle):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "missing"
    shutil.copytree(good_bundle, folder)
    weights = ModelBundle(folder).weights_file(DETECTOR)
    tensors = load_file(str(weights))
    tensors.pop(sorted(tensors)[0])
    tensors["backdoor.weight"] = torch.zeros(3)
    save_file(tensors, str(weights))
    with pytest.raises(ModelFileError, match="weights do not fit") as info:
        Restorer(folder, "cpu")
    assert str(weights) in str(info.value)


def test_unknown_architecture_names_the_file(tmp_path, good_bundle):
    import json

    folder = tmp_path / "unknown"
    shutil.copytree(good_bundle, folder)
    config = ModelBundle(folder).config_file(RESTORER)
    meta = json.loads(config.read_text())
    meta["architecture"] = "mystery-net"
    config.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="unknown architecture 'mystery-net'") as info:
        Restorer(folder, "cpu")
    assert str(config) in str(info.value)
    meta["architecture"] = ModelBundle(good_bundle).config(RESTORER)["architecture"]
    meta["config"]["__class__"] = "os.system"
    config.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="unknown config keys") as info:
        Restorer(folder, "cpu")
    assert str(config) in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "huge header", "empty", "garbage json"])
def test_damaged_safetensors_name_the_file(tmp_path, good_bundle, damage):
    folder = tmp_path / "damaged"
    shutil.copytree(good_bundle, folder)
    target = ModelBundle(folder).weights_file(RESTORER)
    data = target.read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "huge header":
        data = struct.pack("<Q", 1 << 62) + data[8:]
    elif damage == "empty":
        data = b""
    else:
        data = struct.pack("<Q", 12) + b"{not json!!}" + data[8:]
    target.write_bytes(data)
    with pytest.raises(ModelFileError) as info:
        Restorer(folder, "cpu")
    assert "\n" not in str(info.value) and str(target) in str(info.value)
