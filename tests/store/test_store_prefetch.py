"""Prefetch of a remote split's shards (block shuffle) on the real S3 server: each shard is downloaded once per node
even when two processes' prefetch pools and their readers race, no partial file ever appears under its cache name,
prefetch stays `ahead` shards ahead of reading, and a TrainStream that prefetches resumes exactly."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.store.store_support import write_split
from tgdp.core.atomic import TMP_PREFIX
from tgdp.store import Store
from tgdp.store.cache import ShardCache
from tgdp.store.fs import Location, location
from tgdp.store.sampling import epoch_order
from tgdp.train.data import DataState, TrainStream


def _slow_downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every download writes half the object, pauses, then the rest (a window for a reader to meet it half done)."""
    real, calls, lock = Location.download, [], threading.Lock()

    def slow(self: Location, dest: Path, *names: str) -> None:
        with lock:
            calls.append(names[-1])
        real(self, dest, *names)
        data = Path(dest).read_bytes()
        with open(dest, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            time.sleep(0.05)
            out.write(data[len(data) // 2 :])

    monkeypatch.setattr(Location, "download", slow)
    return calls


def test_prefetch_downloads_each_shard_once_and_never_exposes_a_partial_file(
    s3: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = write_split(s3["uri"], tmp_path / "st", n=12)
    write_split(tmp_path / "local", tmp_path / "st2", n=12)
    ref = Store.open(tmp_path / "local", "train")
    want = {e.sha256: e for e in index.shards}
    assert len(want) >= 4
    calls = _slow_downloads(monkeypatch)
    root, bad, stop = tmp_path / "cache", [], threading.Event()

    def watch() -> None:  # every file under its final name must be complete and match index.json
        while not stop.is_set():
            for p in root.glob("*/*.arrow"):
                if not p.name.startswith(TMP_PREFIX) and hashlib.sha256(p.read_bytes()).hexdigest() != p.stem:
                    bad.append(p.name)

    watcher = threading.Thread(target=watch)
    watcher.start()
    split = location(s3["uri"]).child("train")
    caches = [ShardCache(root, prefetch_workers=3) for _ in range(2)]  # two ranks of one node, one cache dir
    stores = [Store(split, c) for c in caches]
    rows = epoch_order([e.rows for e in index.shards], 0, 0, "block", 2)
    try:
        for st in stores:
            st.prefetch(rows, ahead=len(index.shards))
        for i in rows:  # both "ranks" read while both pools download
            for st in stores:
                np.testing.assert_array_equal(st.segment(int(i), 1, 32), ref.segment(int(i), 1, 32))
    finally:
        for c in caches:
            c.close()
        stop.set()
        watcher.join()
    assert not bad, f"partial or corrupt shard visible under its cache name: {bad}"
    assert sorted(calls) == sorted(e.file for e in index.shards)  # each shard downloaded once on the node
    assert sum(c.downloads for c in caches) == len(index.shards)
    assert sorted(p.stem for p in root.glob("*/*.arrow")) == sorted(want)


def test_prefetch_stays_ahead_shards_ahead_of_reading(s3: dict, tmp_path: Path) -> None:
    index = write_split(s3["uri"], tmp_path / "st", n=12)
    cache = ShardCache(tmp_path / "cache", prefetch_workers=2)
    st = Store(location(s3["uri"]).child("train"), cache)
    rows = epoch_order([e.rows for e in index.shards], 0, 0, "block", 1)
    shard_of = np.searchsorted(np.cumsum([e.rows for e in index.shards]), rows, side="right")
    first_use = list(dict.fromkeys(shard_of.tolist()))

    def cached() -> set[int]:
        cache.wait()  # the downloads queued so far
        have = {p.stem for p in (tmp_path / "cache").glob("*/*.arrow")}
        return {k for k, e in enumerate(index.shards) if e.sha256 in have}

    st.prefetch(rows, ahead=1)
    assert cached() == set(first_use[:1])  # nothing read yet: only the first shard of the plan
    st.segment(int(rows[0]), 0, 32)
    assert cached() == set(first_use[:2])  # reading shard 1 of the plan fetches shard 2, no further
    cache.prefetch_workers = 0
    st.prefetch(rows, ahead=4)  # prefetch off: nothing more is downloaded ahead of reading
    assert cached() == set(first_use[:2])


class _Rows:
    """The smallest dataset TrainStream needs over a real Store: a sample is its row index and one segment."""

    def __init__(self, store: Store, path: str) -> None:
        self.store, self.store_path = store, path

    def __len__(self) -> int:
        return len(self.store)

    def sample(self, i: int, epoch: int) -> dict[str, Any]:
        return {"index": i, "seg": self.store.segment(i, epoch % 2, 32)}


def test_a_prefetching_block_stream_resumes_exactly(s3: dict, tmp_path: Path) -> None:
    index = write_split(s3["uri"], tmp_path / "st", n=12)
    split = location(s3["uri"]).child("train")

    def stream(start: DataState | None, cache: str) -> TrainStream:
        ds = _Rows(Store(split, ShardCache(tmp_path / cache, prefetch_workers=2)), s3["uri"])
        return TrainStream(ds, micro_batch=2, seed=5, start=start, block_shards=2)  # auto -> block (remote)

    full = stream(None, "c1")
    assert full.shuffle_mode == "block"
    it = iter(full)
    batches = [next(it) for _ in range(9)]  # one epoch of 6 batches and into the next
    assert full.dataset.store._cache.downloads == len(index.shards)  # the epoch downloaded each shard once
    resumed = iter(stream(full.state_after(batches[3]), "c2"))
    for want in batches[4:]:
        got = next(resumed)
        assert (got["epoch"], got["batch"]) == (want["epoch"], want["batch"])
        assert got["index"].tolist() == want["index"].tolist()
        np.testing.assert_array_equal(got["seg"].numpy(), want["seg"].numpy())


def test_a_warm_remote_store_keeps_its_shards_mapped_across_epochs_unless_evicted(
    s3: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = write_split(s3["uri"], tmp_path / "st", n=30)
    assert len(index.shards) > 8  # more than the old fixed cap of 8 mapped shards
    split = location(s3["uri"]).child("train")
    opened: list[str] = []
    real_open = Store._open_shard
    monkeypatch.setattr(Store, "_open_shard", lambda self, sh: (opened.append(sh.file), real_open(self, sh))[1])
    st = Store(split, ShardCache(tmp_path / "cache"))
    for _ in range(2):  # two epochs: the second maps nothing again (re-mapping re-faults every page)
        for i in epoch_order([e.rows for e in index.shards], 0, 0, "block", 2):
            st.segment(int(i), 0, 32)
    assert sorted(opened) == sorted(e.file for e in index.shards)
    small = ShardCache(tmp_path / "small", limit_bytes=3 * max(e.bytes for e in index.shards))
    st = Store(split, small)
    for i in range(len(st)):  # the cache evicts as it goes: evicted shards are unmapped, freeing their disk
        st.segment(i, 0, 32)
    cached = {p.stem for p in (tmp_path / "small").glob("*/*.arrow")}
    assert len(cached) <= 3 and {index.shards[k].sha256 for k in st._mapped} <= cached
