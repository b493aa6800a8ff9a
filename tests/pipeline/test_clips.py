"""Find any clip: `tgdp-data clips` lists each clip's state, reason, detail and files; export writes the clips it
leaves out; the event log reads with plain pyarrow (one schema per stage), as docs/STORE.md shows."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.fixtures import make_root
from tgdp.pipeline import ledger
from tgdp.pipeline.cli import app
from tgdp.pipeline.layout import clip_id_for
from tgdp.store.fs import file_sha256

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """never (never tried), gone (fetch: private), mute (validate: no_audio_stream), good (valid), eval split."""
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"media bytes")
    sha = file_sha256(media)
    rows = [
        {"ytid": "nevernevern"},
        {"ytid": "gonegonegon"},
        {"ytid": "mutemutemut", "media": media},
        {"ytid": "goodgoodgoo", "media": media, "split": "as_eval"},
    ]
    ids = {r["ytid"][:4]: clip_id_for("audioset", r["ytid"], 0.0) for r in rows}
    fetch = [{"clip_id": ids["gone"], "status": "failed", "reason": "private", "transient": False,
              "reason_detail": "Private video. Sign in if you've been granted access"}]  # fmt: skip
    base = {"transient": False, "fetch_sha256": sha, "valid_rule": "v1"}
    validate = [  # two flushes: the first has no reason at all (a `null` column before the types were fixed)
        [{"clip_id": ids["good"], "status": "ok", "reason": None, "valid": True, **base}],
        [{"clip_id": ids["mute"], "status": "failed", "reason": "no_audio_stream", "valid": False,
          "reason_detail": "streams: video h264", **base}],
    ]  # fmt: skip
    out = make_root(tmp_path / "root", rows, events={"fetch": fetch})
    for flush in validate:
        ledger.append_events(out, "validate", flush)
    return out


def test_event_files_of_a_stage_share_one_schema(root: Path) -> None:
    files = sorted((root / "events" / "validate").glob("*.parquet"))
    assert len(files) == 2
    schemas = [pq.read_schema(f).remove_metadata() for f in files]
    assert schemas[0].field("reason").type == pa.string() and schemas[0].equals(schemas[1])
    assert pa.concat_tables([pq.read_table(f) for f in files]).num_rows == 2


def test_an_old_null_typed_file_is_read_with_a_cast(tmp_path: Path) -> None:
    directory = tmp_path / "events" / "validate"
    directory.mkdir(parents=True)
    pq.write_table(pa.table({"clip_id": ["a"], "status": ["ok"], "reason": pa.nulls(1)}), directory / "1.parquet")
    pq.write_table(pa.table({"clip_id": ["b"], "status": ["failed"], "reason": ["x"]}), directory / "2.parquet")
    events = ledger.read_events(tmp_path, "validate")
    assert events.schema.field("reason").type == pa.string() and events.column("reason").to_pylist() == [None, "x"]


def test_clips_lists_every_clip_with_state_reason_and_detail(root: Path) -> None:
    result = runner.invoke(app, ["clips", str(root), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    by_id = {c["clip_id"].split(":")[1][:4]: c for c in out["clips"]}
    assert out["total"] == out["count"] == 4
    assert {k: (c["state"], c["stage"], c["reason"]) for k, c in by_id.items()} == {
        "neve": ("never_tried", None, None),
        "gone": ("gone", "fetch", "private"),
        "mute": ("dropped", "validate", "no_audio_stream"),
        "good": ("valid", "validate", None),
    }
    assert by_id["mute"]["detail"] == "streams: video h264" and by_id["gone"]["detail"].startswith("Private video")
    assert Path(by_id["mute"]["raw_path"]).is_file() and Path(by_id["mute"]["raw_path"]).is_absolute()

    dropped = runner.invoke(app, ["clips", str(root), "--state", "dropped", "--csv"])
    assert dropped.exit_code == 0, dropped.output
    rows = list(csv.DictReader(io.StringIO(dropped.stdout)))
    assert [(r["state"], r["reason"], r["detail"]) for r in rows] == [
        ("dropped", "no_audio_stream", "streams: video h264")
    ]
    by_reason = runner.invoke(app, ["clips", str(root), "--reason", "private", "--reason", "no_audio_stream"])
    assert by_reason.exit_code == 0 and "gonegonegon" in by_reason.stdout and "goodgood" not in by_reason.stdout
    assert "detail: streams: video h264" in by_reason.stdout
    by_split = runner.invoke(app, ["clips", str(root), "--split", "as_eval", "--json"])
    assert [c["state"] for c in json.loads(by_split.stdout)["clips"]] == ["valid"]
    bad = runner.invoke(app, ["clips", str(root), "--state", "lost"])
    assert bad.exit_code == 2 and "unknown state" in bad.output and "never_tried" in bad.output


def test_export_writes_the_clips_it_leaves_out_with_their_reasons(root: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    kept = pq.read_table(tmp_path / "out" / "manifest.parquet").column("clip_id").to_pylist()
    dropped = pq.read_table(tmp_path / "out" / "dropped.parquet").to_pylist()
    assert len(kept) + len(dropped) == 4 and not set(kept) & {d["clip_id"] for d in dropped}
    assert sorted((d["state"], d["reason"]) for d in dropped) == [
        ("dropped", "no_audio_stream"),
        ("gone", "private"),
        ("never_tried", None),
    ]


def test_the_store_doc_snippet_reads_the_event_log(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (DOCS / "STORE.md").read_text(encoding="utf-8")
    section = text.split("## Finding a clip", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "docs/STORE.md lost its event-log snippet"
    exec(compile(code.group(1), "docs/STORE.md", "exec"), {"ROOT": str(root)})
    mute = clip_id_for("audioset", "mutemutemut", 0.0)
    assert capsys.readouterr().out.strip() == str(
        [{"clip_id": mute, "reason": "no_audio_stream", "reason_detail": "streams: video h264"}]
    )


def test_every_column_the_stages_write_is_declared() -> None:
    from tgdp.pipeline.fetch import EVENT_COLUMNS
    from tgdp.pipeline.validate import ValidateConfig, new_event

    assert ledger.STAGE_SCHEMAS["fetch"].names[: len(EVENT_COLUMNS)] == list(EVENT_COLUMNS)
    keys = new_event("c", ValidateConfig())
    assert set(keys) <= set(ledger.STAGE_SCHEMAS["validate"].names), set(keys) - set(
        ledger.STAGE_SCHEMAS["validate"].names
    )
