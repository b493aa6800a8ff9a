"""`tgdp-data import ROOT --from DIR`: register media a user already downloaded as fetched clips.

A file of a `files` manifest (`tgdp.pipeline.files`) matches the rows whose `source_file` is its path under the input
dir (one row per window). Otherwise a file matches a manifest row when its stem (name without the last extension) equals
the row's `clip_id`, `layout.safe_name(clip_id)`, `video_id` (VGGSound `<ytid>_<start:06d>`), or `ytid` (the CAV-MAE
`<ytid>.mp4` convention). Where the imported file's t=0 lies is decided from its duration: a file at least as long as
the clip's `end_s` (within 0.1 s) is a whole video (`section_mode="import_full"`, `section_start_s` 0); a shorter one
holds the labelled segment (`section_mode="import"`, `section_start_s` = the clip's `start_s`, the CAV-MAE mirrors'
convention). A file ffprobe cannot read is recorded as a segment and dropped by `validate` with its reason. A ytid that
names several clips matches all of them only through their clip ids / video ids, never by ytid alone (one trimmed
`<ytid>.mp4` cannot be two segments). Clips already fetched are left alone.

Formats: the containers in `MEDIA_EXTS` (mp4, m4v, mov, mkv, webm, avi, flv, 3gp, ogv, ts, mpg, wmv, ... and audio
files); a file with another extension is imported when its name matches a clip and ffprobe finds audio or video in
it; sidecars (`SIDECAR_EXTS`: thumbnails, .info.json, .part, ...) never are.

Each match is hard-linked (or copied, across file systems or with `copy=True`) to a temporary name under
`ROOT/tmp/import/` (a symlink is resolved first, so raw/ never holds a link that points outside ROOT), hashed and
probed there, then moved onto `layout.raw_path_for` (`layout.place_raw`) and recorded as a `fetch` ok event with
`source="import"`: raw/ never gets a file without its event. A file that cannot be read (EACCES, EIO, a dangling
link) is recorded as an `error` and the import goes on. Two files for one clip (`<ytid>.mkv` and `<ytid>.mp4`): the
first in path order is imported, the other is reported as a `duplicate` naming it. Every file not imported is in
`ImportReport.not_imported` with its reason (unmatched, ambiguous_ytid, duplicate, already_fetched, not_media, error).

`register_files(root, {clip_id: path}, section_mode=..., section_start_s=...)` is the same placement and the same
event for a caller that already knows which clip each file is and where its t=0 lies (a synthetic corpus whose files
are whole videos): nothing is matched or probed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tgdp.core.lock import RunLock
from tgdp.pipeline import ledger
from tgdp.pipeline.fetch import fetch_event, tool_versions
from tgdp.pipeline.layout import manifest_path, place_raw, raw_target, safe_name
from tgdp.pipeline.status import clip_states
from tgdp.store.fs import file_sha256

__all__ = ["ImportReport", "import_clips", "register_files"]

# Containers and audio files ffmpeg reads; a file with another extension is imported when its name matches a clip and
# ffprobe finds an audio or video stream in it. Sidecars (thumbnails, metadata, partial downloads) never are.
MEDIA_EXTS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .flv .f4v .3gp .3g2 .ogv .ogg .ogm .ts .m2ts .mts .mpg .mpeg .vob .wmv .asf .mxf"
    " .nut .divx .m4a .wav .flac .opus .mp3 .aac .wma".split()
)
SIDECAR_EXTS = frozenset(
    ".jpg .jpeg .png .webp .gif .bmp .tif .tiff .json .txt .md .description .vtt .srt .ass .lrc .part .ytdl .tmp"
    " .temp .nfo .xml .csv .tsv .html .url .log .sha256 .md5".split()
)


@dataclass
class ImportReport:
    """What one import did. `not_imported` lists every file under the input dir that was not imported, as
    (path relative to it, reason, detail); reasons: unmatched, ambiguous_ytid, duplicate, already_fetched,
    not_media, error."""

    files: int = 0
    imported: int = 0
    already_fetched: int = 0
    not_imported: list[tuple[str, str, str]] = field(default_factory=list)

    def skip(self, name: str, reason: str, detail: str = "") -> None:
        self.not_imported.append((name, reason, detail))

    @property
    def unmatched(self) -> list[str]:
        return [f for f, r, _ in self.not_imported if r == "unmatched"]

    @property
    def ambiguous(self) -> list[str]:
        return [f for f, r, _ in self.not_imported if r == "ambiguous_ytid"]

    def as_dict(self) -> dict[str, Any]:
        """Counts, and each file not imported once (`not_imported_files`, with its reason and detail)."""
        by_reason = Counter(r for _, r, _ in self.not_imported)
        return {
            "files": self.files,
            "imported": self.imported,
            "already_fetched": self.already_fetched,
            "unmatched": len(self.unmatched),
            "duplicates": by_reason.get("duplicate", 0),
            "errors": by_reason.get("error", 0),
            "not_imported": len(self.not_imported),
            "not_imported_by_reason": dict(sorted(by_reason.items())),
            "not_imported_files": [{"file": f, "reason": r, "detail": d} for f, r, d in self.not_imported],
        }

    def lines(self, cap: int = 20) -> list[str]:
        """The report for a terminal: the counts, then each file not imported once (the first `cap`)."""
        out = [f"imported {self.imported} of {self.files} files (already fetched {self.already_fetched})"]
        out += [f"  not imported ({r}): {f}" + (f": {d}" if d else "") for f, r, d in self.not_imported[:cap]]
        if len(self.not_imported) > cap:
            out.append(f"  ... and {len(self.not_imported) - cap} more (--json lists every file)")
        return out


def _stage(src: Path, tmp_dir: Path, suffix: str, copy: bool) -> Path:
    """Hard-link (or copy) `src`, symlinks resolved, to a temporary name in `tmp_dir`; the caller moves it."""
    real = src.resolve(strict=True)  # a link to a link is never placed: raw/ holds regular files only
    tmp = tmp_dir / f"{uuid.uuid4().hex}{suffix}"
    if not copy:
        try:
            os.link(real, tmp)
        except OSError:
            copy = True
    if copy:
        shutil.copyfile(real, tmp)
    return tmp


def _is_media(path: Path) -> tuple[bool, str]:
    """Whether an unlisted extension holds audio or video ffprobe can read (only asked for names matching a clip)."""
    from tgdp.pipeline.media import MediaError, probe

    try:
        probe(path, timeout=60.0)
    except MediaError as exc:
        return False, exc.detail
    return True, ""


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


@dataclass(frozen=True, slots=True)
class _Prior:
    """What `import` needs of a clip's fetch state (`status.clip_states`)."""

    on_disk: bool  # the last fetch is ok and its file is in place: the clip is left alone
    attempts: int  # fetch events so far: the import's event is attempt `attempts + 1`


