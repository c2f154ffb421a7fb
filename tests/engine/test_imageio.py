"""Image IO with metadata: orientation, ICC, DPI, EXIF, 16-bit, alpha, modes, atomic writes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from engine import imageio
from engine.imageio import ImageReadError, ImageWriteError, load_image, read_rgb, save_image

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def gradient(h=40, w=60):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], axis=-1).astype(np.uint8)


def exif_with(orientation=None, make="PhotoMend Cam"):
    exif = Image.Exif()
    exif[0x010F] = make
    if orientation is not None:
        exif[0x0112] = orientation
    return exif.tobytes()


def read_png16(path):
    from torchvision.io import ImageReadMode, decode_image, read_file

    return decode_image(read_file(str(path)), mode=ImageReadMode.UNCHANGED).permute(1, 2, 0).numpy()


# ------------------------------------------------------------------ orientation, EXIF, ICC, DPI


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


@pytest.mark.parametrize("fmt,suffix", [("jpeg", ".jpg"), ("png", ".png"), ("webp", ".webp"), ("tiff", ".tif")])
def test_icc_and_exif_round_trip(tmp_path, fmt, suffix):
    src = tmp_path / "in.png"
    Image.fromarray(gradient()).save(src, icc_profile=SRGB_ICC, exif=exif_with(), dpi=(240, 240))
    loaded = load_image(src)
    assert loaded.icc_profile == SRGB_ICC and loaded.exif
    out = save_image(loaded.pixels, tmp_path / f"out{suffix}", format=fmt, quality=90, metadata=loaded)
    with Image.open(out) as im:
        assert im.format == imageio._PIL_NAMES[fmt]
        assert im.info.get("icc_profile") == SRGB_ICC
        assert im.getexif().get(0x010F) == "PhotoMend Cam"
        if fmt != "webp":
            assert tuple(round(v) for v in im.info["dpi"]) == (240, 240)


# ------------------------------------------------------------------ 16-bit


def test_16bit_rgb_png_stays_16bit_exactly(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 65536, (30, 50, 3), dtype=np.uint16)
    src = tmp_path / "deep.png"
    with open(src, "wb") as fh:
        imageio._write_png16(fh, arr, SRGB_ICC, (300, 300), exif_with())
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


# ------------------------------------------------------------------ alpha and modes


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


def test_16bit_alpha_passes_through(tmp_path):
    arr = np.random.default_rng(2).integers(0, 65536, (16, 16, 4), dtype=np.uint16)
    with open(tmp_path / "a16.png", "wb") as fh:
        imageio._write_png16(fh, arr, None, None, None)
    loaded = load_image(tmp_path / "a16.png")
    assert loaded.alpha.dtype == np.uint16
    back = read_png16(save_image(loaded, tmp_path / "o.png"))
    np.testing.assert_array_equal(back[..., 3], arr[..., 3])


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


# ------------------------------------------------------------------ safety


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

    monkeypatch.setattr(imageio, "_encode", broken)
    with pytest.raises(ImageWriteError, match="disk full"):
        save_image(np.zeros((8, 8, 3), np.float32), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_no_output(tmp_path):
    """SIGKILL while a large PNG is being encoded: the destination never exists half-written."""
    target = tmp_path / "big.png"
    code = textwrap.dedent(f"""
        import numpy as np
        from engine.imageio import save_image
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


def test_format_and_quality_are_selectable(tmp_path):
    pixels = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    small = save_image(pixels, tmp_path / "q10.webp", format="webp", quality=10)
    large = save_image(pixels, tmp_path / "q95.webp", format="webp", quality=95)
    assert small.stat().st_size < large.stat().st_size
    with Image.open(save_image(pixels, tmp_path / "x.bmp", format="BMP")) as im:
        assert im.format == "BMP"
    with pytest.raises(ValueError, match="unsupported output format"):
        save_image(pixels, tmp_path / "x.gif", format="gif")


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
