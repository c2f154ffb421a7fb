"""Image reading and writing, with the metadata a photographer expects to keep.

Reading: :func:`read_rgb` returns the colour pixels of any supported file as ``float32 (H, W, 3)``
in ``[0, 1]``, with EXIF orientation applied. :func:`load_image` returns the same pixels in a
:class:`LoadedImage` that also keeps the alpha channel (untouched, as stored), EXIF, ICC profile,
XMP, DPI, bit depth, mode and format. Errors are :class:`ImageReadError` with a one-line message
naming the file.

Writing: :func:`save_image` writes pixels with the metadata of the input, atomically (a temporary
file in the destination folder, then ``os.replace``), and never over the file it was read from.

Output modes (decided here):

* colour (RGB, RGBA, palette, CMYK, YCbCr, LAB...) → RGB, plus alpha where the input had it and the
  format can store it (PNG, WebP, TIFF, BMP; JPEG drops alpha). Palette images are not re-quantised.
  CMYK with an ICC profile is converted to sRGB through that profile (the sRGB profile is written),
  CMYK without one by Pillow's plain conversion (no profile written).
* grayscale (1, L, LA, I;16, I, F) → grayscale of the restored pixels (Rec. 601 luma); bilevel
  becomes 8-bit gray.
* 16-bit PNG and TIFF (gray or colour, with or without alpha) stay 16-bit when written as PNG or
  TIFF; other formats get 8 bits. Colour 16-bit files are decoded with torchvision (PNG) or
  tifffile (TIFF) because Pillow reduces them to 8 bits.
* EXIF is written with its orientation tag set to 1 (the pixels are already upright) to JPEG, PNG,
  WebP and TIFF; 16-bit TIFF keeps the descriptive main-IFD tags only (make, model, date, artist,
  copyright...). ICC goes to every format but BMP, DPI to JPEG, PNG, TIFF and BMP.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.atomic import commit_part_file, new_part_file, one_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
DEFAULT_MAX_PIXELS = 200_000_000  # guards against decompression bombs
# The most pixels a byte of file can hold, for decoders that fill missing data instead of failing:
# Huffman JPEG spends at least a bit per 8x8 block (512 px/byte); GIF's LZW at most ~2,730 px/byte.
_MAX_PIXELS_PER_BYTE = {"JPEG": 1024, "MPO": 1024, "GIF": 4096}
# Pillow's own guard (a warning above 89 MP, an error above twice that) would refuse a legitimate
# 100 MP photo; our limit is checked on the header instead, and Pillow's is raised to match it.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, DEFAULT_MAX_PIXELS)

# Output formats and their canonical suffix.
FORMATS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "tiff": ".tif", "bmp": ".bmp"}
_PIL_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF", "bmp": "BMP"}
_ALPHA_FORMATS = ("png", "webp", "tiff", "bmp")
_GRAY_MODES = ("1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_ORIENTATION = 0x0112
# Main-IFD EXIF tags kept in 16-bit TIFF outputs (descriptive, no offsets).
_TIFF_TEXT_TAGS = (270, 271, 272, 305, 306, 315, 33432)


class ImageReadError(ValueError):
    """A file that cannot be read as an image; ``str()`` is one line naming the file."""


class ImageWriteError(OSError):
    """An output that cannot be written; ``str()`` is one line naming the file."""


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    """``Image.open`` with the pixel limit checked on the header (nothing decoded yet)."""
    if path.exists() and not path.is_dir() and not path.is_file():
        # a FIFO, socket or device named like a photo: opening it would block or never end
        raise ImageReadError(f"{path}: not a regular file (a pipe, socket or device)")
    im = Image.open(path)
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageReadError(
            f"{path}: {w}x{h} = {w * h / 1e6:.0f} MP exceeds the limit of {max_pixels / 1e6:.0f} MP "
            "(a guard against decompression bombs)"
        )
    size = path.stat().st_size
    if w * h > _MAX_PIXELS_PER_BYTE.get(im.format or "", w * h) * max(size, 1):
        # libjpeg and the GIF decoder fill missing data instead of failing: a damaged header would
        # otherwise turn a few hundred bytes into a huge blank photo that takes minutes to restore
        fmt = im.format
        im.close()
        raise ImageReadError(f"{path}: corrupt {fmt} (its header declares {w}x{h} pixels, more than "
                             f"{size} bytes of {fmt} data can hold)")
    if im.format == "TIFF":  # strips that cover a sliver of the declared size: the rest would be blank
        boxes = [t[1] for t in im.tile if t[1]]  # (x0, y0, x1, y1) of each strip or tile
        covered = sum(max(0, min(x1, w) - x0) * max(0, min(y1, h) - y0) for x0, y0, x1, y1 in boxes)
        if covered < w * h:
            im.close()
            raise ImageReadError(f"{path}: corrupt TIFF (its strips hold {covered} of the {w}x{h} pixels "
                                 "its header declares)")
    return im


class _ReadErrors:
    """Context manager turning every decoding failure into a one-line :class:`ImageReadError`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warnings = warnings.catch_warnings()

    def __enter__(self):
        self._warnings.__enter__()
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return self

    def __exit__(self, exc_type, exc, tb):
        self._warnings.__exit__(exc_type, exc, tb)
        if exc is None or isinstance(exc, ImageReadError) or not isinstance(exc, Exception):
            return False
        path = self.path
        if isinstance(exc, FileNotFoundError):
            raise ImageReadError(f"{path}: no such file") from None
        if isinstance(exc, IsADirectoryError):
            raise ImageReadError(f"{path}: is a folder, not an image") from None
        if isinstance(exc, UnidentifiedImageError):
            raise ImageReadError(f"{path}: not an image or an unsupported format") from None
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise ImageReadError(f"{path}: image too large ({one_line(exc)})") from None
        if isinstance(exc, MemoryError):
            raise ImageReadError(f"{path}: not enough memory to decode this image") from None
        raise ImageReadError(f"{path}: corrupt or truncated image ({one_line(exc)})") from None


