"""``jpeg-compressed``: a round trip through PIL's JPEG encoder.

Severity (drawn per call, overridable by keyword):

* ``quality`` 10-60 (uniform integer).
* ``subsampling`` ``"4:2:0"`` (70%, the camera and web default) or ``"4:4:4"`` (30%).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from engine.degradations._common import Params

_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def jpeg_compressed(image: np.ndarray, rng: np.random.Generator, **overrides) -> tuple[np.ndarray, dict]:
    """Encode as JPEG at quality 10-60 and decode again."""
    p = Params(rng, overrides)
    quality = p.integer("quality", 10, 60)
    subsampling = p.choice("subsampling", ("4:2:0", "4:4:4"), p=(0.7, 0.3))
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image), mode="RGB").save(
        buf, format="JPEG", quality=int(quality), subsampling=_SUBSAMPLING[subsampling]
    )
    buf.seek(0)
    with Image.open(buf) as im:
        out = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return out, p.done()
