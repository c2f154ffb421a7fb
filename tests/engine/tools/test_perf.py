"""The measurements behind ``photomend bench``: process timing, the peak, the restorer's FLOPs.

These check what is measured and that the numbers are sane, never how fast anything is.
"""

from __future__ import annotations

import sys

import torch

from engine.models.configs import UNetConfig
from engine.models.unet import ConditionalUNet
from engine.tools.perf import best_of_peaks, conv_widths, measure_peak, restorer_compute, time_process


def test_time_process_gives_wall_time_peak_rss_and_the_exit_status():
    grow = "import sys; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); sys.exit(3)"
    run = time_process([sys.executable, "-c", grow])
    assert run.returncode == 3 and run.seconds > 0
    assert run.peak_rss_mb is None or run.peak_rss_mb > 200  # that child's own peak, not the test's
    small = time_process([sys.executable, "-c", "import sys; print('x', file=sys.stderr)"])
    assert small.returncode == 0 and small.stderr_tail == "x"
    assert small.peak_rss_mb is None or small.peak_rss_mb < run.peak_rss_mb


def test_conv_widths_follow_the_levels():
    cfg = UNetConfig(base_channels=24, channel_mult=(1, 2, 4, 8), stem_factor=2)
    assert conv_widths(cfg, 1024) == [(24, 512), (48, 256), (96, 128), (192, 64)]


def test_peak_reports_every_candidate_and_takes_the_best():
    peak = measure_peak([(8, 32), (16, 16)], matmul_n=128)
    assert [c["channels"] for c in peak["conv3x3"]] == [8, 16]
    assert peak["peak_gflops"] == max([peak["matmul_gflops"]] + [c["gflops"] for c in peak["conv3x3"]]) >= 0
    assert peak["matmul_n"] == 128 and peak["threads"] == torch.get_num_threads()


def test_restorer_flops_match_a_hand_count():
    """A network of one 3x3 convolution: FLOPs are 2 * 9 * Cin * Cout per output pixel."""
    net = torch.nn.Conv2d(4, 8, 3, padding=1)
    x = torch.rand(1, 4, 32, 32)
    got = restorer_compute(lambda: net(x))
    assert got["flops"] == 2 * 9 * 4 * 8 * 32 * 32
    assert got["gflops"] >= 0 and got["conv_time_share"] > 0.5  # the network is all convolution


def test_restorer_compute_on_a_small_unet():
    cfg = UNetConfig(base_channels=8, channel_mult=(1, 2), attention_levels=(1,), attention_heads=2, time_dim=16,
                     cond_dim=12)
    net = ConditionalUNet(cfg).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    got = restorer_compute(lambda: net(x, x, torch.rand(1), torch.randn(1, 3, 12)))
    assert got["flops"] > 0 and "aten.convolution" in got["flops_by_op"]
    assert got["top_other_ops"] and all(0 <= o["share"] <= 1 for o in got["top_other_ops"])


def test_keep_freed_memory_is_idempotent_and_harmless():
    from engine.inference.allocator import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first  # applied once
    if not sys.platform.startswith("linux"):
        assert first is False  # glibc only
    assert torch.ones(8 << 20).sum().item() == 8 << 20  # allocation still works afterwards


def test_best_of_peaks_keeps_each_candidates_best():
    a = {"matmul_n": 8, "matmul_gflops": 5.0, "conv3x3": [{"channels": 4, "side": 8, "gflops": 3.0}],
         "peak_gflops": 5.0, "threads": 1}
    b = dict(a, matmul_gflops=4.0, conv3x3=[{"channels": 4, "side": 8, "gflops": 7.0}], peak_gflops=7.0)
    best = best_of_peaks([a, b])
    assert best["matmul_gflops"] == 5.0 and best["conv3x3"][0]["gflops"] == 7.0 and best["peak_gflops"] == 7.0
    assert best["rounds"] == 2 and a["conv3x3"][0]["gflops"] == 3.0  # the inputs are left as they were
