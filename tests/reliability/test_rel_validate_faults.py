"""validate over every kind of bad media (the synth fault cases fetched through the server, a sample of
../shared/media): one verdict per fetched clip with the documented reason, and a validate run that dies midway
leaves every clip accounted for and reruns to the clean result."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import make_root, manifest_row
from tests.reliability.rel_support import assert_funnel_sums, snapshot
from tgdp.pipeline import ledger
from tgdp.pipeline import validate as validate_mod
from tgdp.pipeline.importer import import_clips
from tgdp.pipeline.layout import safe_name
from tgdp.pipeline.synth import read_ground_truth
from tgdp.pipeline.validate import run_validate

pytestmark = pytest.mark.reliability


def test_every_synth_fault_gets_its_reason(clean_run: dict[str, Any], tiny_corpus: Path) -> None:
    latest = ledger.latest(clean_run["root"], "validate")
    fetched = ledger.latest(clean_run["root"], "fetch")
    seen = set()
    for row in read_ground_truth(tiny_corpus):
        cid = row["clip_id"]
        if fetched[cid]["status"] != "ok":
            # A 0-byte source cannot even be downloaded: a transient fetch failure, retried, never validated.
            assert row["fault"] == "empty" and fetched[cid]["transient"], (row, fetched[cid])
            assert cid not in latest
            continue
        ev = latest[cid]
        want = row["expected_reason"]
        got = "none" if ev["valid"] else ev["reason"]
        assert got == want, (row["fault"], ev["reason"], ev["reason_detail"])
        if not ev["valid"]:
            assert ev["status"] == "failed" and ev["reason_detail"], ev
        seen.add(row["fault"])
    assert {"no_audio", "no_video", "truncated", "garbage", "short", "silent", "still", "none"} <= seen
    f = assert_funnel_sums(clean_run["root"])
    assert f["validate"]["valid"] == sum(r["expected_reason"] == "none" for r in read_ground_truth(tiny_corpus))


def test_validate_dying_midway_is_accounted_and_reruns_clean(
    tmp_path: Path, clean_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    shutil.copytree(clean_run["root"], root)
    shutil.rmtree(root / "events" / "validate")
    real, calls = validate_mod.validate_clip, {"n": 0}

    def dying(task: validate_mod.ValidateTask, **settings: Any) -> dict:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed mid-validate")
        return real(task, **settings)

    monkeypatch.setattr(validate_mod, "validate_clip", dying)
    with pytest.raises(KeyboardInterrupt):
        run_validate(root, backend="serial")
    monkeypatch.undo()
    f = assert_funnel_sums(root)
    assert f["validate"]["not_validated"] > 0 and f["validate"]["valid"] + f["validate"]["dropped"] == 3
    s = run_validate(root, backend="serial")
    assert s.skipped_up_to_date == 3  # the three verdicts written before the crash are kept, not redone
    assert snapshot(root)["validate"] == clean_run["snapshot"]["validate"]
    assert_funnel_sums(root)


SHARED_SAMPLE = {
    "broken/androidx__invalid-bitstream.webm": ("corrupt_decode", "unreadable"),
    "broken/liveportrait__d1_lfs_pointer.mp4": ("unreadable",),
    "broken/androidx__sample_missing_stsd.mp4": ("corrupt_decode", "unreadable", "too_short"),
    "no_audio/androidx__bear-vp9.webm": ("no_audio_stream",),
    "av/imageio__realshort.mp4": (None, "too_short"),
}


@pytest.mark.shared
def test_shared_media_sample_through_import_and_validate(tmp_path: Path, shared_dir: Path) -> None:
    media = shared_dir / "media"
    if not (media / "MANIFEST.tsv").is_file():
        pytest.skip("shared/media is not present")
    with open(media / "MANIFEST.tsv", encoding="utf-8") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh, delimiter="\t") if r["file"] in SHARED_SAMPLE}
    root, src = tmp_path / "root", tmp_path / "import"
    src.mkdir()
    records = []
    for i, name in enumerate(sorted(rows)):
        try:
            duration = min(float(rows[name]["duration_s"]), 2.0)
        except ValueError:
            duration = 2.0
        cid = f"audioset:shared{i:05d}:0"
        shutil.copyfile(media / name, src / f"{safe_name(cid)}{Path(name).suffix}")
        records.append(
            manifest_row(
                f"shared{i:05d}", 0.0, duration, split="as_eval", labels=["/m/x"], source_file=name, source_line=i
            )
        )
    make_root(root, records)
    assert import_clips(root, src, copy=True).imported == len(records)
    run_validate(root, backend="serial")
    f = assert_funnel_sums(root)
    assert f["validate"]["not_validated"] == 0
    latest = ledger.latest(root, "validate")
    for rec in records:
        ev = latest[rec["clip_id"]]
        got = None if ev["valid"] else ev["reason"]
        assert got in SHARED_SAMPLE[rec["source_file"]], (rec["source_file"], ev["reason"], ev["reason_detail"])