def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode ``path`` with EXIF orientation applied; raise :class:`ImageReadError`."""
    path = Path(path)
    with _ReadErrors(path):
        im = _open_checked(path, max_pixels)
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        return im


def to_float_rgb(im: Image.Image) -> np.ndarray:
    """Convert any PIL mode to ``float32 (H, W, 3)`` in ``[0, 1]`` (16-bit precision kept)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float32)
        scale = 65535.0 if im.mode != "I" or arr.max() > 255 else 255.0
        gray = np.clip(arr / scale, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        gray = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA", "LA") else im.convert("RGB")
    pixels = np.asarray(im)
    arr = _empty_float32(pixels.shape)
    np.multiply(pixels, np.float32(1.0 / 255.0), out=arr, dtype=np.float32)
    return arr


def _empty_float32(shape: tuple[int, ...]) -> np.ndarray:
    """A large float32 buffer from torch's allocator: it maps huge pages, so filling a 12 MP frame
    costs a few page faults instead of tens of thousands (measured 0.06 s against 0.33 s)."""
    import torch

    return torch.empty(shape, dtype=torch.float32).numpy()


def read_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read ``path`` as ``float32 (H, W, 3)`` RGB in ``[0, 1]``."""
    return to_float_rgb(open_image(path, max_pixels=max_pixels))


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted), following no symlinked folders when recursive."""
    folder = Path(folder)
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and is_image_path(p))


# --------------------------------------------------------------------------- load with metadata


