"""A stand-in for engine.batch / engine.runtime while those are being written (same contract)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from engine.api import Detection
from engine.imageio import is_image_path, list_images
from engine.jobs import BatchEvent, FileResult


class FakeRestorer:
    def __init__(self, model_dir=None, device="auto", tile_seconds=0.05, tiles=6):
        self.tile_seconds, self.tiles = tile_seconds, tiles

    def detect(self, image):
        return Detection(("noisy", "hazy"), {"noisy": 0.9, "hazy": 0.7})


def collect_inputs(paths, recursive, exclude):
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out += [(f, p) for f in list_images(p, recursive)]
        elif is_image_path(p):
            out.append((p, p.parent))
    return out


def run_batch(inputs, settings, restorer, on_event, cancel):
    results = []
    total = len(inputs)
    for i, (path, root) in enumerate(inputs):
        if cancel.cancelled:
            on_event(BatchEvent("cancelled", path, i, total))
            results.append(FileResult(str(path), "cancelled"))
            continue
        t0 = time.perf_counter()
        on_event(BatchEvent("started", path, i, total))
        det = settings.degradations
        detection = Detection(tuple(det), {}) if det is not None else restorer.detect(None)
        on_event(BatchEvent("detected", path, i, total, detection=detection))
        stopped = False
        for t in range(restorer.tiles):
            if cancel.cancelled:
                stopped = True
                break
            time.sleep(restorer.tile_seconds)
            on_event(BatchEvent("progress", path, i, total, done=t + 1, todo=restorer.tiles))
        if stopped:
            on_event(BatchEvent("cancelled", path, i, total))
            results.append(FileResult(str(path), "cancelled"))
            continue
        rel = path.relative_to(root)
        out = Path(settings.output_dir) / rel.parent / f"{path.stem}{settings.suffix}{path.suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name("." + out.name + ".tmp" + out.suffix)
        try:
            im = Image.open(path).convert("RGB")
        except OSError as exc:
            on_event(BatchEvent("failed", path, i, total, error=f"{path}: {exc}"))
            results.append(FileResult(str(path), "failed"))
            continue
        Image.fromarray(255 - np.asarray(im)).save(tmp)
        os.replace(tmp, out)
        dt = time.perf_counter() - t0
        on_event(BatchEvent("done", path, i, total, output=out, detection=detection, seconds=dt))
        results.append(FileResult(str(path), "done", str(out)))
    return results
