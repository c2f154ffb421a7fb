"""Seed images in every supported format and the corruptions the fuzz tests apply to them.

``seed_files()`` returns small real files (bytes) keyed by a name that says what they are;
``corrupted_file()`` is a hypothesis strategy drawing one seed and one to four mutations of it
(truncation, bit flips, overwritten, deleted, inserted or duplicated byte runs, absurd declared
dimensions) and a file suffix (usually the seed's own, sometimes another image suffix).
:func:`check_read` is the property every read must satisfy: either a well-formed image or one
:class:`~engine.io.reader.ImageReadError` line naming the file. How long a read takes is recorded
(the worst case goes to the figures), never asserted: a read that hangs fails on the test's timeout.
"""

from __future__ import annotations

import functools
import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from engine.io.reader import IMAGE_SUFFIXES, ImageReadError, LoadedImage, load_image
from engine.io.writer import ImageWriteError, normalize_format, save_image


def photo_pixels(h: int = 32, w: int = 40, seed: int = 0) -> np.ndarray:
    """A small photo-like ``uint8 (h, w, 3)`` image: gradients, a stripe pattern and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / max(w, 1), y / max(h, 1), 0.5 + 0.5 * np.sin(x / 3.0)], axis=-1)
    return (np.clip(base + rng.normal(0, 0.06, base.shape), 0, 1) * 255).astype(np.uint8)


def _save(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise
    exif[0x010F] = "PhotoMend fuzz"
    return exif.tobytes()


def _png16() -> bytes:
    """A 16-bit RGB PNG written by the engine's own writer."""
    import tempfile

    arr = photo_pixels(seed=3).astype(np.float32) / 255.0
    meta = LoadedImage(arr, bit_depth=16, mode="RGB;16", format="PNG")
    with tempfile.TemporaryDirectory() as tmp:
        path = save_image(arr, Path(tmp) / "sixteen.png", metadata=meta)
        return path.read_bytes()


def _tiff16() -> bytes:
    import tifffile

    arr = (photo_pixels(seed=4).astype(np.uint16) * 257)
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="rgb", compression="zlib")
    return buf.getvalue()


