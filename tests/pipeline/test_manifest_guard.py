"""The ROOT's manifest is not silently emptied or shrunk, and repeated labels on a line are kept once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tgdp.pipeline import ledger
from tgdp.pipeline.layout import manifest_path
from tgdp.pipeline.manifest import ManifestConfig, ManifestError, build_manifest

HEADER = "# num_ytids={n}, num_segs={n}\n# YTID, start_seconds, end_seconds, positive_labels\n"


def _csv(path: Path, ytids: list[str], labels: str = "/m/a") -> Path:
    lines = [f'{y}, 0.000, 10.000, "{labels}"' for y in ytids]
    path.write_text(HEADER.format(n=len(lines)) + "".join(line + "\n" for line in lines))
    return path


def _cfg(path: Path) -> ManifestConfig:
    return ManifestConfig(dataset="audioset", csv=[f"{path}:as_eval"])


def _ids(n: int) -> list[str]:
    return [f"ytid{i:07d}" for i in range(n)]


def test_an_input_without_data_rows_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build_manifest(root, _cfg(_csv(tmp_path / "full.csv", _ids(3))))
    before = manifest_path(root).read_bytes()
    empty = tmp_path / "empty.csv"
    empty.write_text(HEADER.format(n=0))
    with pytest.raises(ManifestError, match="empty.csv: no data rows"):
        build_manifest(root, _cfg(empty))
    assert manifest_path(root).read_bytes() == before
    res = subprocess.run(
        [sys.executable, "-m", "tgdp.pipeline.cli", "manifest", str(root), "--dataset", "audioset"]
        + ["--csv", f"{empty}:as_eval"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "no data rows" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert manifest_path(root).read_bytes() == before


def test_dropping_clips_that_have_events_needs_force(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build_manifest(root, _cfg(_csv(tmp_path / "full.csv", _ids(5))))
    ids = pq.read_table(manifest_path(root)).column("clip_id").to_pylist()
    ledger.append_events(root, "fetch", [{"clip_id": c, "status": "ok", "reason": None, "transient": False}
                                         for c in ids[:3]])  # fmt: skip
    # dropping clips without events is fine; a grown manifest too
    build_manifest(root, _cfg(_csv(tmp_path / "four.csv", _ids(4))))
    build_manifest(root, _cfg(_csv(tmp_path / "six.csv", _ids(6))))
    shrunk = _cfg(_csv(tmp_path / "one.csv", _ids(1)))
    with pytest.raises(ManifestError, match=r"drops 2 clip\(s\) .* already have events.*--force"):
        build_manifest(root, shrunk)
    assert pq.read_metadata(manifest_path(root)).num_rows == 6
    res = build_manifest(root, shrunk, force=True)
    assert res.rows == 1 and any("drops 2 clip(s)" in w for w in res.warnings)


def test_repeated_labels_are_kept_once_with_a_warning(tmp_path: Path) -> None:
    path = _csv(tmp_path / "dup.csv", _ids(2), labels=",".join(["/m/b", "/m/a"] * 5000 + ["/m/c"]))
    with path.open("a") as fh:
        fh.write('zzzzzzzzzzz, 0.000, 10.000, "/m/a,/m/b"\n')
    res = build_manifest(tmp_path / "root", _cfg(path))
    labels = {r["video_id"]: r["labels"] for r in pq.read_table(res.manifest).to_pylist()}
    assert labels == {"ytid0000000": ["/m/b", "/m/a", "/m/c"], "ytid0000001": ["/m/b", "/m/a", "/m/c"],
                      "zzzzzzzzzzz": ["/m/a", "/m/b"]}  # fmt: skip
    assert [w for w in res.warnings if "more than once" in w] == [
        "dup.csv: 2 row(s) listed a label more than once (19996 repeats, first at line 3); each label is kept once"
    ]
