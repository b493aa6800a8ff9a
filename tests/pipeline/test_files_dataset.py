"""The `files` dataset: a folder of real media with arbitrary names (spaces, unicode, sub-folders, several containers)
goes manifest → import → validate → shard → train → eval; the CSV gives windows, labels and splits; bad rows are
issues; no clip left is never a silent success."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tgdp.eval.cli import app as eval_app
from tgdp.pipeline.cli import app as data_app
from tgdp.pipeline.manifest import ManifestConfig, ManifestError, build_manifest
from tgdp.train.cli import app as train_app

runner = CliRunner()
KW = dict(duration=3.0, fps=8, size="48x48")
# name → (encoder options); several containers, names no YouTube id looks like
MEDIA = {
    "holiday 1.mp4": {},
    "Konzert – Bühne.mkv": dict(fps=12, duration=4.0),  # cut in two windows of 24 frames
    "rain (2).webm": dict(vcodec="libvpx", acodec="libopus", sr=48000),
    "talks/panel.avi": dict(vcodec="mpeg4", acodec="libmp3lame", sr=22050),
    "雨の日.mov": {},
    "birds.mp4": dict(freq=880),
    "city.mkv": dict(freq=660),
    "sea.avi": dict(vcodec="mpeg4", acodec="libmp3lame", sr=22050, freq=330),
}


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory, make_clip: Callable[..., Path]) -> Path:
    d = tmp_path_factory.mktemp("my media")
    for name, kw in MEDIA.items():
        make_clip(d / name, **{**KW, **kw})
    make_clip(d / "silent film.mp4", audio=False, **KW)  # validate drops it: no audio stream
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    (d / "notes.txt").write_text("not media")
    return d


def _ok(result, *what: str) -> None:
    assert result.exit_code == 0, (what, result.output, result.exception)


@pytest.mark.slow
def test_a_folder_of_real_media_goes_to_a_checkpoint_and_a_retrieval_table(tmp_path: Path, media_dir: Path) -> None:
    root, store, run = tmp_path / "root", tmp_path / "store", tmp_path / "run"
    clips_csv = tmp_path / "clips.csv"
    clips_csv.write_text(
        "file,start_s,end_s,labels,split\n"
        "holiday 1.mp4,,,people;outdoor,eval\n"
        "Konzert – Bühne.mkv,0,2,music,train\n"  # two windows of one file
        "Konzert – Bühne.mkv,2,4,music,train\n"
        "rain (2),,,rain,eval\n"  # a stem is enough when it is unique
        "雨の日.mov,,,rain,eval\n",
        encoding="utf-8",
    )
    _ok(runner.invoke(data_app, ["manifest", str(root), "--dataset", "files", "--from", str(media_dir),
                                 "--csv", str(clips_csv), "--json"]), "manifest")  # fmt: skip
    rows = {r["clip_id"]: r for r in pq.read_table(root / "manifest" / "source.parquet").to_pylist()}
    assert len(rows) == 11  # 10 media files (txt is not one) + one file cut in two windows
    assert rows["files:Konzert – Bühne:2000"]["end_s"] == 4.0
    assert rows["files:holiday 1:0"]["labels"] == ["people", "outdoor"]
    assert rows["files:talks/panel:0"]["split"] == "train" and abs(rows["files:talks/panel:0"]["end_s"] - 3.0) < 0.2

    result = runner.invoke(data_app, ["import", str(root), "--from", str(media_dir), "--json"])
    _ok(result, "import")
    report = json.loads(result.stdout)
    assert report["imported"] == 11 and report["not_imported_by_reason"] == {"not_media": 1}, report

    sets = ["--set", "features.frame_size=96", "--set", "features.num_mel_bins=64"]
    result = runner.invoke(data_app, ["validate", str(root), "--backend", "serial", "--json", *sets])
    _ok(result, "validate")
    summary = json.loads(result.stdout)
    assert summary["valid"] == 9 and summary["dropped"] == {"no_audio_stream": 1, "unreadable": 1}, summary
    _ok(runner.invoke(data_app, ["shard", str(root), "--store", str(store), "--backend", "serial", *sets]), "shard")
    result = runner.invoke(data_app, ["clips", str(root), "--json"])
    _ok(result, "clips")
    clips = json.loads(result.stdout)["clips"]
    dropped = {c["clip_id"]: c["reason"] for c in clips if c["state"] == "dropped"}
    assert dropped == {"files:broken:0": "unreadable", "files:silent film:0": "no_audio_stream"}
    sharded = [c for c in clips if c["state"] == "sharded"]
    assert len(sharded) == 9 and all(Path(c["shard_file"]).is_file() for c in sharded), sharded[0]

    train = ["--config", "tiny_tgdp", "--store", str(store), "--run-dir", str(run)]
    for s in ("train.steps=2", "train.batch_size=2", "train.num_workers=0", "train.ckpt_every=2",
              "train.progress=false", "train.tensorboard=false", "train.log_every=1"):  # fmt: skip
        train += ["--set", s]
    _ok(runner.invoke(train_app, train), "train")
    ckpt = sorted(run.rglob("*.pt"))[-1]
    emb = tmp_path / "emb.arrow"
    embed = ["embed", "--checkpoint", str(ckpt), "--store", str(store), "--split", "eval", "--out", str(emb)]
    _ok(runner.invoke(eval_app, [*embed, "--set", "num_workers=0", "--device", "cpu"]), "embed")
    _ok(runner.invoke(eval_app, ["retrieval", "--emb", str(emb), "--out", str(tmp_path / "ret")]), "retrieval")
    ranked = np.load(tmp_path / "ret" / "ranks.npz")["clip_ids"].tolist()
    assert sorted(ranked) == ["files:holiday 1:0", "files:rain (2):0", "files:雨の日:0"]
    assert "R@1" in (tmp_path / "ret" / "retrieval.md").read_text()


def test_csv_issues_and_ids(tmp_path: Path, media_dir: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "file,id,start_s,end_s,split\n"
        "nope.mp4,,,,\n"  # no such file
        "birds.mp4,,2,1,\n"  # end before start
        "city.mkv,,x,,\n"  # bad time
        "sea.avi,,,,holdout\n"  # bad split
        "holiday 1.mp4,bad\x01id,,,\n"  # control character in the id
        "birds.mp4,same,,,\n"
        "city.mkv,same,,,\n"  # same clip id twice
    )
    cfg = ManifestConfig(dataset="files", from_dir=str(media_dir), csv=[str(bad)])
    with pytest.raises(ManifestError) as err:
        build_manifest(tmp_path / "root", cfg)
    kinds = [(i.line, i.kind) for i in err.value.issues]
    assert kinds == [(2, "missing_file"), (3, "end_before_start"), (4, "bad_timestamp"), (5, "bad_split"),
                     (6, "bad_id"), (8, "duplicate_clip_id")]  # fmt: skip
    res = build_manifest(tmp_path / "root", cfg.model_copy(update={"skip_bad": True}))
    ids = pq.read_table(res.manifest).column("clip_id").to_pylist()
    # a file named by a rejected row is not added again as a whole file; the files the CSV never names are
    assert "files:same:0" in ids and "files:birds:0" not in ids and "files:sea:0" not in ids
    assert "files:talks/panel:0" in ids and res.rows + len(res.issues) == len(ids) + 6


def test_eval_fraction_keeps_a_files_windows_together(tmp_path: Path, media_dir: Path) -> None:
    cfg = ManifestConfig(dataset="files", from_dir=str(media_dir), eval_fraction=0.5)
    res = build_manifest(tmp_path / "root", cfg)
    assert set(res.split_counts) == {"train", "eval"} and res.leak_count == 0


def test_dropping_files_clips_that_have_events_needs_force(tmp_path: Path, media_dir: Path) -> None:
    """The files dataset takes the official lists' guard: a new folder that leaves out clips with events is refused."""
    import shutil

    from tgdp.pipeline import ledger

    root = tmp_path / "root"
    full = build_manifest(root, ManifestConfig(dataset="files", from_dir=str(media_dir)))
    ids = pq.read_table(full.manifest).column("clip_id").to_pylist()
    ledger.append_events(root, "fetch", [{"clip_id": c, "status": "ok", "reason": None, "transient": False}
                                         for c in ids])  # fmt: skip
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    shutil.copy(media_dir / "holiday 1.mp4", fewer)
    cfg = ManifestConfig(dataset="files", from_dir=str(fewer))
    with pytest.raises(ManifestError, match=rf"drops {len(ids) - 1} clip\(s\) .* already have events.*--force"):
        build_manifest(root, cfg)
    assert pq.read_metadata(full.manifest).num_rows == len(ids)
    result = runner.invoke(data_app, ["manifest", str(root), "--dataset", "files", "--from", str(fewer)])
    assert result.exit_code == 2 and "--force" in result.output, result.output
    res = build_manifest(root, cfg, force=True)
    assert res.rows == 1 and any(f"drops {len(ids) - 1} clip(s)" in w for w in res.warnings)
    assert json.loads(res.meta.read_text())["warnings"] == res.warnings


