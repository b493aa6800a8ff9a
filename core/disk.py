"""The full-disk probe every writer's message uses: which errno means "full", the free space at a path whose file
may not exist yet, and the full-disk error inside a chain of exceptions."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

__all__ = ["DISK_FULL_ERRNOS", "disk_full", "disk_usage_at", "existing_ancestor", "free_space"]

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # a write failed because the file system (or quota) is full


def existing_ancestor(path: Path | str) -> Path:
    """`path` itself, or its nearest ancestor that exists (the file a failed write was making may not)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def disk_usage_at(path: Path | str) -> Any:
    """`shutil.disk_usage` (total, used, free bytes) of the file system holding `path` (read at its nearest existing
    ancestor); None when it cannot be read. The one free-space probe of every writer's full-disk message."""
    try:
        return shutil.disk_usage(existing_ancestor(path))
    except OSError:
        return None


def free_space(directory: Path | str) -> str:
    """'N MiB free of M MiB' for the file system holding `directory`."""
    usage = disk_usage_at(directory)
    if usage is None:
        return "free space unknown"
    return f"{usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.1f} MiB"


def disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT error in `exc` or its cause/context chain, else None (`torch.save` may raise its own
    RuntimeError first and the OSError only when the file is closed)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError) and cur.errno in DISK_FULL_ERRNOS:
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None
