"""Codec helpers shared by the reader and the writer: the 16-bit PNG and TIFF paths, EXIF tags, CMYK.

Pillow reduces 16-bit colour (and gray+alpha) PNG and TIFF files to 8 bits, so these are decoded
with torchvision (PNG, after :func:`sound_png16` has checked the stream) or tifffile (TIFF), and
written by :func:`write_png16` / :func:`write_tiff16`. 16-bit TIFF keeps the descriptive main-IFD
EXIF tags only (:data:`TIFF_TEXT_TAGS`).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION = 0x0112  # the EXIF orientation tag
# Main-IFD EXIF tags kept in 16-bit TIFF outputs (descriptive, no offsets).
TIFF_TEXT_TAGS = (270, 271, 272, 305, 306, 315, 33432)


def exif_without_orientation(exif: Image.Exif) -> bytes | None:
    """The EXIF bytes of ``exif`` minus its orientation tag (the pixels are made upright); None when empty."""
    if not len(exif):
        return None
    if ORIENTATION in exif:
        del exif[ORIENTATION]
    return exif.tobytes()


def sixteen_bit_colour(path: Path, im: Image.Image) -> str | None:
    """``"png"``/``"tiff"`` when ``im`` is 16-bit colour or gray+alpha (which Pillow reduces to 8 bits)."""
    if im.format == "PNG":
        with open(path, "rb") as fh:
            head = fh.read(26)
        if len(head) == 26 and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (2, 4, 6):
            return "png"
    elif im.format == "TIFF":
        tags = getattr(im, "tag_v2", {})
        bits = tags.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        if bits and bits[0] == 16 and int(tags.get(277, 1)) >= 2 and int(tags.get(262, 2)) in (1, 2):
            return "tiff"
    return None


# Adam7 passes: (x0, y0, dx, dy)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def sound_png16(data: bytes) -> bytes:
    """``data`` cut down to IHDR, IDAT and IEND once their CRCs, the zlib stream, its length and the
    row filters are checked; raise ``ValueError`` otherwise. libpng inside torchvision crashes the
    process (SIGSEGV) on some corrupt files instead of raising, so it only sees sound streams."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG stream")
    pos, ihdr, idat, end = 8, b"", [], False
    while pos + 12 <= len(data) and not end:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body, crc = data[pos + 8:pos + 8 + length], data[pos + 8 + length:pos + 12 + length]
        if len(crc) != 4:
            raise ValueError("truncated PNG chunk")
        if kind in (b"IHDR", b"IDAT", b"IEND"):
            if zlib.crc32(kind + body) & 0xFFFFFFFF != struct.unpack(">I", crc)[0]:
                raise ValueError(f"bad CRC in the {kind.decode()} chunk")
            ihdr, end = (body if kind == b"IHDR" else ihdr), kind == b"IEND"
            if kind == b"IDAT":
                idat.append(body)
        elif kind[:1].isupper() and kind != b"PLTE":
            raise ValueError(f"unknown critical chunk {kind!r}")
        pos += 12 + length
    if len(ihdr) != 13 or not idat or not end:
        raise ValueError("incomplete PNG stream")
    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour, 0)
    if depth != 16 or not channels or interlace > 1 or not w or not h:
        raise ValueError("unexpected 16-bit PNG header")
    inflate = zlib.decompressobj()
    raw = np.frombuffer(inflate.decompress(b"".join(idat)), dtype=np.uint8)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    sizes = [(-(-(w - x0) // dx), -(-(h - y0) // dy)) for x0, y0, dx, dy in passes if w > x0 and h > y0]
    if not inflate.eof or inflate.unused_data or raw.size != sum((1 + pw * 2 * channels) * ph for pw, ph in sizes):
        raise ValueError("truncated or oversized image data")
    start = 0
    for pw, ph in sizes:
        stride = 1 + pw * 2 * channels
        if raw[start:start + stride * ph:stride].max() > 4:
            raise ValueError("bad row filter")
        start += stride * ph
    del raw
    return b"".join([data[:8], png_chunk(b"IHDR", ihdr), *(png_chunk(b"IDAT", b) for b in idat),
                     png_chunk(b"IEND", b"")])


def decode_16bit(path: Path, kind: str) -> np.ndarray:
    """``uint16 (H, W, C)`` of a 16-bit colour or gray+alpha PNG/TIFF, not yet oriented."""
    if kind == "png":
        import torch

        with warnings.catch_warnings():  # torchvision 0.29 announces a move of its codecs
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_png

            data = torch.frombuffer(bytearray(sound_png16(path.read_bytes())), dtype=torch.uint8)
            arr = decode_png(data, mode=ImageReadMode.UNCHANGED).permute(1, 2, 0).numpy()
        return np.ascontiguousarray(arr.astype(np.uint16, copy=False))
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        arr = page.asarray()
        if arr.ndim == 3 and page.planarconfig == 2 and arr.shape[0] == page.samplesperpixel:
            arr = np.moveaxis(arr, 0, -1)
    if arr.ndim != 3:
        raise ValueError(f"unexpected 16-bit TIFF layout {arr.shape}")
    return np.ascontiguousarray(arr.astype(np.uint16, copy=False))


def tiff_text_exif(exif: Image.Exif) -> bytes | None:
    """Only the descriptive main-IFD tags of ``exif`` (:data:`TIFF_TEXT_TAGS`), as bytes; None when none."""
    kept = Image.Exif()
    for tag in TIFF_TEXT_TAGS:
        if tag in exif:
            kept[tag] = exif[tag]
    return kept.tobytes() if len(kept) else None


def cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """RGB of a CMYK image through its ICC profile, and the sRGB profile; Pillow's plain conversion
    and no profile without one (or with a broken one)."""
    if icc:
        try:
            from PIL import ImageCms

            srgb = ImageCms.createProfile("sRGB")
            rgb = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb,
                                            outputMode="RGB")
            return rgb, ImageCms.ImageCmsProfile(srgb).tobytes()
        except Exception:  # a broken profile: fall back to the plain conversion
            pass
    return im.convert("RGB"), None


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(fh, arr: np.ndarray, icc: bytes | None, dpi, exif: bytes | None) -> None:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA) with iCCP, pHYs and eXIf; Sub-filtered rows."""
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    fh.write(b"\x89PNG\r\n\x1a\n")
    fh.write(png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)))
    if icc:
        fh.write(png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if dpi:
        ppm = [max(1, round(d / 0.0254)) for d in dpi]
        fh.write(png_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if exif:
        fh.write(png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    bpp = 2 * c
    comp = zlib.compressobj(6)
    for r0 in range(0, h, 64):
        rows = arr[r0:r0 + 64].astype(">u2").reshape(-1, w * c).view(np.uint8)
        filtered = rows.copy()
        filtered[:, bpp:] -= rows[:, :-bpp]  # filter type 1 (Sub), modulo 256
        lines = np.empty((rows.shape[0], w * bpp + 1), dtype=np.uint8)
        lines[:, 0] = 1
        lines[:, 1:] = filtered
        data = comp.compress(lines.tobytes())
        if data:
            fh.write(png_chunk(b"IDAT", data))
    fh.write(png_chunk(b"IDAT", comp.flush()))
    fh.write(png_chunk(b"IEND", b""))


def write_tiff16(fh, arr: np.ndarray, icc: bytes | None, dpi, exif: bytes | None, alpha: bool) -> None:
    """A 16-bit TIFF (zlib) with its ICC profile, resolution and the descriptive EXIF tags as text tags."""
    import tifffile

    extratags = []
    if exif:
        parsed = Image.Exif()
        parsed.load(exif)
        for tag in TIFF_TEXT_TAGS:
            value = parsed.get(tag)
            if isinstance(value, str) and value:
                extratags.append((tag, "s", 0, value, True))
    kwargs = {}
    if dpi:
        kwargs.update(resolution=(float(dpi[0]), float(dpi[1])), resolutionunit="INCH")
    gray = arr.ndim == 2 or arr.shape[2] in (1, 2)
    tifffile.imwrite(fh, arr, photometric="minisblack" if gray else "rgb",
                     extrasamples=["unassalpha"] if alpha else None, compression="zlib",
                     iccprofile=icc or None, extratags=extratags, metadata=None, **kwargs)

