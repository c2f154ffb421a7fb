"""16-bit PNGs go through torchvision's libpng, which crashes the process on some corrupt streams
(an IDAT CRC error gave SIGSEGV): the engine checks the stream first. Here: the crash case is now a
one-line error, and sound plain and Adam7-interlaced 16-bit PNGs still decode exactly."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from engine.io.reader import ImageReadError, load_image
from tests.reliability.corpus import seed_files

ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png16(arr: np.ndarray, interlace: bool) -> bytes:
    """A 16-bit RGB PNG of ``arr`` (uint16 H x W x 3), every row filter 0 (None)."""
    h, w, _ = arr.shape
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        for row in sub.astype(">u2"):
            raw += b"\x00" + row.tobytes()
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 1 if interlace else 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("interlace", [False, True])
def test_sound_16bit_pngs_decode_exactly(tmp_path, interlace):
    arr = np.random.default_rng(0).integers(0, 65536, (13, 11, 3), dtype=np.uint16)
    path = tmp_path / "sixteen.png"
    path.write_bytes(png16(arr, interlace))
    image = load_image(path)
    assert image.bit_depth == 16
    assert np.array_equal(np.round(image.pixels * 65535).astype(np.uint16), arr)


def test_corrupt_idat_crc_is_an_error_not_a_crash(tmp_path):
    data = bytearray(seed_files()["sixteen-bit.png"])
    at = data.find(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4:at])
    data[at + 4 + length] ^= 0x10  # the IDAT's CRC
    path = tmp_path / "bad crc.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="bad CRC"):
        load_image(path)
