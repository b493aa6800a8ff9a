"""Atomic files: the one tmp-then-rename every writer of tgdp uses (pipeline ROOT files, store shards and indexes,
checkpoints, run configs, embedding tables).

A file is written under a temporary name `.tmp-<pid>-<name>` in its own directory (same file system, so the rename
is atomic; the pid keeps two processes writing the same file apart), fsynced, then `os.replace`d onto its name: a
reader sees the old file or the new one, never a torn one, and a crash leaves at most a `.tmp-*` file, which the
next run of that writer removes (`tgdp.pipeline.layout.remove_stale_temps`,
`tgdp.train.checkpoint.remove_stale_temporaries`, the store's staging clean-up).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["TMP_PREFIX", "atomic_path", "atomic_write", "commit_temp", "temp_path"]

TMP_PREFIX = ".tmp-"  # the one temporary-name scheme: `.tmp-<pid>-<name>`, next to the file it becomes
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


def temp_path(path: Path | str) -> Path:
    """The temporary name `path` is written under: `.tmp-<pid>-<name>` in the same directory."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")


def commit_temp(tmp: Path | str, path: Path | str, exclusive: bool = False) -> Path:
    """fsync the finished temporary file `tmp`, then `os.replace` it onto `path` (the package's one such rename).

    exclusive: publish with a hard link instead, which fails with FileExistsError when `path` exists (the ledger
    claims sequence-numbered names this way); `tmp` is removed after a successful link. On a file system without
    hard links the name is claimed with an exclusive create, then replaced (a reader may meet it empty for an
    instant: the ledger skips empty files)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if not exclusive:
        os.replace(tmp, path)
        return Path(path)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.replace(tmp, path)
        return Path(path)
    Path(tmp).unlink()
    return Path(path)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield the temporary path for `path`, for writers that stream to a path (pyarrow writers, np.savez, ffmpeg,
    torch.save through an open file).

    A clean exit commits it (`commit_temp`: fsync, rename onto `path`); any exception removes it and propagates.
    """
    tmp = temp_path(path)
    try:
        yield tmp
        commit_temp(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path | str, data: bytes | str) -> Path:
    """Write `data` (str as UTF-8) to `path` atomically (`atomic_path`); returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
