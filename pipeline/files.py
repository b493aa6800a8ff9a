"""The `files` dataset: a folder of your own media → ROOT/manifest/source.parquet, no YouTube ids needed.

`tgdp-data manifest ROOT --dataset files --from DIR [--csv clips.csv]`. Every media file under DIR (recursively,
extensions `importer.MEDIA_EXTS`) is a clip:
- its id is its path under DIR without the extension (the file stem for a flat folder), any string without control
  characters, at most 200 characters, no leading/trailing space; the clip id is `files:<id>:<start_ms>`;
- its window is the whole file (start 0, end = ffprobe's duration; a file ffprobe cannot read gets a nominal 10-s
  window and `validate` drops it with its reason), or the CSV's start/end;
- its split is `train`, or `eval` for a deterministic `manifest.eval_fraction` of the ids (by hash, so every window
  of one file lands in the same split), or the CSV's.

The optional CSV has a header; `file` (path under DIR, or a file name/stem when that is unique) is required, the
others optional: `id`, `start_s`, `end_s`, `labels` (`;`-separated), `split` (train | eval | test). A file may have
several rows (several windows); a media file the CSV does not name is still a whole-file clip with the default split.
A bad row is a `ManifestIssue` (missing_file, ambiguous_file, bad_id, bad_timestamp, end_before_start, bad_split,
duplicate_clip_id), handled as for the other datasets (`manifest.skip_bad`). `source_file` is the media file's path
under DIR, which `tgdp-data import ROOT --from DIR` matches first (so one file can feed several windows).
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tgdp.pipeline.layout import clip_id_for
from tgdp.pipeline.manifest import (
    SOURCE_SCHEMA,
    ManifestConfig,
    ManifestError,
    ManifestIssue,
    ManifestResult,
    check_dropped_clips,
    file_hashes,
    write_manifest,
)
from tgdp.pipeline.parallel import map_threads

__all__ = ["FILES_SPLITS", "NOMINAL_WINDOW_S", "build_files_manifest", "media_files"]

FILES_SPLITS = ("train", "eval", "test")
NOMINAL_WINDOW_S = 10.0  # the window of a file ffprobe cannot read: validate drops it with the reason
_SAFE_ID = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
_COLUMNS = ("file", "id", "start_s", "end_s", "labels", "split")


@dataclass(frozen=True)
class _Row:
    file: str  # path under DIR
    id: str
    start_s: float
    end_s: float | None  # None: the whole file (ffprobe's duration)
    labels: tuple[str, ...]
    split: str | None  # None: the default split
    line: int  # CSV line (0: no CSV row)


def media_files(from_dir: Path) -> tuple[list[str], list[str]]:
    """(media files, other files) under `from_dir`, as sorted paths relative to it."""
    from tgdp.pipeline.importer import MEDIA_EXTS

    found = sorted(p.relative_to(from_dir).as_posix() for p in from_dir.rglob("*") if p.is_file())
    media = [f for f in found if Path(f).suffix.lower() in MEDIA_EXTS]
    return media, [f for f in found if Path(f).suffix.lower() not in MEDIA_EXTS]


def _default_id(file: str) -> str:
    return file[: -len(Path(file).suffix)] if Path(file).suffix else file


def _parse_time(text: str | None) -> float | None | str:
    """A CSV time: None when empty, a finite float ≥ 0, else "bad"."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return "bad"
    return value if math.isfinite(value) and value >= 0 else "bad"


def _csv_row(rec: dict[str, str | None], line: int, name: str, file: str) -> _Row | ManifestIssue:
    """One CSV record naming media file `file` → a row, or the issue that stops it."""
    start, end = _parse_time(rec.get("start_s")), _parse_time(rec.get("end_s"))
    if start == "bad" or end == "bad":
        return ManifestIssue(name, line, "bad_timestamp", f"start/end {rec.get('start_s')!r}, {rec.get('end_s')!r}")
    start = start or 0.0
    if end is not None and end <= start:
        return ManifestIssue(name, line, "end_before_start", f"end {end} <= start {start}")
    split = (rec.get("split") or "").strip() or None
    if split is not None and split not in FILES_SPLITS:
        return ManifestIssue(name, line, "bad_split", f"split {split!r} is not one of {'|'.join(FILES_SPLITS)}")
    labels = tuple(lb.strip() for lb in (rec.get("labels") or "").split(";") if lb.strip())
    clip = (rec.get("id") or "").strip() or _default_id(file)
    return _Row(file, clip, float(start), end, labels, split, line)


def _read_csv(path: Path, media: list[str]) -> tuple[list[_Row], list[ManifestIssue], set[str]]:
    """The CSV's rows, its issues and the media files it names (module docstring); `media` are the files a row may
    name."""
    by_path = set(media)
    by_name: dict[str, list[str]] = {}
    for f in media:
        for key in {Path(f).name, _default_id(Path(f).name)}:
            by_name.setdefault(key, []).append(f)

    def resolve(text: str) -> tuple[str | None, str]:
        if text in by_path:
            return text, ""
        hits = by_name.get(text, [])
        return (hits[0], "") if len(hits) == 1 else (None, "ambiguous_file" if hits else "missing_file")

    rows: list[_Row] = []
    issues: list[ManifestIssue] = []
    named: set[str] = set()
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        if "file" not in header or set(header) - set(_COLUMNS):
            raise ManifestError(f"{path}: the header must name `file` and only {', '.join(_COLUMNS)}; got {header}")
        reader.fieldnames = header
        for rec in reader:
            file, why = resolve((rec.get("file") or "").strip())
            if file is None:
                issues.append(ManifestIssue(path.name, reader.line_num, why, f"file {rec.get('file')!r}"))
                continue
            named.add(file)
            result = _csv_row(rec, reader.line_num, path.name, file)
            (issues if isinstance(result, ManifestIssue) else rows).append(result)
    return rows, issues, named


