"""The store reader: `Store`, one split, opened from a directory or an object-store URI.

Each shard is memory-mapped when one of its rows is first read (`pa.memory_map` + `pa.ipc.open_stream(...)
.read_all()`), so `fbank(i)` is a zero-copy numpy view into the page cache and a DataLoader worker costs a few MB.
Mmaps are opened lazily, per process: a pickled or forked Store re-opens its files in the worker on first use. A
remote split (`s3://…`) is read through the node's shard cache (`tgdp.store.cache.ShardCache`): each shard is
downloaded whole, checked against its sha256 in index.json, then mapped like a local one. `prefetch(rows, ahead)`
tells a remote Store the rows this process reads next: the shards they touch, in order of first use, are downloaded
in the background, up to `ahead` shards beyond the furthest one mapped so far (block shuffle: the next block).

Hot path (a training sample = one frame + its segment): row → (batch, offset) is a `bisect` over precomputed batch
starts, JPEG and fbank offsets are numpy views of the Arrow buffers computed once per record batch, and `segment`
converts + normalises float16 → float32 in ONE gather through a 65,536-entry table (bit-identical to
`(x.astype(float32) − mean) / std`), so no Arrow scalar or Python object is built per sample.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tgdp.store.format import INDEX_FILE, ShardEntry, StoreError, StoreIndex, fbank_values, segment_start
from tgdp.store.fs import Location, location

__all__ = ["Store"]

_HEAVY = ("fbank", "frames_jpeg")
# Shards a process keeps mapped from a remote split. A mapped shard the cache has evicted still holds its disk space,
# so such mappings are dropped whenever a new shard is mapped; the others stay mapped (re-mapping a shard every epoch
# re-faults its pages: a warm cache then read at 0.58x local on a 24-shard store that fits in the page cache).
MAX_MAPPED_REMOTE = 64


class _Batch:
    """Numpy views of one record batch of a shard (all zero-copy into the mmap)."""

    def __init__(self, batch: pa.RecordBatch, target_length: int, num_mel_bins: int, num_frames: int) -> None:
        self.batch = batch
        self.fbank_values, self.fbank_starts = fbank_values(batch)
        self.fbank_shape = (target_length, num_mel_bins)
        frames = batch.column("frames_jpeg").flatten()
        bufs = frames.buffers()  # [validity, int32 offsets, data]; offsets index the whole data buffer
        self.jpeg_offsets = np.frombuffer(bufs[1], np.int32)[frames.offset : frames.offset + len(frames) + 1]
        self.jpeg_data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        self.num_frames = num_frames


class Store:
    """One split of the clip store. `Store.open(path, split="train")`; see module docstring.

    `split` is the split this object reads (index.json's `split`), `location` where it lives; a remote split reads
    its shards through `cache` (a `ShardCache`, by default the node's, `tgdp.store.cache.default_cache`)."""

    def __init__(self, split_dir: str | os.PathLike | Location, cache: Any = None) -> None:
        self.location = location(split_dir)
        self.path: Path | str = self.location.uri if self.location.remote else self.location.local
        self.index = StoreIndex.read(self.location)
        self.split = self.index.split
        self.meta: dict[str, Any] = self.index.meta
        self._cache = cache
        self._fb = self.meta["fbank"]
        self._frames = self.meta["frames"]
        self._num_rows = self.index.num_rows
        self._pid: int | None = None
        self._shard_starts: list[int] = []
        # shard k -> (its record batches, their first rows); remote splits unmap shards the cache has evicted,
        # so that their disk space is freed (`_release_evicted`).
        self._mapped: OrderedDict[int, tuple[list[_Batch], list[int]]] = OrderedDict()
        self._max_mapped = MAX_MAPPED_REMOTE if self.location.remote else 0
        self._lut: np.ndarray | None = None
        self._plan: list[int] = []  # prefetch: shards in order of first use, and how far reading has got
        self._plan_pos: dict[int, int] = {}
        self._plan_ahead = 0
        self._plan_done = -1
        self._last_shard = -1
        self._clip_ids: list[str] | None = None
        self._id_to_row: dict[str, int] | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike | Location,
        split: str | None = None,
        *,
        default_split: str = "train",
        endpoint_url: str | None = None,
        cache: Any = None,
    ) -> Store:
        """`path` is a split directory (or URI), or the STORE holding `split`/ (`default_split` when None). A split
        directory whose index.json names another split than a given `split` is refused (a report would mislabel
        it). A local STORE whose split is mid-swap on a file system without RENAME_EXCHANGE reads `.old-<split>`."""
        loc = location(path, endpoint_url)
        if loc.size(INDEX_FILE) is None:
            name = split or default_split
            if not loc.remote and loc.child(f".old-{name}").size(INDEX_FILE) is not None:
                if loc.child(name).size(INDEX_FILE) is None:
                    return cls(loc.child(f".old-{name}"), cache)
            if loc.remote:
                loc.check_bucket()  # a missing bucket is named as such, not as a missing split
            return cls(loc.child(name), cache)
        store = cls(loc, cache)
        if split is not None and store.split != split:
            raise StoreError(
                f"{loc} holds split {store.split!r}, not {split!r}: pass its STORE folder with --split {split}, "
                f"or --split {store.split}"
            )
        return store

    # -- lazy, per-process mmaps, one shard at a time ----------------------------------------------------------
    def _start_process(self) -> None:
        """First use in this process (or a forked worker): row ranges from the index, nothing mapped yet."""
        self._check_total(sum(s.rows for s in self.index.shards))
        self._shard_starts = list(accumulate([0, *(s.rows for s in self.index.shards)]))
        self._mapped = OrderedDict()
        self._plan, self._plan_pos, self._plan_done = [], {}, -1
        self._pid = os.getpid()

    def _map_shard(self, k: int) -> tuple[list[_Batch], list[int]]:
        table = self._open_shard(self.index.shards[k])
        batches: list[_Batch] = []
        starts = [0]
        for rb in table.to_batches():
            batches.append(_Batch(rb, self._fb["target_length"], self._fb["num_mel_bins"], self._frames["n"]))
            starts.append(starts[-1] + rb.num_rows)
        self._mapped[k] = (batches, starts)
        if self._max_mapped:
            self._release_evicted(k)
            if len(self._mapped) > self._max_mapped:
                self._mapped.popitem(last=False)  # views already handed out keep their buffers alive
        return batches, starts

    def _release_evicted(self, keep: int) -> None:
        """Unmap the shards whose cache file is gone (evicted): their disk space is freed once unmapped."""
        cache = self._shard_cache()
        for k in [k for k in self._mapped if k != keep and not cache.path_of(self.index.shards[k]).exists()]:
            del self._mapped[k]

    def prefetch(self, rows: Sequence[int] | np.ndarray, ahead: int) -> None:
        """Remote: the rows this process reads next, in order. Their shards (in order of first use) are downloaded
        in the background, `ahead` shards beyond the furthest one mapped so far; a new plan replaces the old one.
        A no-op for a local split."""
        if not self.location.remote or ahead < 1:
            return
        if self._pid != os.getpid():
            self._start_process()
        shard_of = np.searchsorted(np.asarray(self._shard_starts), np.asarray(rows, np.int64), side="right") - 1
        _, first = np.unique(shard_of, return_index=True)
        self._plan = [int(k) for k in shard_of[np.sort(first)]]
        self._plan_pos = {k: pos for pos, k in enumerate(self._plan)}
        self._plan_ahead, self._plan_done, self._last_shard = int(ahead), -1, -1
        # a block's shards are read interleaved: keep them (and the next block's) mapped, or they would be re-mapped
        self._max_mapped = max(MAX_MAPPED_REMOTE, 2 * self._plan_ahead)
        self._submit_plan()

    def _advance_plan(self, k: int) -> None:
        pos = self._plan_pos.get(k)
        if pos is not None and pos > self._plan_done:
            self._plan_done = pos
            if k in self._mapped:  # read again this epoch without a fetch: tell the cache's LRU
                self._shard_cache().touch(self.index.shards[k])
            self._submit_plan()

    def _submit_plan(self) -> None:
        nxt = self._plan[self._plan_done + 1 : self._plan_done + 1 + self._plan_ahead]
        if nxt:
            self._shard_cache().prefetch(self.location, [self.index.shards[k] for k in nxt])

    def _shard_cache(self) -> Any:
        if self._cache is None:
            from tgdp.store.cache import default_cache

            self._cache = default_cache()
        return self._cache

    def _check_total(self, total: int) -> None:
        if total != self._num_rows:
            raise StoreError(
                f"{self.location}: index.json says {self._num_rows} rows, its shards hold {total}; "
                "run `tgdp-data verify`"
            )

    def shard_path(self, shard: ShardEntry) -> Path:
        """The local file of `shard`: in the split directory, or (remote) in the node's shard cache."""
        if not self.location.remote:
            return self.location.local / shard.file
        return self._shard_cache().fetch(self.location, shard)

    def _open_shard(self, shard: ShardEntry) -> pa.Table:
        """Memory-map one shard; a missing, resized or unreadable shard is an error that names it (cheap checks
        only: sha256 over every byte is `tgdp-data verify`'s job, and the cache's for a downloaded shard)."""
        path = self.shard_path(shard)
        hint = f"shard {shard.file} of {self.location} is damaged"
        if not path.is_file():
            raise StoreError(f"{hint}: file missing; run `tgdp-data verify` and re-run `tgdp-data shard`")
        size = path.stat().st_size
        if size != shard.bytes:
            raise StoreError(f"{hint}: {size} bytes, index.json says {shard.bytes}; run `tgdp-data verify`")
        try:
            table = pa.ipc.open_stream(pa.memory_map(str(path), "r")).read_all()
            table.validate()
        except (pa.ArrowException, OSError) as exc:
            raise StoreError(f"{hint}: {exc}; run `tgdp-data verify`") from exc
        if table.num_rows != shard.rows:
            raise StoreError(f"{hint}: {table.num_rows} rows, index.json says {shard.rows}; run `tgdp-data verify`")
        return table

    def check(self) -> None:
        """Pre-flight check of every shard against index.json (raises StoreError naming the first damaged shard).
        Local: present, byte size, readable, row count (metadata reads over the mmaps). Remote: every object present
        with its index.json byte size (one HEAD each, nothing downloaded: the cache checks sha256 on download).
        sha256 over every byte is `tgdp-data verify`'s job."""
        if not self.location.remote:
            self._check_total(sum(self._open_shard(shard).num_rows for shard in self.index.shards))
            return
        self._check_total(sum(s.rows for s in self.index.shards))
        for shard in self.index.shards:
            size = self.location.size(shard.file)
            if size != shard.bytes:
                found = "missing" if size is None else f"{size} bytes, index.json says {shard.bytes}"
                raise StoreError(f"shard {shard.file} of {self.location} is damaged: {found}; re-run `tgdp-data shard`")

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.location.uri, "endpoint_url": self.location.endpoint_url, "cache": self._cache}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(location(state["uri"], state.get("endpoint_url")), state.get("cache"))

    def _locate(self, i: int) -> tuple[_Batch, int]:
        i = int(i)
        if not -self._num_rows <= i < self._num_rows:
            raise IndexError(f"row {i} out of range for {self._num_rows} rows")
        if i < 0:
            i += self._num_rows
        if self._pid != os.getpid():
            self._start_process()
        k = bisect_right(self._shard_starts, i) - 1
        if k != self._last_shard:
            self._last_shard = k
            if self._plan:
                self._advance_plan(k)
        mapped = self._mapped.get(k)
        if mapped is None:
            mapped = self._map_shard(k)
        elif self._max_mapped:
            self._mapped.move_to_end(k)
        batches, starts = mapped
        r = i - self._shard_starts[k]
        b = bisect_right(starts, r) - 1
        return batches[b], r - starts[b]

    # -- public API ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._num_rows

    @property
    def clip_ids(self) -> list[str]:
        if self._clip_ids is None:
            if self._pid != os.getpid():
                self._start_process()
            ids: list[str] = []
            for k in range(len(self.index.shards)):
                batches, _ = self._mapped.get(k) or self._map_shard(k)
                for b in batches:
                    ids.extend(b.batch.column("clip_id").to_pylist())
            self._clip_ids = ids
        return self._clip_ids

    def index_of(self, clip_id: str) -> int:
        if self._id_to_row is None:
            self._id_to_row = {c: i for i, c in enumerate(self.clip_ids)}
        try:
            return self._id_to_row[clip_id]
        except KeyError:
            raise KeyError(f"clip {clip_id!r} is not in {self.location}") from None

    def row(self, i: int) -> dict[str, Any]:
        """All columns of row i; `fbank` as the zero-copy [L, M] float16 view, `frames_jpeg` as a list of bytes."""
        b, r = self._locate(i)
        out = {name: b.batch.column(name)[r].as_py() for name in b.batch.schema.names if name not in _HEAVY}
        out["fbank"] = self.fbank(i)
        out["frames_jpeg"] = [self.frame_jpeg(i, t) for t in range(b.num_frames)]
        return out

    def labels(self, i: int) -> list[str]:
        b, r = self._locate(i)
        return b.batch.column("labels")[r].as_py()

    def frame_jpeg(self, i: int, t: int) -> bytes:
        """JPEG bytes of sampled frame t (0 ≤ t < frames.n) of row i."""
        b, r = self._locate(i)
        if not 0 <= t < b.num_frames:
            raise IndexError(f"frame {t} out of range 0..{b.num_frames - 1}")
        k = r * b.num_frames + t
        return b.jpeg_data[b.jpeg_offsets[k] : b.jpeg_offsets[k + 1]].tobytes()

    def frame(self, i: int, t: int):
        """Sampled frame t of row i decoded by `torchvision.io.decode_jpeg`: torch uint8 [3, size, size] RGB."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        b, r = self._locate(i)
        if not 0 <= t < b.num_frames:
            raise IndexError(f"frame {t} out of range 0..{b.num_frames - 1}")
        k = r * b.num_frames + t
        # One small copy out of the read-only map (decode_jpeg wants a writable uint8 tensor).
        data = torch.from_numpy(b.jpeg_data[b.jpeg_offsets[k] : b.jpeg_offsets[k + 1]].copy())
        return decode_jpeg(data, mode=ImageReadMode.RGB)

    def fbank(self, i: int) -> np.ndarray:
        """Un-normalised log-Mel [target_length, num_mel_bins] float16, a read-only view of the memory map."""
        b, r = self._locate(i)
        n = b.fbank_shape[0] * b.fbank_shape[1]
        start = int(b.fbank_starts[r])
        return b.fbank_values[start : start + n].reshape(b.fbank_shape)

    def segment(self, i: int, t: int, length: int = 416, normalize: bool = True) -> np.ndarray:
        """The `length`-frame fbank segment aligned with frame t, [length, num_mel_bins] float32 (normalised)."""
        target = self._fb["target_length"]
        if length > target:
            raise ValueError(f"segment length {length} exceeds the stored {target} frames")
        s = segment_start(t, self._frames["n"], target, length)
        view = self.fbank(i)[s : s + length]
        if not normalize:
            return view.astype(np.float32)
        return np.take(self._norm_table(), view.view(np.uint16))

    def _norm_table(self) -> np.ndarray:
        """float16 bit pattern → normalised float32, [65536]: conversion and normalisation in one gather."""
        if self._lut is None:
            every = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
            with np.errstate(invalid="ignore"):  # the NaN patterns stay NaN
                self._lut = (every - np.float32(self._fb["mean"])) / np.float32(self._fb["std"])
        return self._lut

    def __repr__(self) -> str:
        return f"Store({self.location.uri!r}, rows={self._num_rows}, shards={len(self.index.shards)})"