def test_zero_clips_is_an_error_not_a_silent_success(tmp_path: Path) -> None:
    src = tmp_path / "balanced_train_segments.csv"
    src.write_text('my clip 1, 0.000, 10.000, "/m/a"\nholiday, 0.000, 10.000, "/m/a"\n')
    argv = ["manifest", str(tmp_path / "root"), "--dataset", "audioset", "--csv", str(src)]
    result = runner.invoke(data_app, [*argv, "--set", "manifest.skip_bad=true"])
    assert result.exit_code == 2, result.output
    assert "no clips" in result.output and "--dataset files" in result.output
    assert not (tmp_path / "root" / "manifest" / "source.parquet").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    result = runner.invoke(data_app, ["manifest", str(tmp_path / "r2"), "--dataset", "files", "--from", str(empty)])
    assert result.exit_code == 2 and "no clips: 0 media files" in result.output, result.output


@pytest.mark.shared
def test_shared_media_folder_builds_a_files_manifest(tmp_path: Path, shared_dir: Path) -> None:
    media = shared_dir / "media"
    if not media.is_dir():
        pytest.skip("no shared media folder")
    res = build_manifest(tmp_path / "root", ManifestConfig(dataset="files", from_dir=str(media)))
    assert res.rows > 0 and res.split_counts == {"train": res.rows}


def test_fetch_leaves_files_clips_to_import(tmp_path: Path) -> None:
    from tests.fixtures import make_root
    from tgdp.pipeline.fetch import FetchConfig, FetchSummary, plan_fetch

    root = make_root(
        tmp_path / "root", [{"ytid": "holiday 1"}, {"ytid": "talks/panel"}], dataset="files", split="train"
    )
    summary = FetchSummary()
    assert plan_fetch(root, FetchConfig(), summary).num_rows == 0
    assert dict(summary.skipped) == {"files_dataset": 2}
