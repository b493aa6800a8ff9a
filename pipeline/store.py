"""Read-only, memory-mapped access to a store split written by `tgdp-data shard` (no Ray, no `datasets` import).

A split directory (STORE/train, STORE/eval) holds `data-XXXXX-of-NNNNN.arrow` (Arrow IPC stream files in the
layout `datasets.save_to_disk` uses, so `datasets.load_from_disk(dir)` opens it too), `dataset_info.json`,
`state.json` and `index.json` (shards, row counts, sha256, store metadata). Format details: docs/STORE.md.

Each shard is memory-mapped (`pa.memory_map` + `pa.ipc.open_stream(...).read_all()`), so `fbank(i)` is a zero-copy
numpy view into the page cache and a DataLoader worker costs a few MB. Mmaps are opened lazily, per process: a
pickled or forked Store re-opens its files in the worker on first use.

Hot path (a training sample = one frame + its segment): row → (batch, offset) is a `bisect` over precomputed batch
starts, JPEG and fbank offsets are numpy views of the Arrow buffers computed once per record batch, and `segment`
converts + normalises float16 → float32 in ONE gather through a 65,536-entry table (bit-identical to
`(x.astype(float32) − mean) / std`), so no Arrow scalar or Python object is built per sample.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_right
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["FBANK_MEAN", "FBANK_STD", "Store", "StoreError", "StoreMismatchError", "segment_start"]

FBANK_MEAN = -5.081
FBANK_STD = 4.4849
_HEAVY = ("fbank", "frames_jpeg")


def segment_start(t: int, num_frames: int = 16, target_length: int = 1024, length: int = 416) -> int:
    """First fbank frame of the `length`-frame segment aligned with video frame `t` (docs/STORE.md, Reader).

    Centre round(t·target_length/num_frames), start max(0, centre − length//2), shifted left so that
    start + length ≤ target_length. For the defaults: t 0–3 → 0, 4 → 48, 5 → 112, …, 12 → 560, 13–15 → 608.
    """
    centre = round(t * target_length / num_frames)
    start = max(0, centre - length // 2)
    if start + length > target_length:
        start = max(0, target_length - length)
    return int(start)


class _Batch:
    """Numpy views of one record batch of a shard (all zero-copy into the mmap)."""

    def __init__(self, batch: pa.RecordBatch, target_length: int, num_mel_bins: int, num_frames: int) -> None:
        self.batch = batch
        fb = batch.column("fbank")
        if isinstance(fb, pa.ExtensionArray):  # `datasets` registered its Array2D type in this process
            fb = fb.storage
        inner = fb.flatten()
        values = inner.flatten()
        self.fbank_values = values.to_numpy(zero_copy_only=True)
        outer_off = fb.offsets.to_numpy() - fb.offsets[0].as_py()
        inner_off = inner.offsets.to_numpy() - inner.offsets[0].as_py()
        self.fbank_starts = inner_off[outer_off[:-1]]
        self.fbank_shape = (target_length, num_mel_bins)
        frames = batch.column("frames_jpeg").flatten()
        bufs = frames.buffers()  # [validity, int32 offsets, data]; offsets index the whole data buffer
        self.jpeg_offsets = np.frombuffer(bufs[1], np.int32)[frames.offset : frames.offset + len(frames) + 1]
        self.jpeg_data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        self.num_frames = num_frames


class StoreError(RuntimeError):
    """A store split cannot be read as its index.json describes it; the message names the shard."""


class StoreMismatchError(ValueError):
    """The store cannot feed this model (missing, wrong segment length, mel bins or frame size); the message says
    how to build a store that fits."""


class Store:
    """One split of the clip store. `Store.open(path, split="train")`; see module docstring."""

    def __init__(self, split_dir: Path) -> None:
        self.path = Path(split_dir)
        index_file = self.path / "index.json"
        if not index_file.is_file():
            raise FileNotFoundError(f"{self.path} is not a store split (no index.json); run `tgdp-data shard`")
        self.index: dict[str, Any] = json.loads(index_file.read_text(encoding="utf-8"))
        self.meta: dict[str, Any] = self.index["meta"]
        self._fb = self.meta["fbank"]
        self._frames = self.meta["frames"]
        self._num_rows = int(self.index["num_rows"])
        self._pid: int | None = None
        self._batches: list[_Batch] = []
        self._starts: list[int] = []
        self._lut: np.ndarray | None = None
        self._clip_ids: list[str] | None = None
        self._id_to_row: dict[str, int] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike, split: str = "train") -> Store:
        """`path` is a split directory, or the STORE directory holding `split`/."""
        path = Path(path)
        if (path / "index.json").is_file():
            return cls(path)
        return cls(path / split)

    # -- lazy, per-process mmaps -------------------------------------------------------------------------
    def _ensure(self) -> None:
        if self._pid == os.getpid():
            return
        batches: list[_Batch] = []
        starts = [0]
        for shard in self.index["shards"]:
            table = self._open_shard(shard)
            for rb in table.to_batches():
                batches.append(_Batch(rb, self._fb["target_length"], self._fb["num_mel_bins"], self._frames["n"]))
                starts.append(starts[-1] + rb.num_rows)
        if starts[-1] != self._num_rows:
            raise ValueError(f"{self.path}: index.json says {self._num_rows} rows, shards hold {starts[-1]}")
        self._batches, self._starts, self._pid = batches, starts, os.getpid()

    def _open_shard(self, shard: dict[str, Any]) -> pa.Table:
        """Memory-map one shard; a missing, resized or unreadable shard is an error that names it (cheap checks
        only: sha256 over every byte is `tgdp-data verify`'s job)."""
        path = self.path / shard["file"]
        hint = f"shard {shard['file']} of {self.path} is damaged"
        if not path.is_file():
            raise StoreError(f"{hint}: file missing; run `tgdp-data verify` and re-run `tgdp-data shard`")
        size = path.stat().st_size
        if "bytes" in shard and size != shard["bytes"]:
            raise StoreError(f"{hint}: {size} bytes, index.json says {shard['bytes']}; run `tgdp-data verify`")
        try:
            table = pa.ipc.open_stream(pa.memory_map(str(path), "r")).read_all()
            table.validate()
        except (pa.ArrowException, OSError) as exc:
            raise StoreError(f"{hint}: {exc}; run `tgdp-data verify`") from exc
        if "rows" in shard and table.num_rows != shard["rows"]:
            raise StoreError(f"{hint}: {table.num_rows} rows, index.json says {shard['rows']}; run `tgdp-data verify`")
        return table

    def check(self) -> None:
        """Pre-flight check of every shard against index.json: present, byte size, readable, row count (raises
        StoreError naming the first damaged shard). Cheap (metadata reads over the mmaps); sha256 over every byte
        is `tgdp-data verify`'s job."""
        total = sum(self._open_shard(shard).num_rows for shard in self.index["shards"])
        if total != self._num_rows:
            raise StoreError(
                f"{self.path}: index.json says {self._num_rows} rows, its shards hold {total}; run `tgdp-data verify`"
            )

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(Path(state["path"]))

    def _locate(self, i: int) -> tuple[_Batch, int]:
        i = int(i)
        if not -self._num_rows <= i < self._num_rows:
            raise IndexError(f"row {i} out of range for {self._num_rows} rows")
        if i < 0:
            i += self._num_rows
        if self._pid != os.getpid():
            self._ensure()
        b = bisect_right(self._starts, i) - 1
        return self._batches[b], i - self._starts[b]

    # -- public API ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._num_rows

    @property
    def clip_ids(self) -> list[str]:
        if self._clip_ids is None:
            self._ensure()
            ids: list[str] = []
            for b in self._batches:
                ids.extend(b.batch.column("clip_id").to_pylist())
            self._clip_ids = ids
        return self._clip_ids

    def index_of(self, clip_id: str) -> int:
        if self._id_to_row is None:
            self._id_to_row = {c: i for i, c in enumerate(self.clip_ids)}
        try:
            return self._id_to_row[clip_id]
        except KeyError:
            raise KeyError(f"clip {clip_id!r} is not in {self.path}") from None

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
        return f"Store({str(self.path)!r}, rows={self._num_rows}, shards={len(self.index['shards'])})"
