"""export's five files are one commit: a failure or a kill between them leaves the previous export whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.fixtures import make_root
from tgdp.pipeline import export as export_mod
from tgdp.pipeline import ledger
from tgdp.pipeline.export import EXPORT_FILES, run_export

YTIDS = ["a1", "a2", "a3"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    media = tmp_path / "m.mp4"
    media.write_bytes(b"not decoded: the clips are recorded valid")
    rows = [{"ytid": y, "start_s": 0.0, "end_s": 3.0, "media": media} for y in YTIDS]
    return make_root(tmp_path / "root", rows, section_start_s=0.0, validated=True)


def _drop_one(root: Path) -> None:
    last = ledger.latest(root, "validate")["audioset:a1:0"]
    ledger.append_events(root, "validate", [{**last, "status": "failed", "reason": "too_short", "valid": False}])


def _read(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in EXPORT_FILES}


def _consistent(out: Path) -> int:
    """The five files describe one export: the same valid count everywhere; returns it."""
    ids = (out / "clip_ids.txt").read_text().splitlines()
    rows = pq.read_table(out / "manifest.parquet").column("clip_id").to_pylist()
    valid = json.loads((out / "funnel.json").read_text())["validate"]["valid"]
    assert ids == rows and len(ids) == valid and f"| valid | {valid:,} |" in (out / "funnel.md").read_text()
    return valid


def _temps(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".tmp-"))


def test_a_failure_between_the_files_leaves_the_previous_export(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "export"
    run_export(root, out)
    before = _read(out)
    assert _consistent(out) == 3
    _drop_one(root)

    def fail(*args: object, **kw: object) -> str:  # manifest.parquet, clip_ids.txt and funnel.json are written
        raise RuntimeError("injected failure before funnel.md")

    monkeypatch.setattr(export_mod, "funnel_markdown", fail)
    with pytest.raises(RuntimeError, match="injected"):
        run_export(root, out)
    monkeypatch.undo()
    assert _read(out) == before and _consistent(out) == 3 and _temps(out) == []
    run_export(root, out)
    assert _consistent(out) == 2


KILL = """
import os, sys
from tgdp.pipeline import export
export.funnel_markdown = lambda *a, **k: os._exit(9)  # killed between funnel.json and funnel.md
export.run_export(sys.argv[1], sys.argv[2])
"""


def test_a_killed_export_leaves_the_previous_one_and_its_debris_is_removed(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    run_export(root, out)
    before = _read(out)
    _drop_one(root)
    res = subprocess.run([sys.executable, "-c", KILL, str(root), str(out)], capture_output=True, timeout=120)
    assert res.returncode == 9, res.stderr
    assert _read(out) == before and _consistent(out) == 3
    debris = _temps(out)
    assert len(debris) == 1 and (out / debris[0] / "manifest.parquet").exists()  # the dead writer's half version
    live = out / f".tmp-{os.getpid()}-other.txt"
    live.write_text("a live writer's file")  # not stale: kept
    run_export(root, out)
    assert _consistent(out) == 2
    assert not (out / debris[0]).exists() and live.exists()
    # the previous version stays (a reader that resolved `current` just before may still read it), older ones go
    run_export(root, out)
    versions = sorted(p.name for p in out.iterdir() if p.name.startswith("v-"))
    assert versions == ["v-000002", "v-000003"] and os.readlink(out / "current") == "v-000003"


def test_an_export_written_before_versions_is_replaced_whole(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    for name in EXPORT_FILES:
        (out / name).write_text("old export")
    run_export(root, out)
    assert _consistent(out) == 3
    assert all(os.readlink(out / name) == f"current/{name}" for name in EXPORT_FILES)
