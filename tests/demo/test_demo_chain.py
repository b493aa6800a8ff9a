"""The `make demo` chain, shortened (a few clips, a few steps), through the real CLIs; then a rerun reuses it. Both
runs go through `benchmarks.bench_demo` (its `measure` and `write_figures`), so the demo benchmark cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.bench_demo import TINY, measure, write_figures
from benchmarks.fingerprint import digest


@pytest.mark.slow
def test_short_demo_chain_and_reuse(tmp_path: Path) -> None:
    cfg = TINY
    assert cfg.profile == "coupled" and not cfg.vision_probe  # the extra probe is left out to keep this test short
    before: dict[Path, int] = {}
    first_digest: dict = {}

    def check_first_run() -> None:
        text = (tmp_path / "report.md").read_text(encoding="utf-8")
        assert "## Funnel" in text and "source manifest | 16" in text
        for model in cfg.models:
            assert re.search(rf"\| {model} \| [0-9.]+ \|", text), f"no retrieval row for {model}"
        # the report reads itself: chance levels, the study's seed noise, a sentence naming the better model
        assert re.search(r"\| chance \(k/N\) \| [0-9.]+ \|", text) and "| seed SD (study) | 0.5 |" in text
        assert re.search(r"\| chance \| [0-9.]+ \|", text)
        assert (
            re.search(r"(did better on \d of 6|no model did better on most) recall figures", text)
            and "Held-out InfoNCE (lower is better)" in text
        )
        assert "cannot show: which method is better" in text
        # clean headings: nothing above H2 after the title; the funnel is written after shard
        assert re.findall(r"^# .*", text, flags=re.M) == ["# tgdp demo report"]
        assert re.search(r"\| sharded \(of valid\) \| [1-9]", text), "the funnel was written before shard"
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
        before.update({p: p.stat().st_mtime_ns for p in outputs})
        first_digest.update(digest(tmp_path))

    fresh, again = measure(tmp_path, cfg, between=check_first_run)
    assert before and {p: p.stat().st_mtime_ns for p in before} == before, "a rerun must reuse finished stages"
    # the refactoring fingerprint (benchmarks/fingerprint.py) sees every output and no change after the rerun
    assert set(first_digest["runs"]) == set(cfg.models) and first_digest["runs"]["tiny_tgdp"]["weights"]["teacher"]
    assert len(first_digest["embeddings"]) == 2 * len(cfg.models) and "train/index.json" in first_digest["store"]
    assert digest(tmp_path) == first_digest
    section = write_figures(fresh, again, cfg, path=tmp_path / "BENCHMARKS.md")
    assert "<!-- bench:demo -->" in (tmp_path / "BENCHMARKS.md").read_text() and "fresh run: total" in section
