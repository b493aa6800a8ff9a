"""The `make demo` chain, shortened (a few clips, a few steps), through the real CLIs; then a rerun reuses it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tgdp.experiments.demo import DemoConfig, run_demo


@pytest.mark.slow
def test_short_demo_chain_and_reuse(tmp_path: Path) -> None:
    cfg = DemoConfig(num_clips=16, train_steps=4, batch_size=4, backend="serial", probe_epochs=2)
    report = run_demo(tmp_path, cfg)
    text = report.read_text(encoding="utf-8")
    assert "## Funnel" in text and "source manifest | 16" in text
    for model in cfg.models:
        assert re.search(rf"\| {model} \| [0-9.]+ \|", text), f"no retrieval row for {model}"
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000
    assert (tmp_path / "recall_at_k.png").stat().st_size > 1000
    # every clip of the corpus is accounted for in the fault table
    rows = re.findall(r"^\| [a-z_]+ \| [a-z_]+ \| [^|]+ \| (\d+) \|$", text, flags=re.M)
    assert sum(int(n) for n in rows) == 16

    outputs = [
        *(tmp_path / "train").glob("*/checkpoints/*.pt"),
        *(tmp_path / "eval").glob("*/emb_*.arrow"),
        tmp_path / "store" / "train" / "index.json",
    ]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    run_demo(tmp_path, cfg)
    assert {p: p.stat().st_mtime_ns for p in outputs} == before, "a rerun must reuse finished stages"
