"""Image writing, with the metadata of the input.

:func:`save_image` writes pixels with the metadata of the input, atomically (a part file in the
destination folder, then ``os.replace``), and never over the file it was read from.

Output modes (decided here):

* colour → RGB, plus alpha where the input had it and the format can store it (PNG, WebP, TIFF,
  BMP; JPEG drops alpha). Palette images are not re-quantised.
* grayscale (1, L, LA, I;16, I, F) → grayscale of the restored pixels (Rec. 601 luma); bilevel
  becomes 8-bit gray.
* 16-bit PNG and TIFF (gray or colour, with or without alpha) stay 16-bit when written as PNG or
  TIFF (:mod:`engine.io.codecs`); other formats get 8 bits.
* EXIF is written with its orientation tag set to 1 (the pixels are already upright) to JPEG, PNG,
  WebP and TIFF; 16-bit TIFF keeps the descriptive main-IFD tags only (make, model, date, artist,
  copyright...). ICC goes to every format but BMP, DPI to JPEG, PNG, TIFF and BMP.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from engine.io.atomic import commit_part_file, new_part_file, one_line
from engine.io.codecs import ORIENTATION, write_png16, write_tiff16
from engine.io.reader import LoadedImage

# Output formats and their canonical suffix.
FORMATS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "tiff": ".tif", "bmp": ".bmp"}
_PIL_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF", "bmp": "BMP"}
_ALPHA_FORMATS = ("png", "webp", "tiff", "bmp")


class ImageWriteError(OSError):
    """An output that cannot be written; ``str()`` is one line naming the file."""



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
        if ORIENTATION in parsed:
            parsed[ORIENTATION] = 1
        return parsed.tobytes()
    except Exception:  # unparsable EXIF is dropped rather than copied blindly
        return None



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
        write_tiff16(fh, arr, icc, dpi, exif, has_alpha)
        return
    if bits == 16 and (not gray or has_alpha):
        write_png16(fh, arr, icc, dpi, exif)
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
