"""Fixtures of the reliability tests: one tiny synthetic corpus and the clean (never failing) run over it.

Every test in this folder (the one home of the fault tests) is marked `reliability`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reliability.rel_support import corpus_root, make_tiny_corpus, run_chain, snapshot
from tgdp.pipeline.serve import MediaServer

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory, ffmpeg_bin: str) -> Path:
    return make_tiny_corpus(tmp_path_factory.mktemp("rel-corpus") / "corpus")


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> dict[str, Any]:
    """manifest → fetch → validate → shard over the corpus with a server that never fails."""
    base_dir = tmp_path_factory.mktemp("rel-clean")
    root, store = corpus_root(base_dir / "root", tiny_corpus), base_dir / "store"
    with MediaServer(tiny_corpus) as base:
        run_chain(root, store, base)
    return {"root": root, "store": store, "snapshot": snapshot(root, store)}