def _durations(from_dir: Path, files: list[str]) -> dict[str, float | None]:
    """ffprobe's duration of each file (None when it cannot be read), a few ffprobe processes at a time."""
    from tgdp.pipeline.media import MediaError, probe

    def one(f: str) -> float | None:
        try:
            return probe(from_dir / f, timeout=60.0).duration_s
        except MediaError:
            return None

    return dict(zip(files, map_threads(one, files, workers=4), strict=True))


def _in_eval(clip: str, fraction: float) -> bool:
    return int(hashlib.sha1(clip.encode("utf-8")).hexdigest()[:8], 16) < fraction * 2**32


def _check_rows(rows: list[_Row], csv_name: str) -> tuple[list[_Row], list[ManifestIssue]]:
    """Rows with a safe id and a clip id not seen before; a `bad_id` / `duplicate_clip_id` issue for the others."""
    kept: list[_Row] = []
    issues: list[ManifestIssue] = []
    seen: dict[str, _Row] = {}
    for row in rows:
        where = csv_name if row.line else row.file
        if not _SAFE_ID.fullmatch(row.id) or row.id != row.id.strip():
            issues.append(ManifestIssue(where, row.line, "bad_id", f"{row.id[:60]!r}: control characters, "
                                        "leading/trailing space or over 200 characters"))  # fmt: skip
            continue
        cid = clip_id_for("files", row.id, row.start_s)
        if cid in seen:
            issues.append(ManifestIssue(where, row.line, "duplicate_clip_id", f"{cid} is also {seen[cid].file}"))
            continue
        seen[cid] = row
        kept.append(row)
    return kept, issues


def _table(rows: list[_Row], durations: dict[str, float | None], eval_fraction: float) -> pa.Table:
    """source.parquet's table (`SOURCE_SCHEMA`, sorted by clip id)."""
    out: list[dict[str, Any]] = []
    for r in rows:
        split = r.split or ("eval" if _in_eval(r.id, eval_fraction) else "train")
        end = r.end_s if r.end_s is not None else durations.get(r.file)
        if end is None or end <= r.start_s:
            end = r.start_s + NOMINAL_WINDOW_S
        out.append(dict(clip_id=clip_id_for("files", r.id, r.start_s), video_id=r.id, dataset="files", split=split,
                        ytid=r.id, start_s=r.start_s, end_s=float(end), labels=list(r.labels),
                        source_file=r.file, source_line=r.line))  # fmt: skip
    out.sort(key=lambda d: d["clip_id"])
    eval_ids = {d["ytid"] for d in out if d["split"] != "train"}
    for d in out:
        d["leak_eval_overlap"] = d["split"] == "train" and d["ytid"] in eval_ids
    return pa.Table.from_pylist(out, schema=SOURCE_SCHEMA)


def build_files_manifest(root: Path, cfg: ManifestConfig, force: bool = False) -> ManifestResult:
    """The `files` dataset's manifest (module docstring): source.parquet, source.meta.json (and rejected.parquet).
    Dropping clips that already have events needs `force`, as for the official lists."""
    if not cfg.from_dir:
        raise ManifestError("the files dataset reads a folder: pass --from DIR (manifest.from_dir)")
    from_dir = Path(cfg.from_dir)
    if not from_dir.is_dir():
        raise ManifestError(f"{from_dir} is not a directory: pass the folder holding your media with --from DIR")
    if len(cfg.csv) > 1:
        raise ManifestError(
            f"the files dataset takes at most one --csv (file,id,start_s,end_s,labels,split); got {cfg.csv}"
        )
    media, other = media_files(from_dir)
    rows, issues, named = _read_csv(Path(cfg.csv[0]), media) if cfg.csv else ([], [], set())
    rows += [_Row(f, _default_id(f), 0.0, None, (), None, 0) for f in media if f not in named]
    rows, bad = _check_rows(rows, Path(cfg.csv[0]).name if cfg.csv else "")
    issues += bad
    if issues and not cfg.skip_bad:
        raise ManifestError(f"{len(issues)} malformed row(s); fix the input or set manifest.skip_bad=true", issues)
    if not rows:
        raise ManifestError(
            f"no clips: {len(media)} media files under {from_dir}, {len(issues)} rejected, {len(other)} other files"
            f" (media extensions: .mp4 .mkv .webm .avi .mov .wav ...)",
            issues,
        )
    whole = sorted({r.file for r in rows if r.end_s is None})
    durations = _durations(from_dir, whole)
    table = _table(rows, durations, cfg.eval_fraction)
    warnings: list[str] = []
    check_dropped_clips(root, table.column("clip_id"), force, warnings)
    unreadable = sum(d is None for d in durations.values())
    inputs = [{"path": str(from_dir.resolve()), "role": "media_dir", "media_files": len(media),
               "other_files": other[:100], "unreadable_duration": unreadable}]  # fmt: skip
    if cfg.csv:
        sha, blob, size = file_hashes(Path(cfg.csv[0]))
        inputs.append({"path": cfg.csv[0], "role": "clips_csv", "sha256": sha, "git_blob": blob, "bytes": size})
    leak = sum(table.column("leak_eval_overlap").to_pylist())
    return write_manifest(root, table, issues, dataset="files", inputs=inputs, warnings=warnings, leak_count=leak)
