"""`tgdp-data import`: what ffmpeg opens is imported, every other file is listed with a reason, one bad file does not
stop the rest, symlinks are followed, and two files for one clip are reported."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures import make_root
from tgdp.pipeline import importer, ledger
from tgdp.pipeline.importer import import_clips
from tgdp.pipeline.layout import clip_id_for
from tgdp.pipeline.validate import run_validate


def write_manifest(root: Path, ytids: list[str], start_s: float = 0.0, end_s: float = 2.0) -> list[str]:
    make_root(root, [{"ytid": y, "start_s": start_s, "end_s": end_s} for y in ytids])
    return [clip_id_for("audioset", y, start_s) for y in ytids]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, make_clip: Callable[..., Path]) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("formats")
    # A few frames each: the container is what matters here.
    kw = dict(duration=3.0, fps=12, size="32x32")
    return {
        "mp4": make_clip(d / "a.mp4", **kw),
        "avi": make_clip(d / "a.avi", vcodec="mpeg4", acodec="libmp3lame", sr=22050, **kw),
        "flv": make_clip(d / "a.flv", vcodec="flv", acodec="libmp3lame", sr=22050, **kw),
        "mkv": make_clip(d / "a.mkv", **kw),
    }


def test_avi_flv_and_other_containers_are_imported_and_validate(tmp_path: Path, clips: dict[str, Path]) -> None:
    root, src = tmp_path / "root", tmp_path / "mine"
    ids = write_manifest(root, ["avi00000001", "flv00000001", "mp400000001", "odd00000001"])
    src.mkdir()
    shutil.copyfile(clips["avi"], src / "avi00000001.avi")
    shutil.copyfile(clips["flv"], src / "flv00000001.flv")
    shutil.copyfile(clips["mp4"], src / "mp400000001.mp4")
    shutil.copyfile(clips["mkv"], src / "odd00000001.vid")  # an extension nobody listed: ffmpeg opens it
    (src / "mp400000001.info.json").write_text("{}")  # yt-dlp sidecars
    (src / "mp400000001.webp").write_bytes(b"RIFF")
    (src / "stranger.avi").write_bytes(b"x")
    report = import_clips(root, src)
    assert report.imported == 4, report.as_dict()
    reasons = {f: r for f, r, _ in report.not_imported}
    want = {"mp400000001.info.json": "not_media", "mp400000001.webp": "not_media", "stranger.avi": "unmatched"}
    assert reasons == want
    assert report.as_dict()["not_imported_by_reason"] == {"not_media": 2, "unmatched": 1}
    run_validate(root, backend="serial")
    latest = ledger.latest(root, "validate")
    assert {c: latest[c]["valid"] for c in ids} == dict.fromkeys(ids, True), {c: latest[c]["reason"] for c in ids}


def test_an_unreadable_file_is_recorded_and_the_import_goes_on(
    tmp_path: Path, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, src = tmp_path / "root", tmp_path / "mine"
    ids = write_manifest(root, ["aaaaaaaaaa1", "bbbbbbbbbb2", "ccccccccccc"])
    src.mkdir()
    for y in ("aaaaaaaaaa1", "bbbbbbbbbb2", "ccccccccccc"):
        shutil.copyfile(clips["mp4"], src / f"{y}.mp4")
    real = importer.file_sha256

    def unreadable(path: Path) -> str:  # root reads any file: refuse the read the way a chmod 000 file would
        if Path(path).stat().st_ino == (src / "bbbbbbbbbb2.mp4").stat().st_ino:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(importer, "file_sha256", unreadable)
    report = import_clips(root, src)  # hard links: the staged file is the unreadable one
    assert report.imported == 2
    [(name, reason, detail)] = report.not_imported
    assert (name, reason) == ("bbbbbbbbbb2.mp4", "error") and "Permission denied" in detail
    latest = ledger.latest(root, "fetch")
    assert sorted(latest) == [ids[0], ids[2]]
    raw = sorted(p.name for p in (root / "raw").rglob("*") if p.is_file())
    assert len(raw) == 2 and all(latest[c]["raw_path"].endswith(tuple(raw)) for c in latest)  # no file without event
    assert not list((root / "tmp").rglob("*.mp4"))


def test_symlinked_inputs_are_followed_and_validate(tmp_path: Path, clips: dict[str, Path]) -> None:
    root, src = tmp_path / "root", tmp_path / "mine"
    cid, _ = write_manifest(root, ["linklinklin", "danglingabc"])
    src.mkdir()
    (src / "linklinklin.mp4").symlink_to(clips["mp4"])
    (src / "danglingabc.mp4").symlink_to(tmp_path / "nowhere.mp4")
    report = import_clips(root, src)
    assert report.imported == 1
    assert [(f, r) for f, r, _ in report.not_imported] == [("danglingabc.mp4", "error")]
    raw = root / ledger.latest(root, "fetch")[cid]["raw_path"]
    assert not raw.is_symlink() and raw.stat().st_ino == clips["mp4"].stat().st_ino  # a hard link to the target
    run_validate(root, backend="serial")  # used to abort: "points outside ROOT"
    assert ledger.latest(root, "validate")[cid]["valid"]


def test_two_files_for_one_clip_are_reported_not_silently_replaced(tmp_path: Path, clips: dict[str, Path]) -> None:
    root, src = tmp_path / "root", tmp_path / "mine"
    [cid] = write_manifest(root, ["dupdupdupdu"])
    src.mkdir()
    shutil.copyfile(clips["mkv"], src / "dupdupdupdu.mkv")
    shutil.copyfile(clips["mp4"], src / "dupdupdupdu.mp4")
    report = import_clips(root, src)
    assert report.imported == 1
    [(name, reason, detail)] = report.not_imported
    assert (name, reason) == ("dupdupdupdu.mp4", "duplicate") and "dupdupdupdu.mkv" in detail
    assert ledger.latest(root, "fetch")[cid]["raw_path"].endswith(".mkv")
    assert report.as_dict()["duplicates"] == 1


def test_register_files_records_the_given_time_origin_once(tmp_path: Path, clips: dict[str, Path]) -> None:
    from tgdp.pipeline.importer import register_files
    from tgdp.store.fs import file_sha256

    root = tmp_path / "root"
    ids = write_manifest(root, ["reg00000001", "reg00000002"], start_s=1.0, end_s=2.0)
    files = {ids[0]: clips["mp4"], ids[1]: clips["mkv"]}
    assert register_files(root, files, section_start_s=0.0, source="synth") == 2
    latest = ledger.latest(root, "fetch")
    for clip_id, src in files.items():
        ev = latest[clip_id]
        got = (ev["status"], ev["source"], ev["section_mode"], ev["section_start_s"])
        assert got == ("ok", "synth", "whole_file", 0.0)
        assert ev["sha256"] == file_sha256(src) and (root / ev["raw_path"]).read_bytes() == src.read_bytes()
    assert register_files(root, files) == 0  # already fetched: left alone, no second event
    assert ledger.read_events(root, "fetch").num_rows == 2 and not list((root / "tmp" / "import").glob("*"))
    with pytest.raises(ValueError, match="not in the manifest"):
        register_files(root, {"synth:nope:0": clips["mp4"]})


def test_a_validated_clip_whose_file_was_deleted_takes_a_new_import(tmp_path: Path, clips: dict[str, Path]) -> None:
    """`import` leaves a clip alone only while its last fetch's file is in place (`ClipStates.fetched_on_disk`): a
    verdict on deleted media (status counts the clip as valid) does not stop the next import; attempts count on."""
    root, src = tmp_path / "root", tmp_path / "mine"
    kept, lost = write_manifest(root, ["keep0000001", "lost0000001"])
    src.mkdir()
    shutil.copyfile(clips["mp4"], src / "keep0000001.mp4")
    shutil.copyfile(clips["mp4"], src / "lost0000001.mp4")
    assert import_clips(root, src).imported == 2
    run_validate(root, backend="serial")
    (root / ledger.latest(root, "fetch")[lost]["raw_path"]).unlink()
    again = import_clips(root, src)
    assert (again.imported, again.already_fetched) == (1, 1)
    latest = ledger.latest(root, "fetch")
    assert (latest[kept]["attempt"], latest[lost]["attempt"]) == (1, 2)
    assert (root / latest[lost]["raw_path"]).is_file()
