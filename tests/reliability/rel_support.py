"""Helpers for the reliability tests: a tiny synthetic corpus, whole-chain runs and snapshots to compare them.

A snapshot is what "the same final manifest and store" means here: the fetched clip ids with their sha256, the latest
validate state per clip, and per store split the clip ids and the sha256 of every shard listed in index.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tgdp.pipeline import ledger
from tgdp.pipeline.features import FeatureParams
from tgdp.pipeline.fetch import FetchConfig, fetch
from tgdp.pipeline.manifest import ManifestConfig, build_manifest
from tgdp.pipeline.shard import ShardConfig, run_shard
from tgdp.pipeline.status import funnel
from tgdp.pipeline.synth import LABELS_FILE, SEGMENT_FILES, SynthConfig, generate
from tgdp.pipeline.validate import run_validate

__all__ = [
    "FEATURES",
    "SHARD",
    "TINY",
    "assert_funnel_sums",
    "copy_tree",
    "fetch_cfg",
    "corpus_root",
    "make_tiny_corpus",
    "run_chain",
    "snapshot",
]

# 64×64, 8 fps, a 2.5-s segment (20 frames ≥ the 16 the validator needs) starting 1 s into a 4-s file.
TINY = dict(
    sizes=[(64, 64)],
    fps=[8],
    sample_rates=[16000],
    segment_s=2.5,
    start_s=(1, 1),
    tail_s=(0.5, 0.5),
    difficulty=0.0,
    eval_fraction=0.2,
    webm_fraction=0.2,
    workers=2,
)
# Small frames and spectrograms keep shard cheap; 1 clip per shard so there are several shards to damage.
SHARD = ShardConfig(shard_bytes=30_000, batch_rows=1, window_clips=2)
FEATURES = FeatureParams(frame_size=64, num_mel_bins=64, target_length=256)  # `features.*` of the shard runs


def make_tiny_corpus(out: Path, num_clips: int = 10, fault_fraction: float = 0.8, seed: int = 3) -> Path:
    """A synth corpus holding every fault case plus a few valid clips (same config → same bytes)."""
    generate(SynthConfig(num_clips=num_clips, fault_fraction=fault_fraction, seed=seed, **TINY), out)
    return out


def corpus_root(root: Path, corpus: Path) -> Path:
    """ROOT with the source manifest built from the corpus's AudioSet-format CSVs."""
    csvs = [str(corpus / name) for name in SEGMENT_FILES.values()]
    build_manifest(root, ManifestConfig(dataset="audioset", csv=csvs, labels=str(corpus / LABELS_FILE)))
    return root


def fetch_cfg(base: str, **kw: Any) -> FetchConfig:
    opts: dict[str, Any] = dict(
        url_template=base + "/v/{ytid}", backend="serial", rate_per_hour=0, retries=0, socket_timeout=1, backoff_s=0
    )
    opts.update(kw)
    return FetchConfig(**opts)


def assert_funnel_sums(root: Path, max_attempts: int = 5) -> dict[str, Any]:
    """Every source clip is in exactly one bucket of each stage (the funnel's own check, recomputed here)."""
    f = funnel(root, max_attempts=max_attempts)
    fe = f["fetch"]
    assert fe["fetched"] + fe["gone"] + fe["pending_transient"] + fe["never_tried"] == f["source"], f
    assert (
        sum(fe["gone_by_reason"].values()) == fe["gone"]
        and sum(fe["pending_by_reason"].values()) == fe["pending_transient"]
    ), f
    if "validate" in f:
        v = f["validate"]
        assert v["valid"] + v["dropped"] + v["not_validated"] == fe["fetched"], f
        assert sum(v["dropped_by_reason"].values()) == v["dropped"], f
    assert f["orphan_events"] == 0 and f["check"], f
    return f


def run_chain(root: Path, store: Path, base: str, **fetch_kw: Any) -> None:
    """fetch (retrying transient failures at once) → validate → shard."""
    fetch(root, fetch_cfg(base, retry_now=True, **fetch_kw))
    run_validate(root, backend="serial")
    run_shard(root, store, SHARD, features=FEATURES, backend="serial")


def snapshot(root: Path, store: Path | None = None) -> dict[str, Any]:
    fetched = {c: e["sha256"] for c, e in ledger.latest(root, "fetch").items() if e["status"] == "ok"}
    validated = {
        c: (e["status"], e["reason"], bool(e.get("valid")), e.get("fetch_sha256"))
        for c, e in ledger.latest(root, "validate").items()
    }
    out: dict[str, Any] = {"fetched": fetched, "validate": validated}
    if store is not None:
        for split in ("train", "eval"):
            index_file = store / split / "index.json"
            if index_file.is_file():
                index = json.loads(index_file.read_text())
                out[split] = {
                    "clip_ids": [c for s in index["shards"] for c in _shard_ids(store / split / s["file"])],
                    "sha256": [s["sha256"] for s in index["shards"]],
                    "inputs_sha256": index["inputs_sha256"],
                }
    return out


def _shard_ids(path: Path) -> list[str]:
    import pyarrow as pa

    with pa.memory_map(str(path), "r") as src:
        return pa.ipc.open_stream(src).read_all().column("clip_id").to_pylist()


def copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest
