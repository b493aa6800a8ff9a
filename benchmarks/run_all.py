"""Run every `benchmarks/bench_*.py` (each rewrites its own BENCHMARKS.md section). `make bench` calls this."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    only = set(sys.argv[1:])
    failed = []
    for name in names:
        if only and name not in only:
            continue
        print(f"\n=== {name} ===", flush=True)
        t0 = time.time()
        try:
            importlib.import_module(f"benchmarks.{name}").main()
        except Exception as exc:  # report and go on: one broken benchmark must not hide the others
            print(f"[bench] {name} failed: {exc!r}", file=sys.stderr)
            failed.append(name)
        print(f"=== {name}: {time.time() - t0:.1f} s ===", flush=True)
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
