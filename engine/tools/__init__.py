"""Tools: offline evaluation, synthetic sets and benchmarks (not on a restore's path)."""