@dataclass
class LoadedImage:
    """A decoded photo: the pixels the engine works on plus everything needed to write it back.

    ``pixels``: ``float32 (H, W, 3)`` in ``[0, 1]``, upright (EXIF orientation applied).
    ``alpha``: ``(H, W)`` ``uint8`` or ``uint16`` as stored, or ``None``. ``exif``: EXIF bytes with
    the orientation tag removed (``None`` when absent). ``bit_depth``: 8 or 16 per channel.
    ``mode``: the file's Pillow mode (``"RGB;16"``/``"RGBA;16"``/``"LA;16"`` for 16-bit colour and
    gray+alpha). ``format``: Pillow's format name (``"JPEG"``, ``"PNG"``...).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    exif: bytes | None = None
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    bit_depth: int = 8
    mode: str = "RGB"
    format: str | None = None
    path: Path | None = None
    xmp: bytes | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def grayscale(self) -> bool:
        return self.mode in _GRAY_MODES or self.mode == "LA;16"

    def with_pixels(self, pixels: np.ndarray) -> LoadedImage:
        """The same metadata around other pixels (e.g. the restored ones)."""
        return dataclasses.replace(self, pixels=pixels)


def _dpi(info: dict) -> tuple[float, float] | None:
    dpi = info.get("dpi")
    if not dpi:
        return None
    try:
        x, y = float(dpi[0]), float(dpi[1])
    except (TypeError, ValueError, IndexError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def _xmp(info: dict) -> bytes | None:
    value = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if not value:
        return None
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Numpy version of EXIF orientation (as ``ImageOps.exif_transpose``)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, k=1),
    }
    op = ops.get(int(orientation))
    return np.ascontiguousarray(op(arr)) if op else arr


def _exif_without_orientation(exif: Image.Exif) -> bytes | None:
    if not len(exif):
        return None
    if _ORIENTATION in exif:
        del exif[_ORIENTATION]
    return exif.tobytes()


def _sixteen_bit_colour(path: Path, im: Image.Image) -> str | None:
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


def _sound_png16(data: bytes) -> bytes:
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
    return b"".join([data[:8], _png_chunk(b"IHDR", ihdr), *(_png_chunk(b"IDAT", b) for b in idat),
                     _png_chunk(b"IEND", b"")])


def _decode_16bit(path: Path, kind: str) -> np.ndarray:
    """``uint16 (H, W, C)`` of a 16-bit colour or gray+alpha PNG/TIFF, not yet oriented."""
    if kind == "png":
        import torch

        with warnings.catch_warnings():  # torchvision 0.29 announces a move of its codecs
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_png

            data = torch.frombuffer(bytearray(_sound_png16(path.read_bytes())), dtype=torch.uint8)
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


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
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


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read ``path`` with its metadata (see :class:`LoadedImage`); raise :class:`ImageReadError`."""
    path = Path(path)
    with _ReadErrors(path):
        im = _open_checked(path, max_pixels)
        with im:
            fmt = im.format
            info = dict(im.info)
            icc = info.get("icc_profile") or None
            dpi = _dpi(info)
            kind = _sixteen_bit_colour(path, im)
            if kind:
                exif = im.getexif()
                orientation = exif.get(_ORIENTATION, 1)
                exif_bytes = _exif_without_orientation(exif) if fmt == "PNG" else _tiff_text_exif(exif)
                arr = _apply_orientation(_decode_16bit(path, kind), orientation)
                return _from_uint16(arr, path, fmt, exif_bytes, icc, dpi, _xmp(info))
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            info = dict(im.info)
            mode = im.mode
            exif_bytes = info.get("exif") or None
            if fmt == "TIFF":
                exif_bytes = _tiff_text_exif(im.getexif())
            alpha = None
            if mode in _ALPHA_MODES or (mode == "P" and "transparency" in info):
                rgba = im.convert("RGBA") if mode in ("P", "PA") else im
                alpha = np.array(rgba.getchannel("A"))
                mode = "PA" if mode == "P" else mode
            elif mode in ("L", "1") and "transparency" in info:
                alpha = np.array(im.convert("LA").getchannel("A"))
                mode = "LA"
            if im.mode == "CMYK":
                rgb, icc = _cmyk_to_rgb(im, icc)
                pixels = to_float_rgb(rgb)
            else:
                pixels = to_float_rgb(im)
            bit_depth = 16 if mode.startswith("I;16") or (mode == "I" and np.asarray(im).max() > 255) else 8
            return LoadedImage(pixels, alpha, exif_bytes, icc, dpi, bit_depth, mode, fmt, path, _xmp(info))


def _tiff_text_exif(exif: Image.Exif) -> bytes | None:
    kept = Image.Exif()
    for tag in _TIFF_TEXT_TAGS:
        if tag in exif:
            kept[tag] = exif[tag]
    return kept.tobytes() if len(kept) else None


