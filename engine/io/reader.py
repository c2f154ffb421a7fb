"""Image reading, with the metadata a photographer expects to keep.

:func:`read_rgb` returns the colour pixels of any supported file as ``float32 (H, W, 3)`` in
``[0, 1]``, with EXIF orientation applied. :func:`load_image` returns the same pixels in a
:class:`LoadedImage` that also keeps the alpha channel (untouched, as stored), EXIF, ICC profile,
XMP, DPI, bit depth, mode and format. Errors are :class:`ImageReadError` with a one-line message
naming the file. The pixel limit (:data:`DEFAULT_MAX_PIXELS`) is checked on the header, before
anything is decoded (a guard against decompression bombs).

* colour (RGB, RGBA, palette, CMYK, YCbCr, LAB...) is read as RGB, with alpha kept aside where the
  input has it. CMYK with an ICC profile is converted to sRGB through that profile, CMYK without
  one by Pillow's plain conversion.
* 16-bit colour PNG and TIFF files are decoded by :mod:`engine.io.codecs` (Pillow reduces them to
  8 bits); 16-bit gray stays 16-bit through Pillow.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.io.atomic import one_line
from engine.io.codecs import (
    ORIENTATION,
    cmyk_to_rgb,
    decode_16bit,
    exif_without_orientation,
    sixteen_bit_colour,
    tiff_text_exif,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
DEFAULT_MAX_PIXELS = 200_000_000  # guards against decompression bombs
# The most pixels a byte of file can hold, for decoders that fill missing data instead of failing:
# Huffman JPEG spends at least a bit per 8x8 block (512 px/byte); GIF's LZW at most ~2,730 px/byte.
_MAX_PIXELS_PER_BYTE = {"JPEG": 1024, "MPO": 1024, "GIF": 4096}
# Pillow's own guard (a warning above 89 MP, an error above twice that) would refuse a legitimate
# 100 MP photo; our limit is checked on the header instead, and Pillow's is raised to match it.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, DEFAULT_MAX_PIXELS)

_GRAY_MODES = ("1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageReadError(ValueError):
    """A file that cannot be read as an image; ``str()`` is one line naming the file."""



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
            kind = sixteen_bit_colour(path, im)
            if kind:
                exif = im.getexif()
                orientation = exif.get(ORIENTATION, 1)
                exif_bytes = exif_without_orientation(exif) if fmt == "PNG" else tiff_text_exif(exif)
                arr = _apply_orientation(decode_16bit(path, kind), orientation)
                return _from_uint16(arr, path, fmt, exif_bytes, icc, dpi, _xmp(info))
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            info = dict(im.info)
            mode = im.mode
            exif_bytes = info.get("exif") or None
            if fmt == "TIFF":
                exif_bytes = tiff_text_exif(im.getexif())
            alpha = None
            if mode in _ALPHA_MODES or (mode == "P" and "transparency" in info):
                rgba = im.convert("RGBA") if mode in ("P", "PA") else im
                alpha = np.array(rgba.getchannel("A"))
                mode = "PA" if mode == "P" else mode
            elif mode in ("L", "1") and "transparency" in info:
                alpha = np.array(im.convert("LA").getchannel("A"))
                mode = "LA"
            if im.mode == "CMYK":
                rgb, icc = cmyk_to_rgb(im, icc)
                pixels = to_float_rgb(rgb)
            else:
                pixels = to_float_rgb(im)
            bit_depth = 16 if mode.startswith("I;16") or (mode == "I" and np.asarray(im).max() > 255) else 8
            return LoadedImage(pixels, alpha, exif_bytes, icc, dpi, bit_depth, mode, fmt, path, _xmp(info))


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