def _prior_fetches(root: Path) -> dict[str, _Prior]:
    """The fetch state of every manifest clip that has fetch events."""
    cs = clip_states(root, None, manifest_columns=(), check_files=False)
    on_disk = cs.fetched_on_disk(root)
    rows = np.flatnonzero(cs.fetch.has_event)
    ids = cs.manifest.column("clip_id").take(pa.array(rows)).to_pylist()
    return {cid: _Prior(bool(on_disk[i]), int(cs.attempts[i])) for cid, i in zip(ids, rows.tolist(), strict=True)}


@contextmanager
def _placement(root: Path) -> Iterator[tuple[Path, dict[str, _Prior], ledger.EventWriter]]:
    """ROOT's fetch lock held, a fresh staging dir ROOT/tmp/import, each clip's fetch state and a fetch event writer;
    the staging dir is removed when the block finishes."""
    lock = RunLock(root / "tmp" / "fetch.lock", what="fetch/import")
    try:
        tmp_dir = root / "tmp" / "import"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        states = _prior_fetches(root)
        with ledger.EventWriter(root, "fetch", flush_every=64) as writer:
            yield tmp_dir, states, writer
        shutil.rmtree(tmp_dir, ignore_errors=True)
    finally:
        lock.release()


def import_clips(root: Path, from_dir: Path, copy: bool = False) -> ImportReport:
    """Import matching media files under `from_dir` (recursively) into ROOT/raw as fetched clips."""
    root, from_dir = Path(root).resolve(), Path(from_dir)
    if not from_dir.is_dir():
        raise NotADirectoryError(f"{from_dir} is not a directory")
    columns = ["clip_id", "video_id", "ytid", "start_s", "end_s", "dataset", "source_file"]
    rows = pq.read_table(manifest_path(root), columns=columns).to_pylist()
    by_key: dict[str, dict[str, Any]] = {}
    by_ytid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_path: dict[str, list[dict[str, Any]]] = defaultdict(list)  # `files` clips: the media path under DIR
    for row in rows:
        if row["dataset"] == "files":
            by_path[row["source_file"]].append(row)
        keys = [row["clip_id"], safe_name(row["clip_id"])]
        if row["video_id"] != row["ytid"]:  # AudioSet video ids are bare ytids: those go through by_ytid
            keys.append(row["video_id"])
        for key in keys:
            by_key.setdefault(key, row)
        by_ytid[row["ytid"]].append(row)
    report = ImportReport()

    # Match every file first, so two files for one clip are seen (and reported) before anything is placed.
    candidates: dict[str, list[Path]] = defaultdict(list)
    row_of: dict[str, dict[str, Any]] = {}
    files = sorted(p for p in from_dir.rglob("*") if p.is_symlink() or p.is_file())
    report.files = len(files)
    for src in files:
        name = src.relative_to(from_dir).as_posix()
        stem, ext = src.name[: -len(src.suffix)] if src.suffix else src.name, src.suffix.lower()
        if ext in SIDECAR_EXTS:
            report.skip(name, "not_media", f"{ext} files are not audio/video")
            continue
        if name in by_path:  # one file of a `files` manifest feeds each of its windows
            for row in by_path[name]:
                candidates[row["clip_id"]].append(src)
                row_of[row["clip_id"]] = row
            continue
        row = by_key.get(stem)
        if row is None and stem in by_ytid:
            if len(by_ytid[stem]) > 1:
                report.skip(name, "ambiguous_ytid", f"ytid {stem} names {len(by_ytid[stem])} clips: name it by clip id")
                continue
            row = by_ytid[stem][0]
        if row is None:
            report.skip(name, "unmatched", "no manifest clip has this name (clip id, video id or ytid)")
            continue
        candidates[row["clip_id"]].append(src)
        row_of[row["clip_id"]] = row

    with _placement(root) as (tmp_dir, states, writer):
        for clip_id in sorted(candidates, key=lambda c: str(candidates[c][0])):
            row, srcs = row_of[clip_id], candidates[clip_id]
            st = states.get(clip_id)
            if st is not None and st.on_disk:
                report.already_fetched += 1
                for src in srcs:
                    report.skip(src.relative_to(from_dir).as_posix(), "already_fetched", clip_id)
                continue
            done: str | None = None
            for src in srcs:
                name = src.relative_to(from_dir).as_posix()
                if done is not None:
                    report.skip(name, "duplicate", f"{clip_id} was imported from {done}")
                    continue
                event = _import_one(root, tmp_dir, src, row, st, copy, report, name)
                if event is not None:
                    writer.add(event)
                    report.imported += 1
                    done = name
    return report


