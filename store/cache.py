"""The node-local shard cache: a remote split's shards, downloaded whole, once per node, for every process.

A shard is stored under its sha256 (`CACHE/ab/<sha256>.arrow`), so two stores or two runs holding the same shard
share one copy and a changed shard can never be mistaken for the old one. The download goes to a temporary name,
is hashed on the way and renamed into place only when its sha256 equals index.json's; a partial or corrupt file is
never visible. DataLoader workers and torchrun ranks on one node share the directory: an exclusive `flock` per shard
(`tgdp.core.lock.RunLock` in its waiting mode) makes one of them download while the others wait and then map the
same file. A size limit evicts the least recently used shards (by mtime, refreshed on every use) before a download;
a mapped shard that is evicted stays readable by the processes that mapped it (POSIX unlink semantics).

Prefetch: `prefetch(split, shards)` downloads shards on a small per-process thread pool (`prefetch_workers`
concurrent downloads) through the same `fetch`, so the temporary name, the sha256 check and the per-shard `flock`
hold for them too: a reader that needs a shard still being prefetched waits on its lock, then maps the complete
file. A failed prefetch is dropped; the reader's own `fetch` retries it and raises the error.

Faults: a failed download is retried with exponential backoff (`attempts`, `backoff_s`) and then becomes one
`RemoteError` naming the shard and the URI; a sha256 mismatch is a `StoreError` naming the shard.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tgdp.core.atomic import TMP_PREFIX, commit_temp, temp_path
from tgdp.core.lock import RunLock
from tgdp.store.format import ShardEntry, StoreError
from tgdp.store.fs import Location, RemoteError, file_sha256

__all__ = ["ShardCache", "default_cache"]

log = logging.getLogger(__name__)

DEFAULT_LIMIT_BYTES = 200 << 30
DEFAULT_PREFETCH_WORKERS = 2


class ShardCache:
    """`fetch(split, shard) -> Path`: the local, sha256-checked copy of one shard of a remote split."""

    def __init__(
        self,
        root: str | os.PathLike,
        limit_bytes: int = DEFAULT_LIMIT_BYTES,
        attempts: int = 4,
        backoff_s: float = 0.5,
        prefetch_workers: int = DEFAULT_PREFETCH_WORKERS,
    ) -> None:
        self.root = Path(root)
        self.limit_bytes, self.attempts, self.backoff_s = int(limit_bytes), int(attempts), float(backoff_s)
        self.prefetch_workers = int(prefetch_workers)
        self.downloads = 0  # shards this process downloaded (the rest were already cached)
        self._count = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # created on first prefetch, in the process that uses it
        self._pool_pid: int | None = None
        self._pending: dict[str, Future] = {}

    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in ("root", "limit_bytes", "attempts", "backoff_s", "prefetch_workers")}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def path_of(self, shard: ShardEntry) -> Path:
        return self.root / shard.sha256[:2] / f"{shard.sha256}.arrow"

    def fetch(self, split: Location, shard: ShardEntry) -> Path:
        path = self.path_of(shard)
        if _complete(path, shard):
            os.utime(path)
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        # one download per node: the others wait, then find it complete
        with RunLock(self.root / f".lock-{shard.sha256[:16]}", what="shard download", wait=True):
            if not _complete(path, shard):
                self._evict(shard.bytes)
                self._download(split, shard, path)
            os.utime(path)
        return path

    def touch(self, shard: ShardEntry) -> None:
        """Mark a cached shard as just used (its mtime orders the LRU eviction); a missing one is ignored."""
        try:
            os.utime(self.path_of(shard))
        except FileNotFoundError:
            pass

    def prefetch(self, split: Location, shards: Iterable[ShardEntry]) -> None:
        """Start downloading `shards` (in this order) in the background; cached or already queued ones are skipped.
        A no-op with `prefetch_workers=0`."""
        if self.prefetch_workers < 1:
            return
        if self._pool is None or self._pool_pid != os.getpid():  # a forked worker gets its own threads
            self._pool = ThreadPoolExecutor(self.prefetch_workers, thread_name_prefix="tgdp-prefetch")
            self._pool_pid, self._pending = os.getpid(), {}
        self._pending = {k: f for k, f in self._pending.items() if not f.done()}
        for shard in shards:
            if shard.sha256 not in self._pending and not _complete(self.path_of(shard), shard):
                self._pending[shard.sha256] = self._pool.submit(self._prefetch_one, split, shard)

    def _prefetch_one(self, split: Location, shard: ShardEntry) -> None:
        try:
            self.fetch(split, shard)
        except Exception as exc:  # the reader's own fetch retries this shard and raises the error
            log.debug("prefetch of %s failed: %s", shard.file, str(exc).splitlines()[0][:200])

    def wait(self) -> None:
        """Block until every prefetch queued so far has finished (or failed)."""
        for future in list(self._pending.values()):
            future.exception()

    def close(self) -> None:
        """Stop prefetching: queued downloads are cancelled, running ones finish."""
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool, self._pending = None, {}

    def _download(self, split: Location, shard: ShardEntry, path: Path) -> None:
        tmp = temp_path(path)
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                split.download(tmp, shard.file)
                break
            except (RemoteError, OSError) as exc:
                tmp.unlink(missing_ok=True)
                if attempt == self.attempts:
                    raise RemoteError(
                        f"downloading shard {shard.file} from {split.child(shard.file)} failed after {attempt} "
                        f"attempts: {str(exc).splitlines()[0][:200]}"
                    ) from None
                time.sleep(delay)
                delay *= 2
        digest = file_sha256(tmp)
        if digest != shard.sha256:
            tmp.unlink(missing_ok=True)
            raise StoreError(
                f"shard {shard.file} of {split} is corrupt: sha256 {digest[:12]}… of the downloaded object, index.json "
                f"says {shard.sha256[:12]}…; re-run `tgdp-data shard` on the store"
            )
        commit_temp(tmp, path)
        with self._count:
            self.downloads += 1

    def _evict(self, incoming: int) -> None:
        """Delete least recently used shards until `incoming` more bytes fit under the limit."""
        files = [p for p in self.root.glob("*/*.arrow") if not p.name.startswith(TMP_PREFIX)]
        stats = sorted(((p.stat().st_mtime, p.stat().st_size, p) for p in files), key=lambda t: t[0])
        used = sum(size for _, size, _ in stats)
        for _, size, p in stats:
            if used + incoming <= self.limit_bytes:
                break
            p.unlink(missing_ok=True)
            used -= size

    def cached_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*/*.arrow"))


def _complete(path: Path, shard: ShardEntry) -> bool:
    try:
        return path.stat().st_size == shard.bytes
    except FileNotFoundError:
        return False


def default_cache() -> ShardCache:
    """The node's cache: `$TGDP_STORE_CACHE` (default ~/.cache/tgdp/shards), limit `$TGDP_STORE_CACHE_GB`."""
    root = os.environ.get("TGDP_STORE_CACHE") or Path.home() / ".cache" / "tgdp" / "shards"
    limit = float(os.environ.get("TGDP_STORE_CACHE_GB", DEFAULT_LIMIT_BYTES / (1 << 30)))
    return ShardCache(root, int(limit * (1 << 30)))
