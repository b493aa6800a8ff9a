"""`tests.fixtures`: make_clip writes what ffprobe says it asked for, make_root's ROOT is one `tgdp-data status`
accounts for, make_store's store opens with `Store.open`, and every store-like object satisfies `StoreLike`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.eval.test_eval_embed import FakeStore as EvalFakeStore
from tests.fixtures import StoreLike, make_clip, make_corpus, make_root, make_store, manifest_row
from tests.train.train_support import NORM_MEAN, NORM_STD, FakeStore
from tgdp.pipeline import ledger
from tgdp.pipeline.cli import app
from tgdp.pipeline.layout import clip_id_for, manifest_path, raw_path_for
from tgdp.pipeline.manifest import SOURCE_SCHEMA
from tgdp.pipeline.serve import MediaServer
from tgdp.store import Store, segment_start
from tgdp.store.fs import file_sha256


def _probe(path: Path) -> dict[str, dict]:
    """{codec_type: stream} and the container duration, as ffprobe reports them."""
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not installed")
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    info = json.loads(out.stdout)
    streams = {s["codec_type"]: s for s in info["streams"]}
    streams["format"] = info["format"]
    return streams


def test_make_clip_default_and_options_are_what_ffprobe_reads(ffmpeg_bin: str, tmp_path: Path) -> None:
    default = _probe(make_clip(tmp_path / "a" / "default.mp4", ffmpeg=ffmpeg_bin))
    v, a = default["video"], default["audio"]
    assert (v["codec_name"], v["width"], v["height"], v["r_frame_rate"], v["pix_fmt"]) == (
        "h264",
        64,
        64,
        "8/1",
        "yuv420p",
    )
    assert (a["codec_name"], a["sample_rate"], a["channels"]) == ("aac", "16000", 1)
    assert float(default["format"]["duration"]) == pytest.approx(3.0, abs=0.1)

    opts = dict(duration=1.5, size="48x32", fps=12, sr=22050, vcodec="mpeg4", acodec="libmp3lame", channels=2)
    avi = _probe(make_clip(tmp_path / "b.avi", ffmpeg=ffmpeg_bin, **opts))
    v, a = avi["video"], avi["audio"]
    assert (v["codec_name"], v["width"], v["height"], v["r_frame_rate"]) == ("mpeg4", 48, 32, "12/1")
    assert (a["codec_name"], a["sample_rate"], a["channels"]) == ("mp3", "22050", 2)
    assert float(avi["format"]["duration"]) == pytest.approx(1.5, abs=0.15)

    assert set(_probe(make_clip(tmp_path / "v.mp4", audio=False, ffmpeg=ffmpeg_bin))) == {"video", "format"}
    assert set(_probe(make_clip(tmp_path / "a.m4a", video=False, ffmpeg=ffmpeg_bin))) == {"audio", "format"}
    # Any lavfi graph as a source, and extra output options (here a bitrate cap well below the default's).
    grey = "color=c=gray:s=40x24:r=5:d=2"
    still = make_clip(
        tmp_path / "still.mp4", video_source=grey, audio=False, output_args=["-b:v", "20k"], ffmpeg=ffmpeg_bin
    )
    v = _probe(still)["video"]
    assert (v["width"], v["height"], v["r_frame_rate"], int(v["nb_frames"])) == (40, 24, "5/1", 10)


def test_make_clip_reports_ffmpeg_failures(ffmpeg_bin: str, tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError):
        make_clip(tmp_path / "x.mp4", vcodec="no-such-codec", ffmpeg=ffmpeg_bin)


def test_make_root_is_a_root_status_accounts_for(ffmpeg_bin: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    clip = make_clip(tmp_path / "m" / "c.mp4", ffmpeg=ffmpeg_bin)
    in_place = make_clip(raw_path_for(root, clip_id_for("vggsound", "inplace", 2.0), "mp4"), ffmpeg=ffmpeg_bin)
    rows = [
        {"ytid": "fetched", "start_s": 2.0, "end_s": 4.0, "media": clip},
        {"ytid": "inplace", "start_s": 2.0, "end_s": 4.0, "media": in_place, "fetch": {"section_start_s": 1.0}},
        {"ytid": "nevertried", "split": "vgg_test"},
    ]
    failed = {"clip_id": "vggsound:gone:0", "status": "failed", "reason": "unavailable", "transient": False}
    extra = manifest_row("gone", dataset="vggsound")
    make_root(
        root,
        [*rows, extra],
        dataset="vggsound",
        split="vgg_train",
        source="synth",
        section_mode="whole_file",
        section_start_s=0.0,
        validated=True,
        events={"fetch": [failed]},
    )
    result = CliRunner().invoke(app, ["status", str(root), "--json"])
    assert result.exit_code == 0, result.output
    f = json.loads(result.stdout)
    assert f["check"] and f["source"] == 4
    fe = f["fetch"]
    assert (fe["fetched"], fe["gone"], fe["never_tried"]) == (2, 1, 1), fe
    assert f["validate"]["valid"] == 2 and (f["orphan_events"], f["duplicate_source_rows"]) == (0, 0)
    manifest = pq.read_table(manifest_path(root))
    assert manifest.schema == SOURCE_SCHEMA and manifest.column("split").to_pylist().count("vgg_test") == 1

    events = ledger.latest(root, "fetch")
    ev = events[clip_id_for("vggsound", "fetched", 2.0)]
    assert (ev["source"], ev["section_mode"], ev["section_start_s"], ev["attempt"]) == ("synth", "whole_file", 0.0, 1)
    assert ev["sha256"] == file_sha256(clip) == file_sha256(root / ev["raw_path"])
    assert ev["file_bytes"] == clip.stat().st_size
    kept = events[clip_id_for("vggsound", "inplace", 2.0)]
    assert root / kept["raw_path"] == in_place and kept["section_start_s"] == 1.0
    windows = {c: e["window_start_s"] for c, e in ledger.latest(root, "validate").items()}
    assert windows == {clip_id_for("vggsound", "fetched", 2.0): 2.0, clip_id_for("vggsound", "inplace", 2.0): 1.0}


def test_make_store_opens_with_the_reader(ffmpeg_bin: str, tmp_path: Path) -> None:
    path = make_store(tmp_path / "s", 2, size="64x48", prefix="fx", num_labels=2, ffmpeg=ffmpeg_bin, frame_size=32)
    store = Store.open(path)
    assert isinstance(store, StoreLike)
    assert len(store) == 2 and store.clip_ids == ["audioset:fx000:0", "audioset:fx001:0"]
    assert [store.labels(i) for i in range(2)] == [["/m/class0"], ["/m/class1"]]
    assert store.meta["frames"]["size"] == 32 and store.meta["fbank"]["target_length"] == 256
    assert store.segment(1, 15, length=128).shape == (128, 64)
    assert (tmp_path / "s" / "root" / "manifest" / "source.parquet").is_file()


def test_fakes_satisfy_store_like_and_use_the_store_window() -> None:
    fake = FakeStore(n=3, target_length=256)
    assert isinstance(fake, StoreLike) and isinstance(EvalFakeStore(), StoreLike)
    for t in (0, 5, 15):
        s = segment_start(t, 16, 256, 128)
        want = (fake.fbank(2)[s : s + 128].astype(np.float32) - NORM_MEAN) / NORM_STD
        np.testing.assert_array_equal(fake.segment(2, t, length=128), want)
    assert not isinstance(object(), StoreLike)


def test_testing_imports_without_pytest() -> None:
    code = "import sys; sys.modules['pytest'] = None; import tests.fixtures"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_make_corpus_is_what_the_media_server_serves(tmp_path: Path) -> None:
    master = tmp_path / "master.webm"
    master.write_bytes(b"\x1aE\xdf\xa3 not really webm")
    corpus = make_corpus(tmp_path / "corpus", master, ["abc", "-dash"])
    assert sorted(p.name for p in (corpus / "videos").iterdir()) == ["-dash.webm", "abc.webm"]
    with MediaServer(corpus) as base, urllib.request.urlopen(base + "/v/-dash") as resp:
        assert resp.read() == master.read_bytes()
