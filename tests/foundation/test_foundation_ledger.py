"""Event log: validation, ordering, latest state, compaction, and safe paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from tgdp.pipeline import ledger
from tgdp.pipeline.layout import clip_id_for, raw_path_for, safe_name, within_root


def ok(cid: str, **kw: object) -> dict:
    return {"clip_id": cid, "status": "ok", "reason": None, "transient": False, **kw}


def test_append_read_latest(tmp_path: Path) -> None:
    ledger.append_events(
        tmp_path, "fetch", [ok("a"), {"clip_id": "b", "status": "failed", "reason": "http_429", "transient": True}]
    )
    ledger.append_events(tmp_path, "fetch", [ok("b", file_bytes=10)])
    state = ledger.latest(tmp_path, "fetch")
    assert set(state) == {"a", "b"}
    assert state["b"]["status"] == "ok" and state["b"]["file_bytes"] == 10
    assert ledger.read_events(tmp_path, "fetch").num_rows == 3


def test_event_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks"):
        ledger.append_events(tmp_path, "fetch", [{"clip_id": "a", "status": "ok"}])
    with pytest.raises(ValueError, match="no reason"):
        ledger.append_events(
            tmp_path, "fetch", [{"clip_id": "a", "status": "failed", "reason": None, "transient": False}]
        )
    with pytest.raises(ValueError, match="status"):
        ledger.append_events(tmp_path, "fetch", [{"clip_id": "a", "status": "gone", "reason": "x", "transient": False}])
    with pytest.raises(ValueError, match="stage"):
        ledger.append_events(tmp_path, "../x", [ok("a")])


def test_writer_flush_and_compact(tmp_path: Path) -> None:
    with ledger.EventWriter(tmp_path, "validate", flush_every=2) as w:
        for i in range(5):
            w.add(ok(f"c{i}", n=i))
    files = list((tmp_path / "events" / "validate").glob("*.parquet"))
    assert len(files) == 3
    before = ledger.read_events(tmp_path, "validate").column("clip_id").to_pylist()
    ledger.compact(tmp_path, "validate")
    assert len(list((tmp_path / "events" / "validate").glob("*.parquet"))) == 1
    assert ledger.read_events(tmp_path, "validate").column("clip_id").to_pylist() == before
    # later flushes still sort after the compacted file
    ledger.append_events(tmp_path, "validate", [ok("c0", n=99)])
    assert ledger.latest(tmp_path, "validate")["c0"]["n"] == 99


def test_columns_are_the_union_of_all_rows(tmp_path: Path) -> None:
    ledger.append_events(tmp_path, "fetch", [ok("a"), ok("b", sha256="x", file_bytes=3)])
    state = ledger.latest(tmp_path, "fetch")
    assert state["b"]["sha256"] == "x" and state["a"]["sha256"] is None


def test_empty_stage(tmp_path: Path) -> None:
    assert ledger.read_events(tmp_path, "fetch").num_rows == 0
    assert ledger.latest(tmp_path, "fetch") == {}


@pytest.mark.parametrize("cid", ["--exec=rm -rf /", "../../etc/passwd", "$(id)", "a/b\\c", "-abc", "x" * 500])
def test_safe_names_stay_inside_root(tmp_path: Path, cid: str) -> None:
    name = safe_name(cid)
    assert not name.startswith("-") and "/" not in name and ".." not in name and len(name) < 120
    path = raw_path_for(tmp_path, cid, "../mp4")
    assert within_root(tmp_path, path)
    assert safe_name(cid) != safe_name(cid + "_")


def test_clip_id_for() -> None:
    assert clip_id_for("audioset", "-abc", 30.0) == "audioset:-abc:30000"
    assert clip_id_for("vggsound", "x", 0.5) == "vggsound:x:500"
