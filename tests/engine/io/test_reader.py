"""Reading: orientation, modes, palettes, CMYK, the pixel limit and one-line read errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.io.reader import ImageReadError, load_image, read_rgb
from engine.io.writer import save_image
from tests.engine.io.images import exif_with, gradient

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def test_exif_orientation_applied_and_reset_on_save(tmp_path):
    src = tmp_path / "rotated.jpg"
    arr = gradient(40, 60)
    arr[:5, :5] = [255, 0, 0]  # a red top-left corner in the stored pixels
    Image.fromarray(arr).save(src, exif=exif_with(orientation=6), quality=98, dpi=(300, 300))
    loaded = load_image(src)
    assert loaded.pixels.shape == (60, 40, 3)  # 6 = rotate 90 degrees clockwise
    assert loaded.pixels[0, -1, 0] > 0.8 and loaded.pixels[0, -1, 1] < 0.2  # red corner now top-right
    assert loaded.format == "JPEG" and loaded.dpi == (300, 300)
    out = save_image(loaded, tmp_path / "out.jpg")
    with Image.open(out) as im:
        assert im.size == (40, 60)
        exif = im.getexif()
        assert exif.get(0x0112) in (None, 1)
        assert exif.get(0x010F) == "PhotoMend Cam"
        assert tuple(round(v) for v in im.info["dpi"]) == (300, 300)


def test_grayscale_palette_and_cmyk_inputs(tmp_path):
    Image.fromarray(gradient()[..., 0]).save(tmp_path / "g.jpg")
    Image.fromarray(gradient()).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    Image.fromarray(gradient()).convert("CMYK").save(tmp_path / "c.jpg")
    Image.fromarray(gradient()).convert("1").save(tmp_path / "b.png")
    expected = {"g.jpg": "L", "p.png": "RGB", "c.jpg": "RGB", "b.png": "L"}
    for name, mode in expected.items():
        loaded = load_image(tmp_path / name)
        assert loaded.pixels.shape == (40, 60, 3) and loaded.pixels.dtype == np.float32
        assert 0.0 <= loaded.pixels.min() and loaded.pixels.max() <= 1.0
        with Image.open(save_image(loaded, tmp_path / f"out_{name}")) as im:
            assert im.mode == mode, name


def test_transparent_palette_keeps_alpha(tmp_path):
    im = Image.fromarray(gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    im.info["transparency"] = 0
    im.save(tmp_path / "t.png", transparency=0)
    loaded = load_image(tmp_path / "t.png")
    assert loaded.alpha is not None and (loaded.alpha == 0).any()
    with Image.open(save_image(loaded, tmp_path / "t_out.png")) as out:
        assert out.mode == "RGBA"


def test_pixel_limit_and_bad_files_give_one_line_errors(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(gradient()).save(src)
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        load_image(src, max_pixels=100)
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match="text.jpg"):
        load_image(tmp_path / "text.jpg")
    data = io.BytesIO()
    Image.fromarray(gradient(200, 200)).save(data, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(data.getvalue()[:300])
    with pytest.raises(ImageReadError) as err:
        load_image(tmp_path / "cut.jpg")
    assert "cut.jpg" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ImageReadError, match="no such file"):
        read_rgb(tmp_path / "missing.png")


def test_a_100_megapixel_header_is_not_refused_by_pillow(tmp_path):
    """Only the header is needed: a 10000x10000 PNG declared but never decoded by the check."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10000, 10000, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    with pytest.raises(ImageReadError) as err:  # refused for being truncated, not for its size
        load_image(path)
    assert "exceeds" not in str(err.value) and "too large" not in str(err.value)
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        load_image(path, max_pixels=50_000_000)
