"""Writing: ICC, EXIF and DPI written back, alpha, formats and quality, atomic writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from engine.io import writer
from engine.io.reader import load_image
from engine.io.writer import ImageWriteError, save_image
from tests.engine.io.images import SRGB_ICC, exif_with, gradient

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


@pytest.mark.parametrize("fmt,suffix", [("jpeg", ".jpg"), ("png", ".png"), ("webp", ".webp"), ("tiff", ".tif")])
def test_icc_and_exif_round_trip(tmp_path, fmt, suffix):
    src = tmp_path / "in.png"
    Image.fromarray(gradient()).save(src, icc_profile=SRGB_ICC, exif=exif_with(), dpi=(240, 240))
    loaded = load_image(src)
    assert loaded.icc_profile == SRGB_ICC and loaded.exif
    out = save_image(loaded.pixels, tmp_path / f"out{suffix}", format=fmt, quality=90, metadata=loaded)
    with Image.open(out) as im:
        assert im.format == writer._PIL_NAMES[fmt]
        assert im.info.get("icc_profile") == SRGB_ICC
        assert im.getexif().get(0x010F) == "PhotoMend Cam"
        if fmt != "webp":
            assert tuple(round(v) for v in im.info["dpi"]) == (240, 240)


def test_alpha_passes_through_untouched(tmp_path):
    arr = np.dstack([gradient(), (np.arange(40 * 60) % 256).reshape(40, 60).astype(np.uint8)])
    Image.fromarray(arr).save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png")
    assert loaded.alpha is not None and loaded.pixels.shape == (40, 60, 3)
    restored = 1.0 - loaded.pixels  # any change to the colour
    for fmt, suffix in (("png", ".png"), ("webp", ".webp"), ("tiff", ".tif")):
        out = save_image(restored, tmp_path / f"out{suffix}", format=fmt, metadata=loaded, quality=100)
        with Image.open(out) as im:
            assert im.mode == "RGBA"
            if fmt != "webp":  # lossy WebP may touch alpha
                np.testing.assert_array_equal(np.asarray(im)[..., 3], arr[..., 3])
    with Image.open(save_image(restored, tmp_path / "out.jpg", metadata=loaded, format="jpeg")) as im:
        assert im.mode == "RGB"  # JPEG cannot carry alpha


def test_save_refuses_to_overwrite_the_input(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(gradient()).save(src)
    before = src.read_bytes()
    with pytest.raises(ImageWriteError, match="overwrite the input"):
        save_image(load_image(src), src)
    assert src.read_bytes() == before


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken(fh, *args, **kwargs):
        fh.write(b"\x89PNG half a file")
        raise OSError("disk full")

    monkeypatch.setattr(writer, "_encode", broken)
    with pytest.raises(ImageWriteError, match="disk full"):
        save_image(np.zeros((8, 8, 3), np.float32), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_no_output(tmp_path):
    """SIGKILL while a large PNG is being encoded: the destination never exists half-written."""
    target = tmp_path / "big.png"
    code = textwrap.dedent(f"""
        import numpy as np
        from engine.io.writer import save_image
        pixels = np.random.default_rng(0).random((3000, 3000, 3), dtype=np.float32)
        print("ready", flush=True)
        save_image(pixels, {str(target)!r}, format="png")
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while not any(p.suffix == ".part" for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, "the writer never started"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    assert all(p.name.startswith(".") for p in tmp_path.iterdir())  # only a hidden temp file


def test_format_and_quality_are_selectable(tmp_path):
    pixels = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    small = save_image(pixels, tmp_path / "q10.webp", format="webp", quality=10)
    large = save_image(pixels, tmp_path / "q95.webp", format="webp", quality=95)
    assert small.stat().st_size < large.stat().st_size
    with Image.open(save_image(pixels, tmp_path / "x.bmp", format="BMP")) as im:
        assert im.format == "BMP"
    with pytest.raises(ValueError, match="unsupported output format"):
        save_image(pixels, tmp_path / "x.gif", format="gif")
