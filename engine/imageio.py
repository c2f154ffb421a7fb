"""Image reading and writing.

Reading: :func:`read_rgb` returns the colour pixels of any supported file as ``float32 (H, W, 3)``
in ``[0, 1]``, with EXIF orientation applied. Errors are :class:`ImageReadError` with a one-line
message naming the file. (Metadata-preserving load/save for restoration outputs is added by the
runtime: ``load_image`` / ``save_image``.)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
DEFAULT_MAX_PIXELS = 200_000_000  # guards against decompression bombs


class ImageReadError(ValueError):
    """A file that cannot be read as an image; ``str()`` is one line naming the file."""


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode ``path`` with EXIF orientation applied; raise :class:`ImageReadError`."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageReadError(
                        f"{path}: {w}x{h} = {w * h / 1e6:.0f} MP exceeds the limit of {max_pixels / 1e6:.0f} MP"
                    )
                im.load()
                return ImageOps.exif_transpose(im)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image or an unsupported format") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: image too large ({exc})") from None
    except Image.DecompressionBombWarning as exc:
        raise ImageReadError(f"{path}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageReadError(f"{path}: corrupt or truncated image ({msg})") from None


def to_float_rgb(im: Image.Image) -> np.ndarray:
    """Convert any PIL mode to ``float32 (H, W, 3)`` in ``[0, 1]`` (16-bit precision kept)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        scale = 65535.0 if im.mode != "I" or arr.max() > 255 else 255.0
        gray = np.clip(arr / scale, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        gray = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA", "LA") else im.convert("RGB")
    return np.asarray(im, dtype=np.float32) / 255.0


def read_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read ``path`` as ``float32 (H, W, 3)`` RGB in ``[0, 1]``."""
    return to_float_rgb(open_image(path, max_pixels=max_pixels))


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted), following no symlinked folders when recursive."""
    folder = Path(folder)
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and is_image_path(p))