def _import_one(
    root: Path,
    tmp_dir: Path,
    src: Path,
    row: dict[str, Any],
    st: _Prior | None,
    copy: bool,
    report: ImportReport,
    name: str,
) -> dict[str, Any] | None:
    """Place one file and build its fetch event; an OS error or non-media file is recorded and yields None.

    Everything that can fail (reading, hashing, probing) happens on the temporary copy, so raw/ only ever gets a
    file whose event follows."""
    ext = src.suffix.lower()
    final = raw_target(root, row["clip_id"], src.suffix)
    tmp = None
    try:
        tmp = _stage(src, tmp_dir, final.suffix, copy)
        if ext not in MEDIA_EXTS:
            ok, detail = _is_media(tmp)
            if not ok:
                report.skip(name, "not_media", f"ffmpeg finds no audio or video: {detail}")
                return None
        size, digest = tmp.stat().st_size, file_sha256(tmp)
        origin = _time_origin(tmp, float(row["start_s"]), float(row["end_s"]))
        place_raw(tmp, final)
        tmp = None
    except OSError as exc:
        report.skip(name, "error", f"{type(exc).__name__}: {exc.strerror or exc}")
        return None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return _ok_event(root, row["clip_id"], final, size, digest, origin, st, "import")


def _ok_event(
    root: Path,
    clip_id: str,
    final: Path,
    size: int,
    digest: str,
    origin: dict[str, Any],
    st: _Prior | None,
    source: str,
) -> dict[str, Any]:
    """The `fetch` ok event of a placed file (`origin`: its `section_mode` and `section_start_s`), with exactly the
    event log's columns (`fetch.fetch_event`)."""
    ytv, ffv = tool_versions()
    event = {
        "clip_id": clip_id,
        "status": "ok",
        "reason": None,
        "transient": False,
        "attempt": (st.attempts if st else 0) + 1,
        "source": source,
        "session_id": source,
        "raw_path": final.relative_to(root).as_posix(),
        "file_bytes": size,
        "sha256": digest,
        **origin,
        "yt_dlp_version": ytv,
        "ffmpeg_version": ffv,
        "gave_up": False,
    }
    return fetch_event(event)


def register_files(
    root: Path,
    files: dict[str, Path],
    section_mode: str = "whole_file",
    section_start_s: float = 0.0,
    source: str = "register",
    copy: bool = False,
) -> int:
    """Record `files` (clip_id → media file) as fetched clips whose time origin the caller knows.

    Each file is placed like an imported one (staged under ROOT/tmp, hashed, renamed onto `layout.raw_path_for`) and
    gets the same `fetch` ok event, with `section_mode` / `section_start_s` as given instead of probed. Clips already
    fetched are left alone. A clip id the manifest does not have, or a file that cannot be read, is an error (the
    caller named them). Returns the number of clips registered."""
    root = Path(root).resolve()
    known = set(pq.read_table(manifest_path(root), columns=["clip_id"]).column("clip_id").to_pylist())
    unknown = sorted(set(files) - known)
    if unknown:
        raise ValueError(f"{len(unknown)} clip ids are not in the manifest of {root}, e.g. {unknown[:3]}")
    origin = {"section_mode": section_mode, "section_start_s": float(section_start_s)}
    registered = 0
    with _placement(root) as (tmp_dir, states, writer):
        for clip_id, src in sorted(files.items()):
            st = states.get(clip_id)
            if st is not None and st.on_disk:
                continue
            final = raw_target(root, clip_id, Path(src).suffix)
            tmp = _stage(Path(src), tmp_dir, final.suffix, copy)
            size, digest = tmp.stat().st_size, file_sha256(tmp)
            place_raw(tmp, final)
            writer.add(_ok_event(root, clip_id, final, size, digest, origin, st, source))
            registered += 1
    return registered
