"""Shared benchmark plumbing: repeat a measurement, summarise it (min/median/max), and rewrite one section of
BENCHMARKS.md between `<!-- bench:NAME -->` markers, headed by the machine description.

Usage in a benchmark module:

    from benchmarks.harness import Figure, bench_args, repeat, write_section
    def main(argv=None):
        args = bench_args(argv, __doc__)  # --tiny (seconds-long smoke scale, run by the test suite), --md PATH
        fig = Figure("fetch clips/s, 1 worker", repeat(run_once, n=2 if args.tiny else 3), unit="clips/s")
        write_section("fetch", [fig], notes="...")

`--md PATH` (or the TGDP_BENCH_MD environment variable) sends the sections to another file than the repository's
BENCHMARKS.md: the suite's tiny runs write to a temporary file, so they never touch the measured figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BENCHMARKS_MD", "MD_ENV", "Figure", "bench_args", "machine_description", "repeat", "timed", "write_section"]

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
MD_ENV = "TGDP_BENCH_MD"


def bench_args(
    argv: list[str] | None, doc: str | None, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    """Parse a benchmark's options plus the common ones: `--tiny` (the smoke scale the suite runs) and `--md PATH`
    (where its section goes; exported as TGDP_BENCH_MD so `write_section` and child processes follow it)."""
    p = parser or argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="smallest counts: checks the script runs (seconds)")
    p.add_argument("--md", type=Path, default=None, help=f"write the section here (default {BENCHMARKS_MD.name})")
    args = p.parse_args(argv if argv is not None else [])
    if args.md is not None:
        os.environ[MD_ENV] = str(args.md)
    return args


@dataclass
class Figure:
    """One measured quantity over repeated runs."""

    name: str
    values: Sequence[float]
    unit: str = ""
    target: str = ""  # the target, stated beside the measurement (never asserted in tests)
    extra: dict[str, str] = field(default_factory=dict)

    def row(self) -> str:
        v = sorted(self.values)
        med = statistics.median(v)
        return f"| {self.name} | {_fmt(v[0])} | {_fmt(med)} | {_fmt(v[-1])} | {self.unit} | {len(v)} | {self.target} |"


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def repeat(fn: Callable[[], float], n: int = 3) -> list[float]:
    """Call a measurement `n` times and return the values it reported."""
    return [float(fn()) for _ in range(n)]


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 1024**2:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    try:
        import torch

        tv = f", torch {torch.__version__}"
        if torch.cuda.is_available():
            tv += f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        tv = ""
    try:
        ff = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
        ff = ", " + " ".join(ff.split()[:3])
    except OSError:
        ff = ""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {usable} usable cores{mem}, Python {platform.python_version()}{tv}{ff}"


def write_section(name: str, figures: Sequence[Figure], notes: str = "", path: Path | None = None) -> str:
    """Print the figures and replace (or append) the `name` section of BENCHMARKS.md (or of `path`, or of
    $TGDP_BENCH_MD); returns the section text."""
    path = Path(path or os.environ.get(MD_ENV) or BENCHMARKS_MD)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"<!-- bench:{name} -->",
        f"### {name}",
        "",
        f"Measured {stamp} on: {machine_description()}",
        "",
        "| figure | min | median | max | unit | runs | target |",
        "|---|---|---|---|---|---|---|",
        *(f.row() for f in figures),
    ]
    if notes:
        lines += ["", notes.strip()]
    lines += [f"<!-- /bench:{name} -->"]
    section = "\n".join(lines)
    print(section)
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")
    return section


_HEADER = """# Benchmarks

Every figure here is written by a script in `benchmarks/` (`make bench` runs them all) and is a measurement, not a
claim: min / median / max over repeated runs on the machine named in each section. Targets from the issues are
stated beside the figures; they are never asserted by unit tests.
"""
