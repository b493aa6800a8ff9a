"""A second process that holds a pipeline lock (validate's ROOT lock, shard's STORE lock) until released."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["held_lock"]


@contextmanager
def held_lock(module: str, function: str, path: Path) -> Iterator[subprocess.Popen]:
    """Run `module.function(path)` in another process and yield it once it holds the lock; release on exit."""
    code = (
        f"import sys; from {module} import {function}; l = {function}(sys.argv[1]);"
        " print('held', flush=True); sys.stdin.read(); l.release()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
