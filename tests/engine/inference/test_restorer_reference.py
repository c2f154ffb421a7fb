"""The bundled restorer keeps its outputs: a fixed input through ``resources/models/default`` must
match the reference stored in ``tests/engine/data/restorer_reference.npz``.

The reference was written before the start-up and end-to-end speed work (issue 18) by running this
module as a script (``python -m tests.engine.inference.test_restorer_reference``); rerun it only when the
bundled restorer is retrained on purpose. The condition is stored with the input, so the
reference tests the restorer alone, whatever the detector becomes.

Three paths are checked: the network on one padded tile at steps 1, the IR-SDE loop at steps 3
with a seeded generator, and the tiled runtime (several tiles, overlap blending, whole-photo
colour statistics) through :meth:`engine.inference.runtime.Restorer.restore_prepared`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from engine.bundle import bundled_model_dir, is_model_bundle

REFERENCE = Path(__file__).parents[1] / "data" / "restorer_reference.npz"
# float32 on one CPU: a different oneDNN kernel, thread count or memory layout reorders the sums;
# a real change of the network (a weight, a layer) moves outputs by far more than this
ATOL = 2e-4

pytestmark = pytest.mark.skipif(not is_model_bundle(bundled_model_dir()), reason="no bundled model")


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    """A 96 x 128 crop of a sample photo (uint8) and a condition drawn once (stored with it)."""
    from PIL import Image

    from engine.resources import samples_dir

    with Image.open(samples_dir() / "chelsea.jpg") as im:
        photo = np.asarray(im.convert("RGB"))[60:156, 80:208].copy()
    condition = np.random.default_rng(18).normal(0.0, 0.05, (3, 192)).astype(np.float32)
    return photo, condition


def _outputs(photo: np.ndarray, condition: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    from engine.inference.analysis import Analysis
    from engine.inference.runtime import Restorer
    from engine.jobs.api import Detection, RestoreOptions

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same summation order however many cores the machine has
    try:
        restorer = Restorer(device="cpu")
        image = photo.astype(np.float32) / 255.0
        lq = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).contiguous()
        cond = torch.from_numpy(condition).unsqueeze(0)
        one_step = restorer.model.predict(lq, cond, steps=1)
        generator = torch.Generator().manual_seed(7)
        three_steps = restorer.model.predict(lq, cond, steps=3, generator=generator)
        prepared = Analysis(Detection(("noisy",), {}), torch.from_numpy(condition))
        tiled = restorer.restore_prepared(image, prepared, RestoreOptions(steps=1, tile=64))
    finally:
        torch.set_num_threads(threads)
    return {"steps1": one_step[0].permute(1, 2, 0).numpy(), "steps3": three_steps[0].permute(1, 2, 0).numpy(),
            "tiled": tiled}


# outputs are stored as uint16 (x 65535): 8e-6 of rounding, far below ATOL, a quarter of the file
SCALE = 65535.0
OUTPUTS = ("steps1", "steps3", "tiled")


def write_reference(path: Path = REFERENCE) -> None:
    photo, condition = _inputs()
    outputs = {k: np.round(np.clip(v, 0, 1) * SCALE).astype(np.uint16) for k, v in _outputs(photo, condition).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, photo=photo, condition=condition, **outputs)


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return {k: data[k].astype(np.float32) / SCALE if k in OUTPUTS else data[k] for k in data.files}


@pytest.fixture(scope="module")
def outputs(reference):
    return _outputs(reference["photo"], reference["condition"])


def test_reference_input_is_the_sample_crop(reference):
    photo, condition = _inputs()
    assert np.array_equal(photo, reference["photo"])
    assert np.array_equal(condition, reference["condition"])


@pytest.mark.parametrize("name", OUTPUTS)
def test_restorer_matches_reference(reference, outputs, name):
    got, want = outputs[name], reference[name]
    assert got.shape == want.shape == reference["photo"].shape
    assert np.abs(got - want).max() <= ATOL
    # the restorer does change the photo: the reference is not the input passed through
    assert np.abs(want - reference["photo"] / 255.0).mean() > 1e-3


if __name__ == "__main__":
    write_reference()
    print(f"wrote {REFERENCE}", file=sys.stderr)
