"""16-bit PNG and TIFF: read and written back at 16 bits, alpha included."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from engine.io import codecs
from engine.io.reader import load_image
from engine.io.writer import save_image
from tests.engine.io.images import SRGB_ICC, exif_with, read_png16

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def test_16bit_rgb_png_stays_16bit_exactly(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 65536, (30, 50, 3), dtype=np.uint16)
    src = tmp_path / "deep.png"
    with open(src, "wb") as fh:
        codecs.write_png16(fh, arr, SRGB_ICC, (300, 300), exif_with())
    loaded = load_image(src)
    assert loaded.bit_depth == 16 and loaded.mode == "RGB;16" and loaded.icc_profile == SRGB_ICC
    np.testing.assert_array_equal(np.round(loaded.pixels * 65535).astype(np.uint16), arr)
    out = save_image(loaded, tmp_path / "out.png")
    np.testing.assert_array_equal(read_png16(out), arr)
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == SRGB_ICC
        assert tuple(round(v) for v in im.info["dpi"]) == (300, 300)
        assert im.getexif().get(0x010F) == "PhotoMend Cam"
    # the same photo written as JPEG gets 8 bits
    with Image.open(save_image(loaded, tmp_path / "out.jpg", format="jpeg")) as im:
        assert im.mode == "RGB"


def test_16bit_gray_png_and_rgb_tiff(tmp_path):
    gray = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 53 % 65536).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    loaded = load_image(tmp_path / "gray.png")
    assert loaded.bit_depth == 16 and loaded.grayscale
    out = save_image(loaded, tmp_path / "gray_out.png")
    with Image.open(out) as im:
        assert im.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(im).astype(np.uint16), gray)

    rgb = np.random.default_rng(1).integers(0, 65536, (20, 24, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", rgb, photometric="rgb", iccprofile=SRGB_ICC,
                     resolution=(300, 300), resolutionunit="INCH")
    loaded = load_image(tmp_path / "deep.tif")
    assert loaded.bit_depth == 16 and loaded.icc_profile == SRGB_ICC
    out = save_image(loaded, tmp_path / "deep_out.tif")
    back = tifffile.imread(out)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, rgb)
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].tags["InterColorProfile"].value == SRGB_ICC


def test_16bit_alpha_passes_through(tmp_path):
    arr = np.random.default_rng(2).integers(0, 65536, (16, 16, 4), dtype=np.uint16)
    with open(tmp_path / "a16.png", "wb") as fh:
        codecs.write_png16(fh, arr, None, None, None)
    loaded = load_image(tmp_path / "a16.png")
    assert loaded.alpha.dtype == np.uint16
    back = read_png16(save_image(loaded, tmp_path / "o.png"))
    np.testing.assert_array_equal(back[..., 3], arr[..., 3])
