"""`tgdp-data import ROOT --from DIR`: register media a user already downloaded as fetched clips.

A file matches a manifest row when its stem (name without the last extension) equals the row's `clip_id`,
`layout.safe_name(clip_id)`, `video_id` (VGGSound `<ytid>_<start:06d>`), or `ytid` (the CAV-MAE `<ytid>.mp4`
convention). Where the imported file's t=0 lies is decided from its duration: a file at least as long as the
clip's `end_s` (within 0.1 s) is a whole video (`section_mode="import_full"`, `section_start_s` 0); a shorter one
holds the labelled segment (`section_mode="import"`, `section_start_s` = the clip's `start_s`, the CAV-MAE mirrors'
convention). A file ffprobe cannot read is recorded as a segment and dropped by `validate` with its reason.
A ytid that names several clips matches all of them only through their clip ids / video ids, never by ytid alone
(one trimmed `<ytid>.mp4` cannot be two segments). Clips already fetched are left alone.

Each match is hard-linked (or copied, across file systems or with `copy=True`) to a temporary name under
`ROOT/tmp/import/`, then `os.replace`d onto `layout.raw_path_for`, then recorded as a `fetch` ok event with
`source="import"`. Files that match nothing are reported.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tgdp.pipeline import ledger
from tgdp.pipeline.fetch import EVENT_COLUMNS, RootLock, clip_states, tool_versions
from tgdp.pipeline.layout import file_sha256, manifest_path, raw_path_for, safe_name, within_root

__all__ = ["ImportReport", "import_clips"]

MEDIA_EXTS = {".mp4", ".mkv", ".webm", ".m4a", ".mov", ".m4v", ".wav", ".flac", ".ogg", ".opus", ".mp3"}


@dataclass
class ImportReport:
    imported: int = 0
    already_fetched: int = 0
    unmatched: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "already_fetched": self.already_fetched,
            "unmatched": len(self.unmatched),
            "unmatched_files": self.unmatched[:100],
            "ambiguous_ytid_files": self.ambiguous[:100],
        }


def _place(src: Path, tmp_dir: Path, final: Path, copy: bool) -> None:
    tmp = tmp_dir / f"{uuid.uuid4().hex}{final.suffix}"
    if not copy:
        try:
            os.link(src, tmp)
        except OSError:
            copy = True
    if copy:
        shutil.copyfile(src, tmp)
    final.parent.mkdir(parents=True, exist_ok=True)
    for other in final.parent.glob(f"{final.stem}.*"):
        if other != final:
            other.unlink(missing_ok=True)
    os.replace(tmp, final)


def _time_origin(path: Path, start_s: float, end_s: float) -> dict[str, Any]:
    """`section_mode` / `section_start_s` of an imported file: whole video or the labelled segment (module doc)."""
    from tgdp.pipeline.media import MediaError, probe

    try:
        duration = probe(path).duration_s
    except MediaError:
        duration = None
    if start_s > 0 and duration is not None and duration >= end_s - 0.1:
        return {"section_mode": "import_full", "section_start_s": 0.0}
    return {"section_mode": "import", "section_start_s": start_s}


def import_clips(root: Path, from_dir: Path, copy: bool = False) -> ImportReport:
    """Import matching media files under `from_dir` (recursively) into ROOT/raw as fetched clips."""
    root, from_dir = Path(root).resolve(), Path(from_dir)
    if not from_dir.is_dir():
        raise NotADirectoryError(f"{from_dir} is not a directory")
    table = pq.read_table(manifest_path(root), columns=["clip_id", "video_id", "ytid", "start_s", "end_s"])
    rows = table.to_pylist()
    by_key: dict[str, dict[str, Any]] = {}
    by_ytid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        keys = [row["clip_id"], safe_name(row["clip_id"])]
        if row["video_id"] != row["ytid"]:  # AudioSet video ids are bare ytids: those go through by_ytid
            keys.append(row["video_id"])
        for key in keys:
            by_key.setdefault(key, row)
        by_ytid[row["ytid"]].append(row)
    report = ImportReport()
    lock = RootLock(root / "tmp" / "fetch.lock")
    try:
        tmp_dir = root / "tmp" / "import"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        states = clip_states(root)
        ytv, ffv = tool_versions()
        with ledger.EventWriter(root, "fetch", flush_every=64) as writer:
            for src in sorted(p for p in from_dir.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTS):
                stem = src.name[: -len(src.suffix)]
                row = by_key.get(stem)
                if row is None and stem in by_ytid:
                    if len(by_ytid[stem]) > 1:
                        report.ambiguous.append(str(src.relative_to(from_dir)))
                        continue
                    row = by_ytid[stem][0]
                if row is None:
                    report.unmatched.append(str(src.relative_to(from_dir)))
                    continue
                st = states.get(row["clip_id"])
                if st is not None and st.status == "done":
                    report.already_fetched += 1
                    continue
                final = raw_path_for(root, row["clip_id"], src.suffix)
                if not within_root(root, final):
                    raise RuntimeError(f"refusing to write outside ROOT: {final}")
                _place(src, tmp_dir, final, copy)
                event = {
                    "clip_id": row["clip_id"],
                    "status": "ok",
                    "reason": None,
                    "transient": False,
                    "attempt": (st.attempts if st else 0) + 1,
                    "source": "import",
                    "session_id": "import",
                    "raw_path": final.relative_to(root).as_posix(),
                    "file_bytes": final.stat().st_size,
                    "sha256": file_sha256(final),
                    **_time_origin(final, float(row["start_s"]), float(row["end_s"])),
                    "yt_dlp_version": ytv,
                    "ffmpeg_version": ffv,
                    "gave_up": False,
                }
                writer.add({k: event.get(k) for k in EVENT_COLUMNS})
                report.imported += 1
        shutil.rmtree(tmp_dir, ignore_errors=True)
    finally:
        lock.release()
    return report
