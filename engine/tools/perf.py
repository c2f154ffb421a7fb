"""Measurements behind ``photomend bench``: whole processes, the machine's peak, the restorer's share of it.

* :func:`time_process` runs a command as a user would and returns its wall time and peak RSS.
* :func:`measure_peak` times what this machine's cores do at best with the network's kind of work:
  a large fp32 matmul and 3x3 convolutions at the restorer's widths (channels-last, as the runtime).
* :func:`restorer_compute` counts the FLOPs of one forward pass with
  :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products; element-wise
  operations count nothing), times the pass, and splits its time between the convolutions and the
  rest (norms, activations, pixel shuffles) with the profiler, which says what bounds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessRun:
    """One finished command: ``seconds`` of wall time, ``peak_rss_mb`` and ``cpu_seconds`` (user +
    system; ``None`` where the OS cannot say), ``returncode`` and the tail of its standard error."""

    seconds: float
    peak_rss_mb: float | None
    cpu_seconds: float | None
    returncode: int
    stderr_tail: str


# Runs argv[1:] and prints its wall time, peak RSS and CPU time. A child's peak RSS on Linux starts
# at its parent's RSS when it was spawned (exec folds the old address space's high-water mark into
# it), so the command is started from this small interpreter, not from the large benchmarking one.
_LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
seconds = time.perf_counter() - start
proc.returncode = os.waitstatus_to_exitcode(status)
print(json.dumps({"seconds": seconds, "maxrss": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime,
                  "returncode": proc.returncode}))
"""


def time_process(cmd: list[str], cwd: str | None = None, env: dict | None = None) -> ProcessRun:
    """Run ``cmd`` to its end; its wall time from start to exit, the peak RSS of that process alone
    (``os.wait4`` in a small launcher) and its CPU time. Without ``os.wait4`` (Windows) only the
    wall time is measured."""
    if not hasattr(os, "wait4"):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        text = proc.stderr.decode("utf-8", "replace").strip()
        return ProcessRun(round(time.perf_counter() - start, 3), None, None, proc.returncode, text[-2000:])
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], cwd=cwd, env=env, capture_output=True)
    lines = proc.stderr.decode("utf-8", "replace").strip()
    report = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    peak = report["maxrss"] / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS, kB else
    return ProcessRun(round(report["seconds"], 3), round(peak, 1), round(report["cpu"], 2), report["returncode"],
                      lines[-2000:])


def best_seconds(fn: Callable[[], object], repeats: int = 5, min_seconds: float = 0.0) -> float:
    """The shortest of ``repeats`` timed calls (after one warm-up), repeating until ``min_seconds``."""
    fn()
    times: list[float] = []
    while len(times) < repeats or sum(times) < min_seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def conv_widths(unet_config, tile: int) -> list[tuple[int, int]]:
    """``(channels, side)`` of the restorer's 3x3 convolutions per level for a ``tile``-pixel tile."""
    side = tile // unet_config.stem_factor
    return [(unet_config.base_channels * m, max(1, side >> i)) for i, m in enumerate(unet_config.channel_mult)]


def measure_peak(widths: list[tuple[int, int]], matmul_n: int = 2048) -> dict:
    """GFLOP/s of an ``n x n`` fp32 matmul and of a 3x3 convolution (bias, padding 1, channels-last,
    batch 1) at each ``(channels, side)``; ``peak`` is the best of them."""
    import torch

    with torch.inference_mode():
        a, b = torch.randn(matmul_n, matmul_n), torch.randn(matmul_n, matmul_n)
        matmul = 2 * matmul_n**3 / best_seconds(lambda: torch.mm(a, b), repeats=5) / 1e9
        convs = []
        for channels, side in widths:
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval().to(memory_format=torch.channels_last)
            x = torch.randn(1, channels, side, side).contiguous(memory_format=torch.channels_last)
            flops = 2 * 9 * channels * channels * side * side
            convs.append({"channels": channels, "side": side,
                          "gflops": round(flops / best_seconds(lambda c=conv, x=x: c(x), min_seconds=0.5) / 1e9, 1)})
    return {"matmul_n": matmul_n, "matmul_gflops": round(matmul, 1), "conv3x3": convs,
            "peak_gflops": round(max([matmul] + [c["gflops"] for c in convs]), 1), "threads": torch.get_num_threads()}


def _is_convolution(op_name: str) -> bool:
    return "conv" in op_name  # aten::mkldnn_convolution, aten::_slow_conv2d_forward, aten::convolution...


def best_of_peaks(peaks: list[dict]) -> dict:
    """Several :func:`measure_peak` results merged: the best figure of each candidate (other jobs
    on a shared machine only ever slow a measurement down)."""
    best = dict(peaks[0], conv3x3=[dict(c) for c in peaks[0]["conv3x3"]])
    for peak in peaks[1:]:
        best["matmul_gflops"] = max(best["matmul_gflops"], peak["matmul_gflops"])
        for mine, other in zip(best["conv3x3"], peak["conv3x3"], strict=True):
            mine["gflops"] = max(mine["gflops"], other["gflops"])
    best["peak_gflops"] = max([best["matmul_gflops"]] + [c["gflops"] for c in best["conv3x3"]])
    best["rounds"] = len(peaks)
    return best


def restorer_compute(predict: Callable[[], object]) -> dict:
    """FLOPs and time of one restorer forward pass ``predict()`` and the share of its time spent in
    convolutions (profiler, self time per operator) against everything else."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            predict()
        flops = counter.get_total_flops()
        by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
        seconds = best_seconds(predict, repeats=3, min_seconds=3.0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            predict()
    self_us: dict[str, float] = {}
    for event in prof.key_averages():
        self_us[event.key] = self_us.get(event.key, 0.0) + event.self_cpu_time_total
    total_us = sum(self_us.values()) or 1.0
    conv_us = sum(t for name, t in self_us.items() if _is_convolution(name))
    conv_flops = sum(v for k, v in by_op.items() if "convolution" in k)
    others = sorted(((t, name) for name, t in self_us.items() if not _is_convolution(name)), reverse=True)[:4]
    return {
        "flops": int(flops), "flops_by_op": by_op, "seconds": round(seconds, 4),
        "gflops": round(flops / seconds / 1e9, 1),
        "conv_time_share": round(conv_us / total_us, 3),
        "conv_gflops": round(conv_flops / (conv_us / 1e6) / 1e9, 1) if conv_us else None,
        "top_other_ops": [{"op": name, "share": round(t / total_us, 3)} for t, name in others],
    }
