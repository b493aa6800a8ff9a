"""The run lock: one run at a time per ROOT stage (fetch/import, validate) or per STORE (shard), and one download
per shard in the node-local shard cache (`wait=True`: the others wait, then find the shard complete).

An exclusive `flock` on a lock file, held for the whole run (non-blocking: a second run is refused at once). The
kernel releases it if the process dies, so a stale file never blocks a rerun. The holder writes its pid, host, start
time and what it is into the file, and a refused run's error quotes them. The file is removed on release (so it
never shows up in a finished store); a run that locked a file another one had just removed checks the inode and
locks the new file instead (this is also how a waiting run moves on to a fresh file).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from tgdp.core.errors import TgdpError

__all__ = ["LockedError", "RunLock"]


class LockedError(TgdpError, RuntimeError):
    """Another run holds the lock; the message names the file and the holder (pid, host, start)."""


class RunLock:
    """Exclusive lock on `path` for one run; a held lock raises `error` (LockedError unless a caller's own class)
    with "another <what> run holds <path> (pid P on H, started T); wait for it or stop it", or with `wait` blocks
    until the holder releases it."""

    def __init__(self, path: Path | str, what: str, error: type[Exception] = LockedError, wait: bool = False) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        while True:
            fh = open(path, "a+")  # noqa: SIM115 - held for the whole run
            try:
                fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = _holder_text(fh.read())
                fh.close()
                raise error(f"another {what} run holds {path}{holder}; wait for it or stop it") from None
            try:
                same = os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            fh.close()  # the previous holder removed the file between our open and our lock: lock the new one
        self.fh = fh
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "what": what,
        }
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(info) + "\n")
        fh.flush()

    def release(self) -> None:
        """Remove the file and unlock (idempotent)."""
        if self.fh.closed:
            return
        self.path.unlink(missing_ok=True)  # while still locked: nobody can be holding the file we remove
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder_text(text: str) -> str:
    try:
        info = json.loads(text)
        return f" (pid {info['pid']} on {info['host']}, started {info['started']})"
    except (ValueError, KeyError, TypeError):
        return ""
