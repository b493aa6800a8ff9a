"""The store format's one owner (`tgdp.store`): StoreIndex round trip and format check, StoreWriter rows
read back by Store, and `core.atomic.atomic_path`/`atomic_write` (the package's one tmp-then-rename)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tgdp.core.atomic import atomic_path, atomic_write
from tgdp.pipeline.cli import app
from tgdp.pipeline.features import FeatureParams
from tgdp.pipeline.shard import ShardConfig, store_meta
from tgdp.store import (
    STORE_FORMAT,
    ShardEntry,
    Store,
    StoreFormatError,
    StoreIndex,
)
from tgdp.store.format import store_features
from tgdp.store.verify import verify_store
from tgdp.store.writer import StoreWriter

CFG = ShardConfig(batch_rows=2)
FEATURES = FeatureParams(num_frames=2, frame_size=32, target_length=64, num_mel_bins=8)


def _index(**changes) -> StoreIndex:
    shard = ShardEntry("data-00000-of-00001.arrow", 2, 1234, "ab" * 32, "a:x:0", "a:y:0")
    fields = dict(split="train", num_rows=2, shards=[shard], meta={"fbank": {"mean": -5.081}}, config={"seed": 1})
    return StoreIndex(**{**fields, "inputs_sha256": "cd" * 32, **changes})


def test_index_round_trips_and_writes_the_documented_keys():
    index = _index()
    text = index.to_json()
    assert StoreIndex.from_json(text) == index
    data = json.loads(text)
    assert data["format"] == STORE_FORMAT == "tgdp-store/1"
    assert sorted(data) == ["assignment", "config", "format", "inputs_sha256", "meta", "num_rows", "shards", "split"]
    assert sorted(data["shards"][0]) == ["bytes", "file", "first_clip_id", "last_clip_id", "rows", "sha256"]
    assert text == json.dumps(data, indent=1, sort_keys=True) + "\n"  # the bytes shard has always written


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="tgdp-store/9"), "store format 'tgdp-store/9' is not supported"),
        (lambda d: d.pop("format"), "store format None is not supported"),
        (lambda d: d.pop("inputs_sha256"), "missing ['inputs_sha256']"),
        (lambda d: d.update(extra=1), "unknown ['extra']"),
        (
            lambda d: d["shards"][0].update(rows="2"),
            "shards[0]: malformed index (missing [], unknown [], mistyped ['rows'])",
        ),
    ],
)
def test_an_unknown_format_or_a_malformed_index_is_refused(tmp_path: Path, edit, message: str):
    split = tmp_path / "train"
    split.mkdir()
    data = _index().to_dict()
    edit(data)
    (split / "index.json").write_text(json.dumps(data))
    with pytest.raises(StoreFormatError) as err:
        Store.open(tmp_path, "train")
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(split / "index.json")) and message in text, text
    if "format" in message:
        assert f"this tgdp reads {STORE_FORMAT!r}" in text
    report = verify_store(tmp_path)
    assert not report.ok and report.problems == [text]
    out = CliRunner().invoke(app, ["verify", str(tmp_path)])
    assert out.exit_code == 1 and f"FAIL {text}" in out.output, out.output


def _rows(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, "JPEG")
    rows = []
    for i in range(n):
        fbank = rng.standard_normal((64, 8)).astype(np.float16)
        rows.append(
            dict(clip_id=f"d:{i}:0", split="train", labels=[str(i)], frames_jpeg=[buf.getvalue()] * 2, fbank=fbank)
            | dict(frame_pts_s=[0.25, 0.75], fbank_frames=64, fetch_sha256=f"{i:064x}")
        )
    return rows


def test_writer_rows_read_back_through_the_index(tmp_path: Path):
    """StoreWriter → StoreIndex → Store: what the writer streams is what the reader maps, and verify passes."""
    features = store_features(FEATURES)
    schema = features.arrow_schema
    staging = tmp_path / "train"
    staging.mkdir()
    rows, digests = _rows(5), [f"{i}" * 8 for i in range(5)]
    payload = rows[0]["fbank"].nbytes + sum(len(b) for b in rows[0]["frames_jpeg"])
    kw = dict(fbank_shape=(64, 8), shard_bytes=payload * 3 // 2, batch_rows=CFG.batch_rows)
    with StoreWriter(staging, schema, **kw) as writer:
        for row, digest in zip(rows[:3], digests[:3], strict=True):
            writer.add(row, digest)
    assert [s["rows"] for s in writer.shards] == [2, 1]  # a shard closes once 1.5 rows of payload are in
    with pytest.raises(KeyboardInterrupt), StoreWriter(staging, schema, **kw) as again:
        assert again.resume([r["clip_id"] for r in rows], digests) == 3  # both staged shards adopted
        again.add(rows[3], digests[3])
        raise KeyboardInterrupt  # the open shard is removed, the adopted ones stay
    assert sorted(p.name for p in staging.iterdir()) == [
        f"shard-0000{k}.{e}" for k in (0, 1) for e in ("arrow", "json")
    ]
    with StoreWriter(staging, schema, **kw) as again:
        assert again.resume([r["clip_id"] for r in rows[:2]] + ["changed"], digests) == 2  # second shard is stale
        for row, digest in zip(rows[2:], digests[2:], strict=True):
            again.add(row, digest)
    entries = [
        ShardEntry(s["file"], s["rows"], s["bytes"], s["sha256"], s["clip_ids"][0], s["clip_ids"][-1])
        for s in again.shards
    ]
    index = StoreIndex("train", 5, entries, store_meta(FEATURES), CFG.model_dump(), "ef" * 32)
    atomic_write(staging / "index.json", index.to_json())
    store = Store.open(staging)
    assert store.index == index and len(store) == 5 and store.clip_ids == [r["clip_id"] for r in rows]
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(store.fbank(i), row["fbank"])
        assert store.frame_jpeg(i, 1) == row["frames_jpeg"][1] and store.labels(i) == row["labels"]
    report = verify_store(staging)
    assert report.ok and report.splits == {"train": 5}, report.problems


def test_atomic_path_replaces_only_on_success_and_leaves_no_temp_file(tmp_path: Path, monkeypatch):
    target = tmp_path / "data.json"
    target.write_text("old")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".tmp-") and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # readers see the old file until the rename
    assert target.read_text() == "new" and synced == [str(tmp)]  # fsynced before the rename
    with pytest.raises(RuntimeError, match="writer failed"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]
    assert atomic_write(tmp_path / "b.bin", b"\x00\x01") == tmp_path / "b.bin"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01" and atomic_write(target, "é").read_bytes() == "é".encode()
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "no-such-dir" / "x", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "data.json"]
