"""Waiting in tests for an event (a file appearing, a line in a log, a request reaching the media server) instead of
sleeping a fixed time: a kill or a signal then lands at the same point on a fast and on a loaded machine."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["new_paths", "wait_for"]


def wait_for(
    condition: Callable[[], object],
    what: str,
    *,
    timeout_s: float = 60.0,
    proc: subprocess.Popen | None = None,
    poll_s: float = 0.01,
) -> bool:
    """Poll `condition()` until it is true: True. False when `proc` exits first (the caller decides whether that is
    a failure). At the deadline: AssertionError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            return bool(condition())
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
    return True


def new_paths(roots: Iterable[Path]) -> Callable[[], int]:
    """A counter of the paths that appear under `roots` from now on (each name counted once, also when it is
    renamed or removed again): call it to poll, compare it with an event number."""
    roots = list(roots)

    def listing() -> set[Path]:
        return {p for r in roots if r.exists() for p in r.rglob("*")}

    before, seen = listing(), set()

    def count() -> int:
        try:
            seen.update(listing() - before)
        except FileNotFoundError:  # a folder renamed while it was listed: the next poll sees its new name
            pass
        return len(seen)

    return count
