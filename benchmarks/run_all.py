"""Run every `benchmarks/bench_*.py` (each rewrites its own BENCHMARKS.md section). `make bench` calls this.

Usage: python -m benchmarks.run_all [NAME ...] [--tiny] [--md PATH]; `--tiny` and `--md` go to every benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

__all__ = ["BENCH_NAMES", "main"]

BENCH_NAMES = tuple(sorted(p.stem for p in Path(__file__).resolve().parent.glob("bench_*.py")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help=f"a subset of {', '.join(BENCH_NAMES)}")
    p.add_argument("--tiny", action="store_true", help="every benchmark at its smoke scale (seconds each)")
    p.add_argument("--md", default=None, help="write the sections here instead of BENCHMARKS.md")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    unknown = sorted(set(args.names) - set(BENCH_NAMES))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCH_NAMES)}")
    common = (["--tiny"] if args.tiny else []) + (["--md", args.md] if args.md else [])
    failed = []
    for name in BENCH_NAMES:
        if args.names and name not in args.names:
            continue
        print(f"\n=== {name} ===", flush=True)
        t0 = time.time()
        try:
            importlib.import_module(f"benchmarks.{name}").main(common)
        except Exception as exc:  # report and go on: one broken benchmark must not hide the others
            print(f"[bench] {name} failed: {exc!r}", file=sys.stderr)
            failed.append(name)
        print(f"=== {name}: {time.time() - t0:.1f} s ===", flush=True)
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
