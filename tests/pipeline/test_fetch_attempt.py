"""One fetch attempt (`FetchSession._attempt`) against a scripted YoutubeDL: which event each outcome of the metadata
read, the section download and its whole-video fallback gives (the real-server runs are in test_fetch_faults)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from yt_dlp.utils import DownloadError

from tgdp.pipeline.fetch import FetchConfig, FetchSession, FetchTask, _Log
from tgdp.pipeline.layout import raw_path_for

TASK = {"clip_id": "synth:abcdefghijk:5000", "ytid": "abcdefghijk", "start_s": 5.0, "end_s": 15.0, "attempt": 1}


class ScriptedYdl:
    """`extract_info` gives `info` (or raises it); each `process_ie_result` call takes the next step of `downloads`:
    an exception to raise, or a list of (file name, bytes) to write to the directory, returning the format dict."""

    def __init__(self, directory: Path, info: Any, downloads: list[Any]) -> None:
        self.directory, self.info, self.downloads = directory, info, list(downloads)
        self.params: dict[str, Any] = {}
        self.ranges: list[bool] = []  # per download: was a section asked for

    def extract_info(self, url: str, download: bool, process: bool) -> dict[str, Any]:
        if isinstance(self.info, Exception):
            raise self.info
        return self.info

    def process_ie_result(self, info: dict[str, Any], download: bool) -> dict[str, Any]:
        self.ranges.append("download_ranges" in self.params)
        step = self.downloads.pop(0)
        if isinstance(step, Exception):
            (self.directory / "dl.mkv.part").write_bytes(b"partial")
            raise step
        for name, data in step:
            (self.directory / name).write_bytes(data)
        return {"format_id": "18", "vcodec": "avc1", "acodec": "mp4a", "height": 360, "fps": 25}


def _attempt(tmp_path: Path, info: Any, downloads: list[Any]) -> tuple[dict[str, Any], ScriptedYdl]:
    session = FetchSession(str(tmp_path / "root"), FetchConfig(), str(tmp_path / "tmp"), None, "s")
    directory = tmp_path / "slot"
    directory.mkdir()
    ydl = ScriptedYdl(directory, info, downloads)
    session._local.slot = (ydl, directory, _Log())
    return session._attempt(FetchTask(**TASK)), ydl


INFO = {"duration": 60.0, "live_status": "not_live"}
CUT_FAILED = DownloadError("ERROR: ffmpeg exited with code 1")  # classified tool_error: fall back to the whole video


def test_a_section_download_is_moved_to_its_raw_path(tmp_path: Path) -> None:
    ev, ydl = _attempt(tmp_path, INFO, [[("dl.mkv", b"media")]])
    section = (ev["status"], ev["section_mode"], ev["section_start_s"], ev["section_end_s"])
    assert section == ("ok", "section", 3.0, 17.0)
    assert ev["source_duration_s"] == 60.0 and (ev["format_id"], ev["height"]) == ("18", 360.0)
    final = raw_path_for(tmp_path / "root", TASK["clip_id"], ".mkv")
    assert final.read_bytes() == b"media" and ev["raw_path"] == final.relative_to(tmp_path / "root").as_posix()
    assert ev["file_bytes"] == 5 and ydl.ranges == [True] and "download_ranges" not in ydl.params


def test_a_source_ffmpeg_cannot_cut_is_fetched_whole(tmp_path: Path) -> None:
    ev, ydl = _attempt(tmp_path, INFO, [CUT_FAILED, [("dl.mkv", b"whole video")]])
    section = (ev["status"], ev["section_mode"], ev["section_start_s"], ev["section_end_s"])
    assert section == ("ok", "full", 0.0, None)
    assert ydl.ranges == [True, False]  # the partial file of the failed cut was removed: one output


@pytest.mark.parametrize(
    ("info", "downloads", "expected"),
    [
        # metadata read fails: no facts, no section mode
        (DownloadError("ERROR: Video unavailable"), [], {"reason": "unavailable", "transient": False}),
        (ValueError("extractor bug"), [], {"reason": "tool_error", "transient": True}),
        ({"duration": 60.0, "live_status": "is_upcoming"}, [], {"reason": "live_or_upcoming", "transient": False}),
        ({"duration": 12.0}, [], {"reason": "segment_out_of_range", "source_duration_s": 12.0}),
        # the section download fails for a reason other than the cut: recorded without a section mode
        (INFO, [DownloadError("ERROR: HTTP Error 403: Forbidden")], {"reason": "http_403", "transient": True}),
        # the whole-video fallback fails, or yt-dlp crashes: recorded with the mode that was tried
        (INFO, [CUT_FAILED, DownloadError("HTTP Error 404")], {"reason": "unavailable", "section_mode": "full"}),
        (INFO, [RuntimeError("boom")], {"reason": "tool_error", "section_mode": "section", "transient": True}),
        (INFO, [[("a.mkv", b"x"), ("b.mkv", b"y")]], {"reason": "tool_error", "source_duration_s": 60.0}),
        (INFO, [[("dl.mkv", b"")]], {"reason": "empty_download", "transient": True}),
    ],
)
def test_each_failure_is_one_classified_event(tmp_path: Path, info: Any, downloads: list, expected: dict) -> None:
    ev, _ = _attempt(tmp_path, info, downloads)
    assert ev["status"] == "failed" and ev["reason_detail"]
    assert {k: ev.get(k) for k in expected} == expected, ev
    if isinstance(info, Exception):
        assert "source_duration_s" not in ev
    if "section_mode" not in expected:
        assert "section_mode" not in ev
    assert not (tmp_path / "root" / "raw").exists()