def _from_uint16(arr, path, fmt, exif, icc, dpi, xmp) -> LoadedImage:
    channels = arr.shape[2]
    alpha = arr[..., -1].copy() if channels in (2, 4) else None
    if channels in (1, 2):
        gray = arr[..., 0].astype(np.float32)
        gray *= np.float32(1.0 / 65535.0)
        pixels = np.repeat(gray[..., None], 3, axis=2)
        mode = "LA;16" if alpha is not None else "I;16"
    else:
        pixels = arr[..., :3].astype(np.float32)
        pixels *= np.float32(1.0 / 65535.0)
        mode = "RGBA;16" if alpha is not None else "RGB;16"
    return LoadedImage(pixels, alpha, exif, icc, dpi, 16, mode, fmt, path, xmp)


# --------------------------------------------------------------------------- save with metadata


def normalize_format(name: str) -> str:
    """``"JPG"``/``".jpeg"``/``"JPEG"`` → ``"jpeg"``; raise ``ValueError`` for unsupported formats."""
    key = name.lower().lstrip(".")
    key = {"jpg": "jpeg", "jpe": "jpeg", "jfif": "jpeg", "mpo": "jpeg", "tif": "tiff"}.get(key, key)
    if key not in FORMATS:
        raise ValueError(f"unsupported output format {name!r}; choose one of {', '.join(FORMATS)}")
    return key


def output_format(source: LoadedImage | None, path: Path, requested: str | None = None) -> str:
    """The format to write: the requested one, else the input's (PNG if it cannot be written), else the suffix."""
    if requested:
        return normalize_format(requested)
    if source is not None and source.format:
        try:
            return normalize_format(source.format)
        except ValueError:
            return "png"
    return normalize_format(Path(path).suffix or "png")


def _quantize(pixels: np.ndarray, maxval: int, dtype, gray: bool, alpha: np.ndarray | None) -> np.ndarray:
    """Float ``[0, 1]`` pixels → integer array (H, W[, C]) with alpha appended, in row chunks."""
    h, w = pixels.shape[:2]
    channels = (1 if gray else 3) + (1 if alpha is not None else 0)
    out = np.empty((h, w, channels), dtype=dtype)
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    for r0 in range(0, h, 256):
        block = pixels[r0:r0 + 256]
        if gray:
            block = (block @ luma)[..., None]
        block = block * np.float32(maxval)
        block += np.float32(0.5)
        np.clip(block, 0, maxval, out=block)
        out[r0:r0 + 256, :, :block.shape[2]] = block.astype(dtype)
    if alpha is not None:
        out[..., -1] = alpha
    return out[..., 0] if channels == 1 else out


def _alpha_for(alpha: np.ndarray | None, bits: int) -> np.ndarray | None:
    if alpha is None:
        return None
    if bits == 16:
        return alpha.astype(np.uint16) * 257 if alpha.dtype == np.uint8 else alpha
    return (alpha >> 8).astype(np.uint8) if alpha.dtype == np.uint16 else alpha


