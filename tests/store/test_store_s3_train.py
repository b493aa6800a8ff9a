"""Done-when of the remote store: a store sharded to s3:// on the test server trains with tgdp-train and evaluates
with tgdp-eval, with the same losses as the local copy in block-shuffle mode and the same seed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fixtures import make_store
from tests.train.train_support import tiny_config
from tgdp.pipeline.features import FeatureParams
from tgdp.pipeline.shard import ShardConfig, run_shard
from tgdp.store.fs import location
from tgdp.store.verify import verify_store
from tgdp.train.loop import fit

SHARD = {"shard_bytes": 100_000, "keep_feature_cache": True}


@pytest.mark.slow
def test_shard_to_s3_then_train_and_embed_like_the_local_copy(s3: dict, tmp_path: Path, ffmpeg_bin: str) -> None:
    local = make_store(tmp_path / "m", 6, duration=3.0, prefix="s3clip", ffmpeg=ffmpeg_bin, **SHARD)
    root = tmp_path / "m" / "root"
    cfg, features = ShardConfig(**SHARD), FeatureParams(frame_size=96, num_mel_bins=64, target_length=256)
    summary = run_shard(root, s3["uri"], cfg, features=features, backend="serial")
    assert summary.rows == {"train": 6} and summary.shards["train"] >= 3
    split = location(s3["uri"]).child("train")
    for shard in sorted((local / "train").glob("data-*.arrow")):  # staged locally, uploaded byte for byte
        assert (
            hashlib.sha256(split.read_bytes(shard.name)).hexdigest() == hashlib.sha256(shard.read_bytes()).hexdigest()
        )
    assert not (root / "store-staging").exists() or not any((root / "store-staging").rglob("*.arrow"))
    assert verify_store(s3["uri"]).ok
    again = run_shard(root, s3["uri"], cfg, features=features, backend="serial")
    assert again.up_to_date == ["train"]

    overrides = ("data.shuffle_mode=block", "data.block_shards=2", "train.batch_size=2", "train.steps=4")
    runs = {}
    for name, store in (("local", local), ("s3", s3["uri"])):
        cfg_run = tiny_config(*overrides, f"store.cache_dir={tmp_path / 'cache'}")
        runs[name] = fit(cfg_run, store, tmp_path / f"run-{name}")
    losses = {k: [h["loss"] for h in r.history] for k, r in runs.items()}
    assert len(losses["s3"]) == 4 and losses["s3"] == losses["local"]

    from tgdp.eval.cli import app as eval_app

    out = tmp_path / "emb.arrow"
    from tgdp.eval.table import read_embeddings

    # A split folder without --split: the table records the split actually read (train), not a default.
    args = ["embed", "--checkpoint", runs["s3"].checkpoint, "--store", s3["uri"] + "/train"]
    result = CliRunner().invoke(eval_app, [*args, "--out", str(out), "--device", "cpu", "--set", "num_workers=0"])
    assert result.exit_code == 0, result.output
    assert "6 clips" in result.output and read_embeddings(out).meta["split"] == "train"
    wrong = CliRunner().invoke(eval_app, [*args, "--split", "eval", "--out", str(tmp_path / "e2.arrow")])
    assert wrong.exit_code == 2 and "holds split 'train', not 'eval'" in wrong.output, wrong.output
