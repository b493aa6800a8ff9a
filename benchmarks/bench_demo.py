"""`make demo` end to end, timed per stage: a fresh run of the default demo in a temporary directory, then a
second run over the same directory (every stage reused). The venv install of a fresh machine is not included.

`--tiny` runs the shortened chain of tests/demo/test_demo_chain.py (which itself goes through `measure` and
`write_figures`, so the suite covers this script without running the demo twice more)."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import Figure, bench_args, write_section
from tgdp.experiments.demo import DemoConfig, run_demo

__all__ = ["TINY", "main", "measure", "write_figures"]

# The shortened chain: a few clips, a few steps, no Ray.
TINY = DemoConfig(num_clips=16, train_steps=4, batch_size=4, backend="serial", probe_epochs=2, vision_probe=False)


def measure(out: Path, cfg: DemoConfig, between: Callable[[], None] | None = None) -> tuple[dict, dict]:
    """Per-stage seconds of a fresh demo run into `out` and of a second run over it; `between` runs in between."""
    run_demo(out, cfg)
    fresh = json.loads((out / "timings.json").read_text())
    if between is not None:
        between()
    run_demo(out, cfg)
    return fresh, json.loads((out / "timings.json").read_text())


def write_figures(fresh: dict, again: dict, cfg: DemoConfig, path: Path | None = None) -> str:
    """The `demo` section of BENCHMARKS.md (or of `path`) from the two runs' timings."""
    figures = [Figure(f"fresh run: {k}", [v], unit="s") for k, v in fresh.items() if k != "total"]
    figures += [
        Figure("fresh run: total", [fresh["total"]], unit="s", target="< 15 min (900 s) on 2 cores"),
        Figure("second run (every stage reused): total", [again["total"]], unit="s"),
    ]
    return write_section(
        "demo",
        figures,
        notes=(
            f"Default demo: {cfg.num_clips} synthetic clips (`{cfg.profile}` profile), fetch through yt-dlp with "
            f"{cfg.sessions} Ray sessions, tiny TG-DP and tiny CAV-MAE Sync {cfg.train_steps} steps × batch "
            f"{cfg.batch_size} each, evaluation on the held-out split. One run (it takes minutes); the venv install "
            "of a fresh machine is not included."
        ),
        path=path,
    )


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__)
    cfg = TINY if args.tiny else DemoConfig()
    with tempfile.TemporaryDirectory(prefix="tgdp-bench-demo-") as tmp:
        fresh, again = measure(Path(tmp) / "demo", cfg)
    write_figures(fresh, again, cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
