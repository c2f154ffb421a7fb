"""``photomend --self-test`` (also ``photomend selftest``): restore a bundled sample and check the output.

Used by ``make package-test`` on the frozen app: it proves the bundle's resources, model files,
torch and the image codecs all work. Exit status 0 when the check passes, 1 otherwise.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("selftest", help="restore a bundled sample photo and check the result")
    p.add_argument("--device", default="cpu", help="device to test (default cpu)")
    p.set_defaults(func=lambda args: run_self_test(args.device))


def _fail(message: str) -> int:
    print(f"photomend self-test: FAILED: {message}", file=sys.stderr)
    return 1


def run_self_test(device: str = "cpu") -> int:
    """Restore the first bundled sample with the bundled model; 0 when the output checks out."""
    import numpy as np

    from engine.bundle import bundled_model_dir, has_bundled_model
    from engine.io.reader import IMAGE_SUFFIXES, load_image
    from engine.io.writer import save_image
    from engine.resources import samples_dir

    samples = sorted(p for p in samples_dir().glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not samples:
        return _fail(f"no sample photos in {samples_dir()}")
    if not has_bundled_model():
        return _fail(f"no model bundled in {bundled_model_dir()}")
    try:
        from engine.inference.runtime import Restorer
        from engine.jobs.api import RestoreOptions

        start = time.perf_counter()
        restorer = Restorer(device=device)
        loaded = load_image(samples[0])
        # the guard off: the self-test must run the restorer, whatever the detector sees in the sample
        result = restorer.restore(loaded.pixels, RestoreOptions(steps=1, guard=None))
        with tempfile.TemporaryDirectory(prefix="photomend-selftest-") as tmp:
            out = save_image(result.image, Path(tmp) / f"restored{samples[0].suffix}", metadata=loaded)
            back = load_image(out)
        seconds = time.perf_counter() - start
    except Exception as exc:  # the self-test reports anything as one line
        return _fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    if back.pixels.shape != loaded.pixels.shape:
        return _fail(f"output shape {back.pixels.shape} differs from input {loaded.pixels.shape}")
    if not np.isfinite(result.image).all():
        return _fail("output has non-finite pixels")
    mse = float(np.mean((result.image - loaded.pixels) ** 2))
    psnr = 10 * np.log10(1.0 / max(mse, 1e-12))
    # a restoration keeps its input's structure (a brightened dark photo is far in PSNR); garbage does not
    corr = float(np.corrcoef(result.image.mean(axis=2).ravel(), loaded.pixels.mean(axis=2).ravel())[0, 1])
    if not corr >= 0.5:
        return _fail(f"output does not resemble the input (luminance correlation {corr:.2f}, PSNR {psnr:.1f} dB)")
    found = ", ".join(result.detection.degradations) or "none"
    print(f"photomend self-test: ok ({samples[0].name} {loaded.width}x{loaded.height}, detected: {found}, "
          f"PSNR to input {psnr:.1f} dB, {seconds:.1f} s on {restorer.device})")
    return 0
