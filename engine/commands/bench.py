"""``photomend bench``: restoration speed and memory for 1-24 MP JPEG photos, with the engine's overhead.

Each size runs in a fresh subprocess (so its peak RSS, read with ``resource.getrusage``, is that
photo's alone): read the JPEG, detect, restore in tiles, write the JPEG. The restorer's network
calls are timed inside the run, and the same network's bare forward throughput on one tile is
measured afterwards, so what the engine adds (IO, detection, tiling, blending) is visible.

Then, as a user sees it (:mod:`engine.tools.perf`): the cold start (a whole ``photomend restore`` process
on a tiny photo against ``python -c "import torch"``, in the same run), one photo end to end
(process wall time and peak RSS), and the restorer's achieved GFLOP/s against this machine's
measured peak (a large matmul and 3x3 convolutions at the network's widths).
Results go to a Markdown file with the machine described.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.cli import UsageError


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure restoration speed and memory for 1-24 MP photos")
    p.add_argument("--sizes", default="1,4,12,24", help="megapixels, comma-separated (default 1,4,12,24)")
    p.add_argument("--steps", type=int, default=1, help="IR-SDE steps (default 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    p.add_argument("--tile", type=int, default=None, help="tile side (default: from free memory)")
    p.add_argument("--model", type=Path, default=None, metavar="DIR", help="model bundle (default: bundled)")
    p.add_argument("--out", type=Path, default=Path("docs/PERFORMANCE.md"), help="Markdown results file")
    p.add_argument("--no-write", action="store_true", help="print the results only")
    p.add_argument("--repeat", type=int, default=2,
                   help="runs of each whole-process measurement (cold start, end to end; default 2)")
    p.add_argument("--end-to-end", type=float, default=12.0, metavar="MP",
                   help="megapixels of the end-to-end photo (default 12; 0 skips it)")
    p.add_argument("--no-compute", action="store_true", help="skip the achieved-against-peak GFLOP/s measurement")
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--compute-worker", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- one size (subprocess)


def make_photo(path: Path, megapixels: float, seed: int = 0) -> tuple[int, int]:
    """A synthetic 4:3 JPEG of about ``megapixels``: a sample photo upscaled, with noise (quality 90)."""
    import numpy as np
    from PIL import Image

    from engine.resources import samples_dir

    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(width * 3 / 4))
    sample = samples_dir() / "coffee.jpg"
    if sample.is_file():
        with Image.open(sample) as im:
            base = im.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    else:
        y, x = np.mgrid[0:height, 0:width]
        base = Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8))
    rng = np.random.default_rng(seed)
    arr = np.asarray(base, dtype=np.uint8).copy()
    for r0 in range(0, height, 512):  # add noise in strips: no full-frame float copy
        block = arr[r0:r0 + 512].astype(np.int16) + rng.normal(0, 6, arr[r0:r0 + 512].shape).astype(np.int16)
        arr[r0:r0 + 512] = np.clip(block, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=90)
    return width, height


def run_worker(image: Path, steps: int, device: str, tile: int | None, model: Path | None) -> dict:
    """Restore ``image`` once and time each phase; returns a JSON-ready dict (in the subprocess)."""
    import resource

    import torch

    from engine.inference.allocator import keep_freed_memory
    from engine.inference.runtime import Restorer
    from engine.io.reader import load_image
    from engine.io.writer import save_image
    from engine.jobs.api import RestoreOptions

    keep_freed_memory()  # as photomend restore does
    t0 = time.perf_counter()
    restorer = Restorer(model, device=device)
    t_load = time.perf_counter() - t0
    forward = {"seconds": 0.0, "calls": 0}
    predict = restorer.model.predict

    def timed_predict(*args, **kwargs):
        if restorer.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = predict(*args, **kwargs)
        if restorer.device.type == "cuda":
            torch.cuda.synchronize()
        forward["seconds"] += time.perf_counter() - start
        forward["calls"] += 1
        return out

    restorer.model.predict = timed_predict
    options = RestoreOptions(steps=steps, tile=tile, guard=None)  # timed: the guard must not skip the network
    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = time.process_time()
        t1 = time.perf_counter()
        loaded = load_image(image)
        t2 = time.perf_counter()
        prepared = restorer.prepare(loaded.pixels, options)
        t3 = time.perf_counter()
        plan = restorer.plan(loaded.height, loaded.width, options)
        pixels = restorer.restore_prepared(loaded.pixels, prepared, options)
        t4 = time.perf_counter()
        save_image(pixels, Path(tmp) / "out.jpg", format="jpeg", quality=95, metadata=loaded)
        t5 = time.perf_counter()
        cpu_s = time.process_time() - cpu0
        del pixels
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    if sys.platform == "darwin":
        peak_rss_mb /= 1024  # bytes on macOS

    # bare forward throughput of the same network on one full tile
    restorer.model.predict = predict
    side = plan.tiles[0]
    lq = torch.rand(1, 3, side.height, side.width)
    cond = None if prepared.condition is None else prepared.condition.unsqueeze(0)
    predict(lq, cond, steps=steps)  # warm-up
    reps, start = 0, time.perf_counter()
    while reps < 2 or (time.perf_counter() - start < 5 and reps < 10):
        predict(lq, cond, steps=steps)
        reps += 1
    bare_seconds = (time.perf_counter() - start) / reps
    mp = loaded.height * loaded.width / 1e6
    total = t5 - t1
    return {
        "megapixels": round(mp, 2), "width": loaded.width, "height": loaded.height,
        "tile": f"{plan.tile_w}×{plan.tile_h}", "tiles": len(plan), "processed_mp": round(plan.processed_pixels / 1e6, 2),
        "load_model_s": round(t_load, 2), "read_s": round(t2 - t1, 2), "detect_s": round(t3 - t2, 2),
        "restore_s": round(t4 - t3, 2), "save_s": round(t5 - t4, 2), "total_s": round(total, 2),
        "forward_s": round(forward["seconds"], 2), "forward_calls": forward["calls"],
        "mp_per_s": round(mp / total, 3), "cpu_s": round(cpu_s, 1),
        "cpu_share": round(cpu_s / total / max(torch.get_num_threads(), 1), 2),
        "bare_tile_s": round(bare_seconds, 3),
        "bare_mp_per_s": round(side.height * side.width / 1e6 / bare_seconds, 3),
        "overhead_pct": round(100 * (total - forward["seconds"]) / total, 1),
        "overhead_wo_detect_pct": round(100 * (total - forward["seconds"] - (t3 - t2)) / total, 1),
        "peak_rss_mb": round(peak_rss_mb),
        "device": str(restorer.device), "threads": torch.get_num_threads(),
    }


def run_compute_worker(tile: int, device: str, model: Path | None, rounds: int = 3) -> dict:
    """The restorer's achieved GFLOP/s on one ``tile`` x ``tile`` tile against this machine's peak
    (in the subprocess): see :mod:`engine.tools.perf`. ``rounds`` alternations of the peak and the pass."""
    import torch

    from engine.inference.allocator import keep_freed_memory
    from engine.inference.runtime import Restorer
    from engine.tools.perf import best_of_peaks, best_seconds, conv_widths, measure_peak, restorer_compute

    keep_freed_memory()
    restorer = Restorer(model, device=device)
    lq = torch.rand(1, 3, tile, tile, generator=torch.Generator().manual_seed(0))
    lq = lq.contiguous(memory_format=torch.channels_last)  # as the runtime feeds it
    cond = torch.randn(1, 3, restorer.model.cond_dim, generator=torch.Generator().manual_seed(1))
    def predict():
        return restorer.model.predict(lq, cond, steps=1)

    compute = restorer_compute(predict)
    # the peak and the pass alternately, best of each: a shared machine's other jobs come and go
    widths = conv_widths(restorer.model.config.unet, tile)
    peaks, seconds = [], [compute["seconds"]]
    for _ in range(rounds):
        peaks.append(measure_peak(widths))
        seconds.append(best_seconds(predict, repeats=2))
    peak = best_of_peaks(peaks)
    compute["seconds"] = round(min(seconds), 4)
    compute["gflops"] = round(compute["flops"] / min(seconds) / 1e9, 1)
    compute.update(tile=tile, peak=peak, percent_of_peak=round(100 * compute["gflops"] / peak["peak_gflops"], 1))
    return compute


# --------------------------------------------------------------------------- whole processes


def _photomend_command() -> list[str]:
    """How a user starts photomend here: the console script beside this Python, else ``python -m engine``."""
    script = Path(sys.executable).with_name("photomend.exe" if os.name == "nt" else "photomend")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "engine"]


def _summary(runs: list) -> dict:
    seconds = [r.seconds for r in runs]
    return {"runs_s": seconds, "best_s": min(seconds), "median_s": round(sorted(seconds)[len(seconds) // 2], 3),
            "peak_rss_mb": max((r.peak_rss_mb or 0) for r in runs) or None,
            "cpu_s": [r.cpu_seconds for r in runs]}


def measure_processes(tmp: Path, model: Path, steps: int, device: str, repeat: int, e2e_mp: float) -> dict:
    """Cold start (a tiny photo, whole process, against ``python -c "import torch"`` in the same run,
    interleaved) and end to end on an ``e2e_mp`` JPEG, each ``repeat`` times."""
    from PIL import Image

    from engine.resources import samples_dir
    from engine.tools.perf import time_process

    photomend = _photomend_command()
    tiny = tmp / "tiny.png"
    with Image.open(samples_dir() / "astronaut.jpg") as im:
        im.convert("RGB").crop((96, 96, 160, 160)).save(tiny)
    common = ["--no-progress", "--overwrite", "--steps", str(steps), "--device", device, "--model", str(model)]
    torch_runs, tiny_runs = [], []
    for _ in range(repeat):
        torch_runs.append(time_process([sys.executable, "-c", "import torch"]))
        tiny_runs.append(time_process(photomend + ["restore", str(tiny), "-o", str(tmp / "tiny-out")] + common))
    for run in torch_runs + tiny_runs:
        if run.returncode != 0:
            raise RuntimeError(f"cold start run failed: {run.stderr_tail.splitlines()[-1:]}")
    out = {"command": photomend, "import_torch": _summary(torch_runs), "tiny_restore": _summary(tiny_runs)}
    out["ratio_best"] = round(out["tiny_restore"]["best_s"] / out["import_torch"]["best_s"], 2)
    out["ratio_median"] = round(out["tiny_restore"]["median_s"] / out["import_torch"]["median_s"], 2)
    if e2e_mp > 0:
        photo = tmp / f"e2e_{e2e_mp:g}mp.jpg"
        width, height = make_photo(photo, e2e_mp)
        runs, batch_s = [], []
        for _ in range(repeat):
            report = tmp / "e2e-report.json"
            run = time_process(photomend + ["restore", str(photo), "-o", str(tmp / "e2e-out"), "--report",
                                            str(report)] + common)
            if run.returncode != 0:
                raise RuntimeError(f"end-to-end run failed: {run.stderr_tail.splitlines()[-1:]}")
            runs.append(run)
            batch_s.append(json.loads(report.read_text())["seconds"])
        out["end_to_end"] = dict(_summary(runs), megapixels=round(width * height / 1e6, 2), size=f"{width}×{height}",
                                 batch_s=batch_s)
    return out


# --------------------------------------------------------------------------- the command


def machine_description() -> dict:
    import psutil
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu, "logical_cores": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "gpu": gpu,
        "torch": torch.__version__, "python": platform.python_version(), "os": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def markdown(results: list[dict], machine: dict, command: str, model: str) -> str:
    lines = [
        "# Performance",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"- Machine: {machine['cpu']}, {machine['usable_cores']} usable cores "
        f"({machine['logical_cores']} logical), {machine['ram_gb']} GB RAM"
        + (f", GPU {machine['gpu']}" if machine["gpu"] else ", no GPU"),
        f"- Software: torch {machine['torch']}, Python {machine['python']}, {machine['os']}",
        f"- Load average when the benchmark started (other jobs share the CPU): {machine['load_average']}",
        f"- Model: `{model}`; device {results[0]['device'] if results else '?'}, "
        f"{results[0]['threads'] if results else '?'} torch threads",
        "",
        "Each photo is a synthetic 4:3 JPEG (a sample photo upscaled, with noise) restored in a fresh "
        "process: read → detect → tiled restoration → JPEG write (quality 95). *forward* is the time "
        "spent inside the restoration network's calls; *overhead* is everything else "
        "(decoding, detection, tiling, blending, encoding) as a share of the total; *overhead w/o "
        "detect* leaves the detector's time out. *bare MP/s* is the same network on one tile "
        "in a loop. Model loading is listed apart (once per batch). *CPU s* is the process's CPU time "
        "from read to write and *CPU share* = CPU s / (total s × torch threads): below 1 the process "
        "waited for cores taken by other jobs, so on an idle machine the total would be about "
        "total × CPU share.",
        "",
        "| MP | size | tile × n | total s | MP/s | forward s | bare MP/s | overhead | overhead w/o detect "
        "| read s | detect s | save s | load model s | CPU s | CPU share | peak RSS MB |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['megapixels']} | {r['width']}×{r['height']} | {r['tile']} × {r['tiles']} | {r['total_s']} "
            f"| {r['mp_per_s']} | {r['forward_s']} | {r['bare_mp_per_s']} | {r['overhead_pct']}% "
            f"| {r['overhead_wo_detect_pct']}% | {r['read_s']} | {r['detect_s']} | {r['save_s']} "
            f"| {r['load_model_s']} | {r['cpu_s']} | {r['cpu_share']} | {r['peak_rss_mb']} |")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    if args.worker is not None:
        print(json.dumps(run_worker(args.worker, args.steps, args.device, args.tile, args.model)))
        return 0
    if args.compute_worker is not None:
        print(json.dumps(run_compute_worker(args.compute_worker, args.device, args.model)))
        return 0
    if args.repeat < 1:
        raise UsageError("--repeat must be at least 1")
    from engine.bundle import bundled_model_dir, is_model_bundle

    try:
        sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--sizes must be numbers, got {args.sizes!r}") from None
    if not sizes or any(s <= 0 or s > 200 for s in sizes):
        raise UsageError("--sizes must be between 0 and 200 megapixels")
    model = args.model or bundled_model_dir()
    if not is_model_bundle(model):
        raise UsageError(f"{model}: no model bundle to benchmark (pass --model DIR)")

    machine = machine_description()  # before the runs: the load average of the other jobs
    results = []
    with tempfile.TemporaryDirectory(prefix="photomend-bench-") as tmp:
        for mp in sizes:
            image = Path(tmp) / f"photo_{mp:g}mp.jpg"
            make_photo(image, mp)
            cmd = [sys.executable, "-m", "engine", "bench", "--worker", str(image), "--steps", str(args.steps),
                   "--device", args.device, "--model", str(model)]
            if args.tile:
                cmd += ["--tile", str(args.tile)]
            print(f"bench: {mp:g} MP ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            image.unlink(missing_ok=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"bench: {mp:g} MP failed: {tail}", file=sys.stderr)
                return 1
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(result)
            print(f"bench: {mp:g} MP: {result['total_s']} s, {result['mp_per_s']} MP/s, overhead "
                  f"{result['overhead_pct']}%, peak RSS {result['peak_rss_mb']} MB", file=sys.stderr)
        compute = None
        print("bench: cold start and end to end ...", file=sys.stderr, flush=True)
        try:
            processes = measure_processes(Path(tmp), model, args.steps, args.device, args.repeat, args.end_to_end)
        except RuntimeError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        print(f"bench: cold start {processes['ratio_best']}x import torch", file=sys.stderr)
        if not args.no_compute:
            print("bench: achieved against peak GFLOP/s ...", file=sys.stderr, flush=True)
            tile = max(int(side) for side in results[-1]["tile"].split("×")) if results else 1024
            cmd = [sys.executable, "-m", "engine", "bench", "--compute-worker", str(tile), "--device", args.device,
                   "--model", str(model)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"bench: compute measurement failed: {tail}", file=sys.stderr)
                return 1
            compute = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"bench: restorer {compute['gflops']} GFLOP/s, {compute['percent_of_peak']}% of "
                  f"{compute['peak']['peak_gflops']}", file=sys.stderr)
    command = "photomend bench " + " ".join(a for a in sys.argv[2:] if a) if sys.argv[1:2] == ["bench"] \
        else "photomend bench"
    text = markdown(results, machine, command.strip(), str(model)) + extra_markdown(processes, compute, args.steps)
    print(text)
    if not args.no_write:
        write_results(args.out, text)
        print(f"bench: wrote {args.out}", file=sys.stderr)
    return 0


def extra_markdown(processes: dict | None, compute: dict | None, steps: int) -> str:
    """The cold start, end-to-end and achieved-against-peak sections."""
    lines: list[str] = []
    if processes:
        torch_s, tiny = processes["import_torch"], processes["tiny_restore"]
        cmd = " ".join(Path(processes["command"][0]).name if i == 0 else a for i, a in enumerate(processes["command"]))
        lines += [
            "", "## Cold start", "",
            f"A whole `{cmd} restore` process on a 64×64 PNG (`--steps {steps}`, model loaded, detected, restored, "
            'written) against `python -c "import torch"`, interleaved in the same run; wall time of each process.',
            "",
            "| process | runs s | best s | median s | peak RSS MB |",
            "|---|---|---:|---:|---:|",
            f'| `python -c "import torch"` | {", ".join(map(str, torch_s["runs_s"]))} | {torch_s["best_s"]} '
            f"| {torch_s['median_s']} | {torch_s['peak_rss_mb']} |",
            f"| `photomend restore` tiny photo | {', '.join(map(str, tiny['runs_s']))} | {tiny['best_s']} "
            f"| {tiny['median_s']} | {tiny['peak_rss_mb']} |",
            "",
            f"Ratio: **{processes['ratio_best']}×** (best against best), {processes['ratio_median']}× (median against "
            "median); target at most 1.6×.",
        ]
        e2e = processes.get("end_to_end")
        if e2e:
            lines += [
                "", "## End to end", "",
                f"`{cmd} restore photo.jpg -o OUT --steps {steps}` on a {e2e['megapixels']} MP JPEG ({e2e['size']}) "
                "as a user runs it: one process from start to exit (start-up, model loading, reading, detection, "
                "tiled restoration, writing). *batch s* is what the command itself reports for the photos.",
                "",
                "| runs s | best s | batch s | CPU s | peak RSS MB |",
                "|---|---:|---|---|---:|",
                f"| {', '.join(map(str, e2e['runs_s']))} | {e2e['best_s']} | {', '.join(map(str, e2e['batch_s']))} "
                f"| {', '.join(map(str, e2e['cpu_s']))} | {e2e['peak_rss_mb']} |",
            ]
    if compute:
        peak = compute["peak"]
        convs = ", ".join(f"{c['channels']} ch at {c['side']}²: {c['gflops']}" for c in peak["conv3x3"])
        others = ", ".join(f"{o['op'].removeprefix('aten::')} {round(100 * o['share'])}%" for o in compute["top_other_ops"])
        lines += [
            "", "## Achieved against peak", "",
            f"One forward pass of the restorer on a {compute['tile']}² tile (channels-last, steps 1): "
            f"{compute['flops'] / 1e9:.1f} GFLOP counted by `torch.utils.flop_counter.FlopCounterMode` "
            f"({compute['flops'] / compute['tile'] ** 2 / 1e3:.1f} kFLOP per pixel; convolutions and matrix "
            f"products only) in {compute['seconds']} s: **{compute['gflops']} GFLOP/s**, "
            f"**{compute['percent_of_peak']}%** of this machine's measured peak of {peak['peak_gflops']} GFLOP/s "
            f"({peak['threads']} threads, measured in the same run: {peak['rounds']} alternations of the peak and "
            "the pass, best of each).",
            "",
            f"- Peak candidates, GFLOP/s: fp32 matmul {peak['matmul_n']}²: {peak['matmul_gflops']}; 3x3 convolution "
            f"(channels-last, batch 1) at the network's widths: {convs}.",
            f"- What bounds it: convolutions take {round(100 * compute['conv_time_share'])}% of the forward time and "
            f"run at {compute['conv_gflops']} GFLOP/s there; the rest is element-wise and layout work that the "
            f"FLOP count does not see, bound by memory traffic ({others}).",
        ]
    return "\n".join(lines) + ("\n" if lines else "")


START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def write_results(path: Path, text: str) -> None:
    """Replace the text between the bench markers of ``path`` (notes around them are kept)."""
    block = f"{START}\n{text}{END}\n"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if START in old and END in old:
        head, rest = old.split(START, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + block + ("\n" + tail if tail else "")
    else:
        new = block + ("\n" + old if old else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")
