"""validate + export over a ROOT holding one clip per fault case, built here with ffmpeg and the ledger."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.fixtures import make_root
from tgdp.pipeline.export import run_export
from tgdp.pipeline.layout import clip_id_for
from tgdp.pipeline.ledger import latest
from tgdp.pipeline.status import funnel as status_funnel
from tgdp.pipeline.validate import ValidateConfig, resolve_window, run_validate


@pytest.fixture(scope="module")
def fault_root(tmp_path_factory, make_clip):
    tmp = tmp_path_factory.mktemp("faults")
    media = tmp / "media"
    root = tmp / "root"
    ok = make_clip(media / "ok.mp4", duration=3.0)
    files = {"ok": ok}
    files["no_audio"] = make_clip(media / "no_audio.mp4", duration=3.0, audio=False)
    files["no_video"] = make_clip(media / "no_video.m4a", duration=3.0, video=False)
    files["short"] = make_clip(media / "short.mp4", duration=1.5)
    silence = {"video_source": "testsrc2=s=64x64:r=8:d=3", "audio_source": "anullsrc=r=16000:cl=mono:d=3"}
    files["silent"] = make_clip(media / "silent.mp4", **silence)
    still = {"video_source": "color=c=gray:s=64x64:r=8:d=3", "audio_source": "sine=f=440:d=3"}
    files["still"] = make_clip(media / "still.mp4", **still)
    data = ok.read_bytes()
    (media / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov is at the end: ffprobe can't open it
    files["truncated"] = media / "truncated.mp4"
    (media / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    files["garbage"] = media / "garbage.mp4"
    (media / "empty.mp4").write_bytes(b"")
    files["empty"] = media / "empty.mp4"
    ts = make_clip(media / "c.ts", duration=3.0)
    buf = bytearray(ts.read_bytes())
    rng = np.random.default_rng(1)
    for off in range(len(buf) // 4, 3 * len(buf) // 4, 2000):
        buf[off + 8 : off + 150] = rng.integers(0, 256, 142, dtype=np.uint8).tobytes()
    (media / "corrupt.ts").write_bytes(bytes(buf))
    files["corrupt"] = media / "corrupt.ts"
    # A padded yt-dlp section: source [8, 15) holds the clip [10, 13); no section_start_s → padded rule (offset 2).
    files["padded"] = make_clip(media / "padded.mp4", duration=7.0)

    rows = [{"ytid": name, "start_s": 0.0, "end_s": 3.0, "media": path} for name, path in files.items()]
    padded = {"start_s": 10.0, "end_s": 13.0, "split": "as_eval", "fetch": {"section_start_s": None}}
    rows = [{**r, **padded} if r["ytid"] == "padded" else r for r in rows]
    rows.append({"ytid": "never_fetched", "start_s": 0.0, "end_s": 3.0})
    make_root(root, rows, section_start_s=0.0)
    summary = run_validate(root, backend="serial")
    return root, summary


EXPECTED = {
    "ok": None,
    "silent": None,
    "still": None,
    "padded": None,
    "no_audio": "no_audio_stream",
    "no_video": "no_video_stream",
    "short": "too_short",
    "truncated": "unreadable",
    "garbage": "unreadable",
    "empty": "unreadable",
    "corrupt": "corrupt_decode",
}


def test_every_fault_lands_in_its_reason(fault_root):
    root, summary = fault_root
    events = latest(root, "validate")
    got = {cid.split(":")[1]: ev for cid, ev in events.items()}
    assert set(got) == set(EXPECTED)  # the never-fetched clip is not validated, every fetched one is
    for name, reason in EXPECTED.items():
        ev = got[name]
        assert ev["reason"] == reason, (name, ev["reason"], ev["reason_detail"])
        assert ev["valid"] is (reason is None), name
        assert ev["valid_rule"].startswith("v1:")
        if reason:
            assert ev["status"] == "failed" and ev["reason_detail"], name
    assert summary.validated == len(EXPECTED) and summary.valid == 4
    assert got["corrupt"]["reason_detail"]  # first ffmpeg error line kept
    # flags, not drops
    assert got["silent"]["is_silent"] and got["silent"]["rms_dbfs"] < -60 and got["silent"]["silent_frac"] == 1.0
    assert not got["ok"]["is_silent"] and got["ok"]["rms_dbfs"] > -30
    assert got["still"]["is_still"] and got["still"]["still_score"] < 1.0
    assert not got["ok"]["is_still"] and got["ok"]["still_score"] > 1.0
    assert got["ok"]["video_frames"] == 24 and abs(got["ok"]["audio_dur_s"] - 3.0) < 0.1
    assert got["padded"]["window_rule"] == "padded" and got["padded"]["window_start_s"] == pytest.approx(2.0)
    assert got["ok"]["window_rule"] == "section"


def test_export_writes_filtered_manifest_ids_and_funnel(fault_root, tmp_path):
    root, _ = fault_root
    out = tmp_path / "export"
    result = run_export(root, out)
    table = pq.read_table(out / "manifest.parquet")
    assert sorted(table.column("ytid").to_pylist()) == ["ok", "padded", "silent", "still"]
    assert {"labels", "rms_dbfs", "still_score", "is_silent", "valid_rule", "source_line"} <= set(table.column_names)
    ids = (out / "clip_ids.txt").read_text().split()
    assert sorted(ids) == sorted(table.column("clip_id").to_pylist())
    funnel = json.loads((out / "funnel.json").read_text())
    assert funnel["source"] == len(EXPECTED) + 1
    assert funnel["fetch"]["fetched"] == len(EXPECTED) and funnel["fetch"]["never_tried"] == 1
    assert funnel["validate"]["valid"] == 4
    assert funnel["validate"]["dropped_by_reason"]["unreadable"] == 3
    assert sum(funnel["validate"]["dropped_by_reason"].values()) + 4 == len(EXPECTED)
    assert funnel["check"] and sum(c["valid"] for c in funnel["by_split"].values()) == 4
    status = status_funnel(root)  # `tgdp-data status` counts with the same function
    assert {k: funnel[k] for k in status} == status
    assert "| valid |" in (out / "funnel.md").read_text()
    assert result.valid == 4


def test_rerun_skips_up_to_date_and_rule_change_revalidates(fault_root):
    root, _ = fault_root
    again = run_validate(root, backend="serial")
    assert again.validated == 0 and again.skipped_up_to_date == len(EXPECTED)
    strict = ValidateConfig(min_frames=30)  # a new rule version re-validates everything
    redo = run_validate(root, strict, backend="serial")
    assert redo.validated == len(EXPECTED)
    assert latest(root, "validate")[clip_id_for("audioset", "ok", 0.0)]["reason"] == "too_short"


def test_window_rules():
    cfg = ValidateConfig()
    assert resolve_window(30.0, 40.0, {"section_start_s": 28.0}, 14.0, cfg) == (2.0, "section")
    assert resolve_window(30.0, 40.0, {"source": "import"}, 300.0, cfg) == (30.0, "import")
    assert resolve_window(30.0, 40.0, {}, 14.0, cfg) == (2.0, "padded")
    assert resolve_window(1.0, 11.0, {}, 13.0, cfg) == (1.0, "padded")  # start < pad: the file starts at 0
    assert resolve_window(30.0, 40.0, {}, 300.0, cfg) == (30.0, "whole_file")  # longer than any padded segment
    assert resolve_window(30.0, 40.0, {}, 12.0, cfg, pad_s=1.0) == (1.0, "padded")  # fetch.pad_s, passed in


def test_valid_clips_leave_a_feature_cache_entry_and_dropped_ones_none(fault_root):
    from tgdp.pipeline.features import feature_cache_path

    root, _ = fault_root
    events = latest(root, "validate")
    for cid, ev in events.items():
        cached = feature_cache_path(root, cid).is_file()
        assert cached is bool(ev["valid"]), (cid, ev["reason"])
        assert ev["feature_cache"] == ("cached" if ev["valid"] else None)
    assert not list(root.glob("features/*/.tmp-*"))


def test_single_process_probe_agrees_with_ffprobe(fault_root, ffmpeg_bin, tmp_path):
    from dataclasses import replace

    from tgdp.pipeline.features import FeatureParams
    from tgdp.pipeline.validate import validate_clip, validate_tasks

    root, _ = fault_root
    # An extra file whose audio starts 0.5 s after its video (a flag, not a drop).
    src = root.parent / "media"
    offset = tmp_path / "offset.mkv"
    cmd = [ffmpeg_bin, "-v", "error", "-y", "-i", str(src / "ok.mp4"), "-itsoffset", "0.5", "-i", str(src / "ok.mp4")]
    subprocess.run(cmd + ["-map", "0:v", "-map", "1:a", "-c", "copy", str(offset)], check=True)
    cfg = ValidateConfig(min_frames=16)
    tasks, _, _ = validate_tasks(root, cfg, force=True)
    tasks.append(replace(tasks[0], clip_id="offset", path=str(offset), cache_path=None))
    fields = ("reason", "valid", "has_video", "has_audio", "video_codec", "audio_codec", "video_frames")
    fields += ("window_start_s", "is_av_offset", "is_silent", "is_still")
    for task in tasks:
        task = replace(task, cache_path=None)
        fast = validate_clip(task, cfg, FeatureParams())
        slow = validate_clip(task, cfg.model_copy(update={"use_ffprobe": True}), FeatureParams())
        assert {k: fast[k] for k in fields} == {k: slow[k] for k in fields}, task.clip_id
        for k in ("probe_duration_s", "av_offset_s", "audio_dur_s", "still_score", "rms_dbfs"):
            if slow[k] is None:
                assert fast[k] is None, (task.clip_id, k)
            else:
                assert fast[k] == pytest.approx(slow[k], abs=0.011), (task.clip_id, k)
        if slow["reason"]:
            assert fast["reason_detail"], task.clip_id
    # 0.5 s less the AAC priming the stream copy exposes; both paths agree on it (checked above).
    assert fast["clip_id"] == "offset" and 0.3 < fast["av_offset_s"] < 0.6 and fast["is_av_offset"]


@pytest.mark.parametrize("err", ["EACCES", "ENOSPC", "EIO", "EMFILE"])
def test_environment_errors_are_transient_and_retried(tmp_path, make_clip, monkeypatch, err):
    """A permission, disk, I/O or fd-limit error says nothing about the clip: it is retried on the next run."""
    import errno
    import os

    from tgdp.pipeline import media
    from tgdp.pipeline import validate as validate_mod

    root = tmp_path / "root"
    make_root(root, [{"ytid": "envenvenv01", "media": make_clip(tmp_path / "m" / "a.mp4")}], section_start_s=0.0)
    cid = clip_id_for("audioset", "envenvenv01", 0.0)
    code = getattr(errno, err)

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    # EACCES/EIO when the file is opened, EMFILE/ENOSPC when ffmpeg is started: both ends of the same verdict.
    if err in ("EACCES", "EIO"):
        real_open = open
        raw = str(root / "raw")
        monkeypatch.setattr(
            validate_mod,
            "open",
            lambda p, *a, **k: refuse() if str(p).startswith(raw) else real_open(p, *a, **k),
            raising=False,
        )
    else:
        monkeypatch.setattr(media.subprocess, "Popen", refuse)
    s1 = run_validate(root, backend="serial")
    ev = latest(root, "validate")[cid]
    assert (ev["valid"], ev["reason"], ev["transient"]) == (False, "io_error", True), ev
    assert err in ev["reason_detail"] or os.strerror(code) in ev["reason_detail"]
    assert s1.dropped == {"io_error": 1}
    monkeypatch.undo()
    s2 = run_validate(root, backend="serial")
    assert (s2.skipped_up_to_date, s2.validated, s2.valid) == (0, 1, 1)


def test_ffmpeg_reporting_an_environment_error_is_transient(tmp_path, make_clip, monkeypatch):
    from tgdp.pipeline import validate as validate_mod
    from tgdp.pipeline.media import MediaError

    def denied(*a, **k):
        raise MediaError("unreadable", "/x/raw/ab/c_x.mp4: Permission denied")

    root = tmp_path / "root"
    make_root(root, [{"ytid": "envenvenv02", "media": make_clip(tmp_path / "m" / "a.mp4")}], section_start_s=0.0)
    cid = clip_id_for("audioset", "envenvenv02", 0.0)
    monkeypatch.setattr(validate_mod, "probe_decode", denied)
    run_validate(root, backend="serial")
    ev = latest(root, "validate")[cid]
    assert (ev["reason"], ev["transient"]) == ("io_error", True), ev


def test_a_seek_error_is_decoded_again_from_the_start_before_the_verdict(tmp_path, ffmpeg_bin, make_clip):
    """x264 intra refresh (no IDR after the first frame): a seek lands on a recovery point and the decoder logs
    "mmco: unref short failure", yet the file decodes cleanly from its start. The verdict must be the file's."""
    from tgdp.pipeline.features import FeatureParams
    from tgdp.pipeline.shard import ShardConfig, ShardTask, shard_clip

    media = tmp_path / "m"
    media.mkdir()
    x264 = {"preset": "veryfast", "output_args": ["-x264-params", "intra-refresh=1:keyint=16"]}
    ir = make_clip(media / "intra_refresh.mp4", duration=6.0, audio_source="sine=f=440:d=6", **x264)
    plain = make_clip(media / "plain.mp4", duration=6.0)
    root = tmp_path / "root"
    rows = [("iririririr1", ir, 3.0), ("plainplain1", plain, 3.0), ("plainplain0", plain, 0.0)]
    make_root(root, [{"ytid": y, "start_s": s, "end_s": s + 2.0, "media": m} for y, m, s in rows], section_start_s=0.0)
    run_validate(root, backend="serial")
    ev = latest(root, "validate")
    got = {c.split(":")[1]: (e["valid"], e["reason"], e["decode_path"]) for c, e in ev.items()}
    assert got == {
        "iririririr1": (True, None, "from_start"),  # was corrupt_decode: mmco: unref short failure
        "plainplain1": (True, None, "seek"),
        "plainplain0": (True, None, "start"),
    }
    # shard decodes with the same fallback when validate's cache entry is gone
    task = ShardTask(clip_id="x", path=str(ir), window_start_s=3.0, duration_s=2.0, row={"clip_id": "x"})
    res = shard_clip(task, ShardConfig(), FeatureParams(num_mel_bins=64, frame_size=32))
    assert res["reason"] is None and len(res["row"]["frames_jpeg"]) == 16
