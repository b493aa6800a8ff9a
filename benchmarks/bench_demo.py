"""`make demo` end to end, timed per stage: a fresh run of the default demo in a temporary directory, then a
second run over the same directory (every stage reused). The venv install of a fresh machine is not included."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from benchmarks.harness import Figure, write_section
from tgdp.experiments.demo import DemoConfig, run_demo


def main() -> None:
    cfg = DemoConfig()
    with tempfile.TemporaryDirectory(prefix="tgdp-bench-demo-") as tmp:
        out = Path(tmp) / "demo"
        run_demo(out, cfg)
        fresh = json.loads((out / "timings.json").read_text())
        run_demo(out, cfg)
        again = json.loads((out / "timings.json").read_text())
    figures = [Figure(f"fresh run: {k}", [v], unit="s") for k, v in fresh.items() if k != "total"]
    figures += [
        Figure("fresh run: total", [fresh["total"]], unit="s", target="< 15 min (900 s) on 2 cores"),
        Figure("second run (every stage reused): total", [again["total"]], unit="s"),
    ]
    write_section(
        "demo",
        figures,
        notes=(
            f"Default demo: {cfg.num_clips} synthetic clips, fetch through yt-dlp with {cfg.sessions} Ray sessions, "
            f"tiny TG-DP and tiny CAV-MAE Sync {cfg.train_steps} steps × batch {cfg.batch_size} each, evaluation "
            "on the held-out split. One run (it takes minutes); the venv install of a fresh machine is not included."
        ),
    )


if __name__ == "__main__":
    main()
