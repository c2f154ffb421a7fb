"""Prepare clean training photos: ``python -m engine.training.photos DEST SRC_DIR...``.

Collects photographs from the given folders (recursively) plus scikit-image's bundled colour
sample photos, downsizes each to at most ``--max-side`` pixels, and splits them into
``DEST/train`` and ``DEST/val`` by a hash of the file name (stable across machines).
Graphics that are not photographs (flat-colour wallpapers) are dropped by a texture test.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import skimage
from PIL import Image

from engine.io.reader import ImageReadError, list_images, open_image

SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg", "retina.jpg", "immunohistochemistry.png", "ihc.png", "camera.png",
                  "brick.png", "grass.png", "gravel.png", "moon.png", "coins.png")


def _is_photo(im: Image.Image) -> bool:
    small = np.asarray(im.convert("L").resize((256, 256)), dtype=np.float32)
    gy, gx = np.gradient(small)
    # photographs have texture almost everywhere; flat vector wallpapers do not
    return float(np.mean(np.hypot(gx, gy) > 2.0)) > 0.25


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("sources", type=Path, nargs="*")
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    args = ap.parse_args(argv)
    files = [Path(skimage.data_dir) / n for n in SKIMAGE_PHOTOS if (Path(skimage.data_dir) / n).is_file()]
    for src in args.sources:
        files += list_images(src, recursive=True)
    seen: set[str] = set()
    counts = {"train": 0, "val": 0, "skipped": 0}
    for path in files:
        # plasma wallpapers live in NAME/contents/images/WxH.ext; mate ones in NAME_WxH.ext
        parts = path.parts
        key = parts[-4] if len(parts) >= 4 and parts[-2] == "images" and parts[-3] == "contents" else path.stem
        key = key.split("_")[0].lower().replace(" ", "-")
        if key in seen:  # the same wallpaper at several resolutions
            continue
        seen.add(key)
        try:
            im = open_image(path).convert("RGB")
        except ImageReadError as exc:
            print(f"warning: {exc}")
            continue
        if not _is_photo(im):
            counts["skipped"] += 1
            continue
        im.thumbnail((args.max_side, args.max_side), Image.Resampling.LANCZOS)
        h = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 1000
        split = "val" if h < args.val_fraction * 1000 else "train"
        out = args.dest / split / f"{key}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        im.save(out)
        counts[split] += 1
    print(f"train {counts['train']}, val {counts['val']}, dropped as non-photos {counts['skipped']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