def _exif_for_output(exif: bytes | None) -> bytes | None:
    if not exif:
        return None
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        if _ORIENTATION in parsed:
            parsed[_ORIENTATION] = 1
        return parsed.tobytes()
    except Exception:  # unparsable EXIF is dropped rather than copied blindly
        return None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _write_png16(fh, arr: np.ndarray, icc: bytes | None, dpi, exif: bytes | None) -> None:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA) with iCCP, pHYs and eXIf; Sub-filtered rows."""
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    fh.write(b"\x89PNG\r\n\x1a\n")
    fh.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)))
    if icc:
        fh.write(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if dpi:
        ppm = [max(1, round(d / 0.0254)) for d in dpi]
        fh.write(_png_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if exif:
        fh.write(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
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
            fh.write(_png_chunk(b"IDAT", data))
    fh.write(_png_chunk(b"IDAT", comp.flush()))
    fh.write(_png_chunk(b"IEND", b""))


def _write_tiff16(fh, arr: np.ndarray, icc: bytes | None, dpi, exif: bytes | None, alpha: bool) -> None:
    import tifffile

    extratags = []
    if exif:
        parsed = Image.Exif()
        parsed.load(exif)
        for tag in _TIFF_TEXT_TAGS:
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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def save_image(image: LoadedImage | np.ndarray, path: str | Path, format: str | None = None,
               quality: int = 95, metadata: LoadedImage | None = None) -> Path:
    """Write ``image`` to ``path`` atomically and return ``path``.

    ``image``: a :class:`LoadedImage` (its pixels and metadata) or ``float32 (H, W, 3)`` pixels in
    ``[0, 1]``, with ``metadata`` the :class:`LoadedImage` they came from (EXIF, ICC, DPI, XMP,
    alpha, bit depth and gray/colour mode are taken from it). ``format``: ``jpeg png webp tiff
    bmp``, default the input's. ``quality``: 1–100 for JPEG and WebP. Refuses to write over the
    file the metadata was read from. Raises :class:`ImageWriteError`.
    """
    path = Path(path)
    if isinstance(image, LoadedImage):
        meta, pixels = (metadata or image), image.pixels
    else:
        meta, pixels = metadata, np.asarray(image)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"{path}: pixels must be (H, W, 3), got {pixels.shape}")
    if meta is None:
        meta = LoadedImage(pixels)
    fmt = output_format(meta, path, format)
    if meta.path is not None and _same_file(Path(meta.path), path):
        raise ImageWriteError(f"{path}: refusing to overwrite the input image")
    if meta.alpha is not None and meta.alpha.shape != pixels.shape[:2]:
        raise ValueError(f"{path}: alpha {meta.alpha.shape} does not match pixels {pixels.shape[:2]}")

    bits = 16 if meta.bit_depth == 16 and fmt in ("png", "tiff") else 8
    alpha = _alpha_for(meta.alpha, bits) if fmt in _ALPHA_FORMATS else None
    gray = meta.grayscale
    exif = _exif_for_output(meta.exif) if fmt in ("jpeg", "png", "webp", "tiff") else None
    icc = meta.icc_profile if fmt != "bmp" else None
    dpi = meta.dpi if fmt in ("jpeg", "png", "tiff", "bmp") else None
    arr = _quantize(pixels, 65535 if bits == 16 else 255, np.uint16 if bits == 16 else np.uint8, gray, alpha)

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = new_part_file(path)
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot write here ({one_line(exc)})") from None
    try:
        with open(tmp, "wb") as fh:  # a named file: tifffile wants a name
            _encode(fh, arr, fmt, bits, gray, alpha is not None, quality, exif, icc, dpi, meta.xmp)
            fh.flush()
            os.fsync(fh.fileno())
        commit_part_file(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (OSError, ValueError)) and not isinstance(exc, ImageWriteError):
            raise ImageWriteError(f"{path}: cannot write ({one_line(exc)})") from None
        raise
    return path




def _encode(fh, arr, fmt, bits, gray, has_alpha, quality, exif, icc, dpi, xmp) -> None:
    if bits == 16 and fmt == "tiff":
        _write_tiff16(fh, arr, icc, dpi, exif, has_alpha)
        return
    if bits == 16 and (not gray or has_alpha):
        _write_png16(fh, arr, icc, dpi, exif)
        return
    # uint16 (H, W) → I;16, uint8 (H, W) → L, (H, W, 2) → LA, (H, W, 3) → RGB, (H, W, 4) → RGBA
    im = Image.fromarray(arr.astype("<u2", copy=False) if bits == 16 else arr)
    kwargs: dict = {}
    if exif:
        kwargs["exif"] = exif
    if icc:
        kwargs["icc_profile"] = icc
    if dpi:
        kwargs["dpi"] = dpi
    if xmp and fmt in ("jpeg", "webp", "tiff"):
        kwargs["xmp"] = xmp
    if fmt == "jpeg":
        kwargs.update(quality=int(quality), subsampling=0 if quality >= 90 else 2)
    elif fmt == "webp":
        kwargs.update(quality=int(quality), method=4)
    elif fmt == "tiff":
        kwargs.update(compression="tiff_lzw")
    elif fmt == "png":
        kwargs.update(compress_level=6)
    im.save(fh, format=_PIL_NAMES[fmt], **kwargs)
