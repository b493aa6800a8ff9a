"""`status` and `export` count with one function: they agree on every count, with or without the raw media on disk,
and a clip whose media were deleted after `shard` stays sharded (docs/STORE.md, "Clip states")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.fixtures import make_root
from tgdp.pipeline import ledger
from tgdp.pipeline.cli import app
from tgdp.pipeline.export import run_export
from tgdp.pipeline.fetch import FetchConfig, plan_fetch
from tgdp.pipeline.layout import clip_id_for
from tgdp.pipeline.shard import ShardConfig, run_shard
from tgdp.pipeline.status import format_funnel, funnel
from tgdp.pipeline.validate import run_validate

runner = CliRunner()
SOURCES = [("a1", "as_bal_train", 440), ("a2", "as_unbal_train", 660), ("a3", "vgg_train", 880), ("e1", "as_eval", 550)]


def _both(root: Path, out: Path) -> tuple[dict, dict]:
    """(status --json, export's funnel.json) through the CLI."""
    st = runner.invoke(app, ["status", str(root), "--json"])
    assert st.exit_code == 0, st.output
    ex = runner.invoke(app, ["export", str(root), "--out", str(out)])
    assert ex.exit_code == 0, ex.output
    return json.loads(st.stdout), json.loads((out / "funnel.json").read_text())


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory, make_clip) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("agree")
    root, media = tmp / "root", tmp / "media"
    rows = [
        {"ytid": y, "split": split, "media": make_clip(media / f"{y}.mp4", size="96x64", freq=freq)}
        for y, split, freq in SOURCES
    ]
    (media / "bad.mp4").write_bytes(b"not a video")
    rows.append({"ytid": "bad", "media": media / "bad.mp4"})
    make_root(root, rows, section_start_s=0.0)  # 4 valid clips + 1 unreadable, fetched
    run_validate(root, backend="serial")
    run_shard(root, tmp / "store", ShardConfig(shard_bytes=300_000, batch_rows=1, window_clips=2), backend="serial")
    return root, tmp


def test_status_and_export_agree_before_and_after_the_media_are_deleted(sharded, tmp_path: Path) -> None:
    root, tmp = tmp_path / "root", tmp_path
    shutil.copytree(sharded[0], root)
    status, exported = _both(root, tmp / "export1")
    assert {k: exported[k] for k in status} == status
    assert status["check"] and status["source"] == 5
    assert status["validate"] == {
        "valid": 4,
        "dropped": 1,
        "dropped_by_reason": {"unreadable": 1},
        "not_validated": 0,
    }
    assert status["shard"] == {"sharded": 4, "not_sharded": 0, "failed_by_reason": {}, "raw_missing": 0}
    assert "shard: sharded 4, not sharded 0" in format_funnel(status)
    manifest1 = pq.read_table(tmp / "export1" / "manifest.parquet")
    assert manifest1.num_rows == 4

    shutil.rmtree(root / "raw")  # the user frees the disk once the store is built
    status2, exported2 = _both(root, tmp / "export2")
    assert status2 == status and {k: exported2[k] for k in status2} == status2
    assert pq.read_table(tmp / "export2" / "manifest.parquet").equals(manifest1)
    assert (tmp / "export2" / "clip_ids.txt").read_text() == (tmp / "export1" / "clip_ids.txt").read_text()
    # nothing to download again: sharded and dropped clips need no media
    assert plan_fetch(root, FetchConfig()).num_rows == 0

    # A re-download (new bytes) whose file is gone again: no verdict on it yet, so it needs its file: file_missing.
    cid = clip_id_for("audioset", "a1", 0.0)
    last = ledger.latest(root, "fetch")[cid]
    ledger.append_events(root, "fetch", [{**last, "sha256": "0" * 64, "attempted_at": None, "seq": None}])
    status3, exported3 = _both(root, tmp / "export3")
    assert {k: exported3[k] for k in status3} == status3 and status3["check"]
    assert status3["fetch"]["pending_by_reason"] == {"file_missing": 1}
    assert (status3["validate"]["valid"], status3["shard"]["sharded"]) == (3, 3)
    assert plan_fetch(root, FetchConfig()).column("clip_id").to_pylist() == [cid]


def test_valid_but_unsharded_clip_without_media_is_counted_and_refetched(sharded, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(sharded[0], root)
    shutil.rmtree(root / "events" / "shard")
    shutil.rmtree(root / "raw", ignore_errors=True)
    f = funnel(root)
    # the verdicts stand (export lists the 4 valid clips), but shard has nothing to pack them from
    assert (f["validate"]["valid"], f["shard"]["not_sharded"], f["shard"]["raw_missing"]) == (4, 4, 4)
    assert run_export(root, tmp_path / "export").valid == 4
    assert plan_fetch(root, FetchConfig()).num_rows == 4


def test_shard_with_no_valid_clip_warns(sharded, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "manifest").mkdir(parents=True)
    shutil.copy(sharded[0] / "manifest" / "source.parquet", root / "manifest" / "source.parquet")
    out = runner.invoke(app, ["shard", str(root), "--store", str(tmp_path / "store"), "--backend", "serial"])
    assert out.exit_code == 0
    assert "warning: no valid clips to shard" in out.stderr
