"""Where things live under a pipeline ROOT, and how a clip id becomes a safe file name.

ROOT/
  manifest/source.parquet      source manifest (`tgdp-data manifest`), one row per clip
  manifest/source.meta.json    input files, their hashes and row counts
  events/<stage>/*.parquet     append-only event log, one file per flush (see `tgdp.pipeline.ledger`)
  raw/<bucket>/<name>.<ext>    downloaded or imported media (`fetch`, `import`)
  features/<bucket>/<name>.npz validate's cached store payload per valid clip, packed and removed by `shard`
  export/                      filtered manifest and funnel (`export`)

Every file the package writes goes through `tgdp.core.atomic` (`atomic_path` / `atomic_write`): a temporary
`.tmp-<pid>-<name>` in the same directory, fsynced, then `os.replace`d onto its name, so a reader sees the old file
or the new one, never a torn one, and a crash leaves at most a `.tmp-*` file. The next run of that stage removes the
ones whose writer is gone (`remove_stale_temps`: validate under features/, export in its output directory);
`status` lists any left.

Clip ids come from untrusted CSVs (`--exec=...`, `../../etc/passwd`), so no file name is ever built from one
directly: `safe_name` keeps `[A-Za-z0-9_-]`, replaces the rest, and appends a hash of the full id so two ids
that sanitise alike never collide. A file name never starts with `-`, so it can't be read as an option.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path

from tgdp.core.atomic import TMP_PREFIX

__all__ = [
    "clip_id_for",
    "events_dir",
    "manifest_path",
    "place_raw",
    "raw_dir",
    "raw_path_for",
    "raw_target",
    "remove_stale_temps",
    "safe_name",
    "stale_temps",
    "temporaries",
    "within_root",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def clip_id_for(dataset: str, ytid: str, start_s: float) -> str:
    """Stable, sortable clip id `"{dataset}:{ytid}:{start_ms}"` (docs/ARCHITECTURE.md)."""
    return f"{dataset}:{ytid}:{int(round(start_s * 1000))}"


def safe_name(clip_id: str) -> str:
    """A file-system-safe, collision-free, option-safe name for a clip id."""
    digest = hashlib.sha1(clip_id.encode("utf-8")).hexdigest()[:10]
    stem = _UNSAFE.sub("_", clip_id)[:80]
    return f"c_{stem}_{digest}"


def manifest_path(root: Path) -> Path:
    return Path(root) / "manifest" / "source.parquet"


def events_dir(root: Path, stage: str) -> Path:
    if not re.fullmatch(r"[a-z_]+", stage):
        raise ValueError(f"bad stage name {stage!r}")
    return Path(root) / "events" / stage


def raw_dir(root: Path) -> Path:
    return Path(root) / "raw"


def raw_path_for(root: Path, clip_id: str, ext: str) -> Path:
    """Final location of a clip's media file; buckets of 256 keep directories small at 2M clips."""
    ext = _UNSAFE.sub("", ext.lstrip("."))[:8] or "bin"
    name = safe_name(clip_id)
    return raw_dir(root) / name[-2:] / f"{name}.{ext}"


def raw_target(root: Path, clip_id: str, ext: str) -> Path:
    """`raw_path_for`, refusing a path that would leave ROOT (a downloaded or imported file is about to go there)."""
    final = raw_path_for(root, clip_id, ext)
    if not within_root(root, final):
        raise RuntimeError(f"refusing to write outside ROOT: {final}")
    return final


def place_raw(src: Path, final: Path) -> Path:
    """Move a finished media file (hashed and probed under ROOT/tmp, the same file system) onto its raw/ path with
    one `os.replace`, first removing a copy with another extension left by an earlier attempt: a clip has one file."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for other in final.parent.glob(f"{final.stem}.*"):
        if other != final:
            other.unlink(missing_ok=True)
    os.replace(src, final)
    return final


def within_root(root: Path, path: Path) -> bool:
    """True when `path` resolves inside `root` (guards every write derived from external input)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


STALE_TEMP_S = 3600.0  # a temporary untouched this long has no live writer (each is written in seconds at most)


def _writer_gone(path: Path, now: float) -> bool:
    """Whether the process named in `.tmp-<pid>-...` is gone (no such pid here), or the file is older than
    STALE_TEMP_S (the pid may have been reused, or the writer ran on another host)."""
    try:
        age = now - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    if age > STALE_TEMP_S:
        return True
    pid = path.name[len(TMP_PREFIX) :].split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def temporaries(directory: Path, depth: int = 0) -> list[Path]:
    """The `.tmp-*` entries (files or folders) in `directory`, or in its sub-folders `depth` levels down, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(directory.glob("/".join(["*"] * depth + [f"{TMP_PREFIX}*"])))


def stale_temps(directory: Path, depth: int = 0) -> list[Path]:
    """`temporaries(directory, depth)` whose writer is gone."""
    now = time.time()
    return [p for p in temporaries(directory, depth) if _writer_gone(p, now)]


def remove_stale_temps(directory: Path, depth: int = 0) -> list[Path]:
    """Remove `stale_temps(directory, depth)` (a killed writer's debris); returns what was removed."""
    removed = stale_temps(directory, depth)
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return removed
