"""Benchmarks: each `bench_*.py` prints measured figures and rewrites its section of BENCHMARKS.md."""