@functools.cache
def seed_files() -> dict[str, bytes]:
    """Small valid files: ``{"name.ext": bytes}``; the suffix is the format's usual one."""
    rgb = Image.fromarray(photo_pixels())
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(photo_pixels(seed=1)[..., 0]))
    gray = rgb.convert("L")
    frames = [Image.fromarray(photo_pixels(16, 16, seed=s)).convert("P") for s in range(3)]
    anim = io.BytesIO()
    frames[0].save(anim, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    multipage = io.BytesIO()
    rgb.save(multipage, format="TIFF", save_all=True, append_images=[gray.convert("RGB")])
    return {
        "photo.jpg": _save(rgb, "JPEG", quality=90),
        "progressive.jpg": _save(rgb, "JPEG", quality=80, progressive=True),
        "rotated-exif.jpg": _save(rgb, "JPEG", quality=90, exif=_exif_rotated()),
        "gray.jpg": _save(gray, "JPEG"),
        "cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG"),
        "one-pixel.jpg": _save(Image.new("RGB", (1, 1), (200, 10, 10)), "JPEG"),
        "photo.png": _save(rgb, "PNG"),
        "alpha.png": _save(rgba, "PNG"),
        "palette.png": _save(rgb.convert("P"), "PNG"),
        "gray.png": _save(gray, "PNG"),
        "sixteen-bit.png": _png16(),
        "one-pixel.png": _save(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"),
        "photo.tif": _save(rgb, "TIFF", compression="tiff_lzw"),
        "sixteen-bit.tif": _tiff16(),
        "multipage.tif": multipage.getvalue(),
        "photo.webp": _save(rgb, "WEBP", quality=80),
        "alpha-lossless.webp": _save(rgba, "WEBP", lossless=True),
        "photo.bmp": _save(rgb, "BMP"),
        "animated.gif": anim.getvalue(),
    }


# --------------------------------------------------------------------------- declared dimensions


def with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with the width/height in its header replaced (PNG IHDR with a fixed CRC, JPEG SOF,
    BMP info header); other formats are returned unchanged."""
    buf = bytearray(data)
    if buf[:8] == b"\x89PNG\r\n\x1a\n" and buf[12:16] == b"IHDR":
        buf[16:24] = struct.pack(">II", width, height)
        buf[29:33] = struct.pack(">I", zlib.crc32(bytes(buf[12:29])) & 0xFFFFFFFF)
    elif buf[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(buf) and buf[i] == 0xFF:
            marker, length = buf[i + 1], struct.unpack(">H", buf[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2):
                buf[i + 5:i + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))
                break
            i += 2 + length
    elif buf[:2] == b"BM" and len(buf) >= 26:
        buf[18:26] = struct.pack("<ii", width, height)
    return bytes(buf)


# --------------------------------------------------------------------------- hypothesis strategy


@st.composite
def _mutation(draw, data: bytearray) -> bytearray:
    n = len(data)
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "delete", "insert", "duplicate", "size"]))
    if n == 0:
        return data
    if kind == "truncate":
        return data[:draw(st.integers(0, n - 1))]
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            bit = draw(st.integers(0, 8 * n - 1))
            data[bit // 8] ^= 1 << (bit % 8)
        return data
    at = draw(st.integers(0, n - 1))
    if kind == "overwrite":
        chunk = draw(st.binary(min_size=1, max_size=32))
        data[at:at + len(chunk)] = chunk
        return data
    if kind == "delete":
        del data[at:at + draw(st.integers(1, 256))]
        return data
    if kind == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
        return data
    if kind == "duplicate":
        end = min(n, at + draw(st.integers(1, 512)))
        data[end:end] = data[at:end]
        return data
    width = draw(st.sampled_from([0, 1, 7, 65535, 70000, 1 << 20, (1 << 31) - 1]))
    height = draw(st.sampled_from([0, 1, 9, 65535, 70000, 1 << 20, (1 << 31) - 1]))
    return bytearray(with_declared_size(bytes(data), width, height))


@st.composite
def corrupted_file(draw) -> tuple[str, bytes, str]:
    """``(seed name, corrupted bytes, suffix to save them under)``."""
    seeds = seed_files()
    name = draw(st.sampled_from(sorted(seeds)))
    data = bytearray(seeds[name])
    for _ in range(draw(st.integers(1, 4))):
        data = draw(_mutation(data))
    own = Path(name).suffix
    suffix = draw(st.sampled_from([own, own, own, *IMAGE_SUFFIXES]))
    return name, bytes(data), suffix


# --------------------------------------------------------------------------- the property


def check_one_line_error(message: str, path: Path) -> None:
    assert "\n" not in message, f"multi-line error: {message!r}"
    assert str(path) in message, f"error does not name the file: {message!r}"
    assert len(message) < len(str(path)) + 400, f"error too long: {message!r}"


def check_read(path: Path, out_dir: Path | None = None) -> tuple[str, float]:
    """Read ``path`` (and, if it decodes and ``out_dir`` is given, write it back): return
    ``("ok" | "error", seconds)``; any other exception or a slow read fails the calling test."""
    start = time.perf_counter()
    try:
        image = load_image(path)
    except ImageReadError as exc:
        outcome = "error"
        check_one_line_error(str(exc), path)
    else:
        outcome = "ok"
        px = image.pixels
        assert px.dtype == np.float32 and px.ndim == 3 and px.shape[2] == 3 and px.size > 0
        assert np.isfinite(px).all() and px.min() >= 0.0 and px.max() <= 1.0
        if image.alpha is not None:
            assert image.alpha.shape == px.shape[:2]
        if out_dir is not None:
            target = out_dir / f"written{path.suffix if path.suffix in IMAGE_SUFFIXES else '.png'}"
            try:
                save_image(image.pixels, target, format=normalize_format(target.suffix), metadata=image)
            except ImageWriteError as exc:
                check_one_line_error(str(exc), target)
            else:
                with Image.open(target) as im:
                    im.load()
    seconds = time.perf_counter() - start
    return outcome, seconds
