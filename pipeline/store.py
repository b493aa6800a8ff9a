"""The clip store format and its one owner: the index (`StoreIndex`), the shard writer (`StoreWriter`), the reader
(`Store`) and `verify_store` (no Ray, no `datasets` import).

A split directory (STORE/train, STORE/eval) holds `data-XXXXX-of-NNNNN.arrow` (Arrow IPC stream files in the
layout `datasets.save_to_disk` uses, so `datasets.load_from_disk(dir)` opens it too), `dataset_info.json`,
`state.json` and `index.json` (shards, row counts, sha256, store metadata). Format details: docs/STORE.md.
`index.json` is read and written only through `StoreIndex`; its `format` must be `STORE_FORMAT`, anything else is
refused with a `StoreFormatError` naming the file. `tgdp.pipeline.shard` decides what goes in a store (which clips,
in which order, with which config) and writes it through `StoreWriter`, `store_json` and `StoreIndex`.

Each shard is memory-mapped (`pa.memory_map` + `pa.ipc.open_stream(...).read_all()`), so `fbank(i)` is a zero-copy
numpy view into the page cache and a DataLoader worker costs a few MB. Mmaps are opened lazily, per process: a
pickled or forked Store re-opens its files in the worker on first use.

Hot path (a training sample = one frame + its segment): row → (batch, offset) is a `bisect` over precomputed batch
starts, JPEG and fbank offsets are numpy views of the Arrow buffers computed once per record batch, and `segment`
converts + normalises float16 → float32 in ONE gather through a 65,536-entry table (bit-identical to
`(x.astype(float32) − mean) / std`), so no Arrow scalar or Python object is built per sample.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from tgdp.pipeline.layout import TMP_PREFIX, atomic_write, commit_temp, file_sha256, temp_path

__all__ = [
    "FBANK_MEAN",
    "FBANK_STD",
    "STORE_FORMAT",
    "ShardEntry",
    "ShardError",
    "Store",
    "StoreError",
    "StoreFormatError",
    "StoreIndex",
    "StoreMismatchError",
    "StoreWriter",
    "VerifyReport",
    "fbank_values",
    "open_sink",
    "rows_digest",
    "segment_start",
    "store_json",
    "verify_store",
]

STORE_FORMAT = "tgdp-store/1"  # index.json `format`; bump it when a reader of the old format would misread a store
ASSIGNMENT = "rows sorted by clip_id; contiguous shards closed at shard_bytes of payload"
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


def fbank_values(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """The `fbank` column of a record batch → (values, starts): values [rows·L·M] float16, every row's [L, M]
    spectrogram back to back (a read-only view of the batch's buffer), and starts [rows], where each row's begin.
    Works whether or not `datasets` registered its Array2D extension type in this process."""
    fb = batch.column("fbank")
    if isinstance(fb, pa.ExtensionArray):
        fb = fb.storage
    inner = fb.flatten()
    values = inner.flatten().to_numpy(zero_copy_only=False)  # no nulls: still a zero-copy view
    outer_off = fb.offsets.to_numpy() - fb.offsets[0].as_py()
    inner_off = inner.offsets.to_numpy() - inner.offsets[0].as_py()
    return values, inner_off[outer_off[:-1]]


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


class StoreError(RuntimeError):
    """A store split cannot be read as its index.json describes it; the message names the shard."""


class StoreMismatchError(ValueError):
    """The store cannot feed this model (missing, wrong segment length, mel bins or frame size); the message says
    how to build a store that fits."""


class StoreFormatError(StoreError):
    """index.json is not an index this code reads (another `format`, or a missing or mistyped field)."""


class ShardError(RuntimeError):
    """The store could not be written; the message names the file and the cause."""


# -- the index ---------------------------------------------------------------------------------------------


def store_json(obj: Any) -> str:
    """The text of every JSON file of a store: indent 1, sorted keys, newline-terminated, so identical inputs give
    identical bytes."""
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a split as index.json lists it."""

    file: str
    rows: int
    bytes: int
    sha256: str
    first_clip_id: str
    last_clip_id: str


_INDEX_TYPES = {"split": str, "num_rows": int, "meta": dict, "config": dict, "inputs_sha256": str, "assignment": str}
_SHARD_TYPES = {"file": str, "rows": int, "bytes": int, "sha256": str, "first_clip_id": str, "last_clip_id": str}


@dataclass
class StoreIndex:
    """A split's index.json (docs/STORE.md, "Store layout"), written last: its presence marks a complete split.

    `meta` is the store metadata (fbank, frames, audio, ffmpeg_version; also in the Arrow schema metadata),
    `config` the `ShardConfig` that wrote it, `inputs_sha256` a digest of every row's inputs and the metadata.
    """

    split: str
    num_rows: int
    shards: list[ShardEntry]
    meta: dict[str, Any]
    config: dict[str, Any]
    inputs_sha256: str
    assignment: str = ASSIGNMENT
    format: str = STORE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return store_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike = "index.json") -> StoreIndex:
        """Check `format` first (an unknown one is refused, naming `source`), then every field's type."""
        found = data.get("format") if isinstance(data, dict) else None
        if found != STORE_FORMAT:
            raise StoreFormatError(
                f"{source}: store format {found!r} is not supported (this tgdp reads {STORE_FORMAT!r}); "
                "rebuild the store with `tgdp-data shard`"
            )
        _check_fields(data, {**_INDEX_TYPES, "format": str, "shards": list}, source)
        for k, shard in enumerate(data["shards"]):
            _check_fields(shard, _SHARD_TYPES, f"{source} shards[{k}]")
        fields = {k: data[k] for k in _INDEX_TYPES}
        return cls(**fields, shards=[ShardEntry(**s) for s in data["shards"]])

    @classmethod
    def from_json(cls, text: str, source: str | os.PathLike = "index.json") -> StoreIndex:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StoreFormatError(f"{source}: not JSON ({exc}); run `tgdp-data verify`") from exc
        return cls.from_dict(data, source)

    @classmethod
    def read(cls, split_dir: str | os.PathLike) -> StoreIndex:
        """The index of the split in `split_dir`; FileNotFoundError when there is none."""
        path = Path(split_dir) / "index.json"
        if not path.is_file():
            raise FileNotFoundError(f"{Path(split_dir)} is not a store split (no index.json); run `tgdp-data shard`")
        return cls.from_json(path.read_text(encoding="utf-8"), path)


def _check_fields(data: Any, types: dict[str, type], source: Any) -> None:
    if not isinstance(data, dict):
        raise StoreFormatError(f"{source}: expected a JSON object, found {type(data).__name__}")
    missing = sorted(set(types) - set(data))
    unknown = sorted(set(data) - set(types))
    wrong = [k for k, t in types.items() if k in data and (not isinstance(data[k], t) or isinstance(data[k], bool))]
    if missing or unknown or wrong:
        raise StoreFormatError(f"{source}: malformed index (missing {missing}, unknown {unknown}, mistyped {wrong})")


class Store:
    """One split of the clip store. `Store.open(path, split="train")`; see module docstring."""

    def __init__(self, split_dir: Path) -> None:
        self.path = Path(split_dir)
        self.index = StoreIndex.read(self.path)
        self.meta: dict[str, Any] = self.index.meta
        self._fb = self.meta["fbank"]
        self._frames = self.meta["frames"]
        self._num_rows = self.index.num_rows
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
        for shard in self.index.shards:
            table = self._open_shard(shard)
            for rb in table.to_batches():
                batches.append(_Batch(rb, self._fb["target_length"], self._fb["num_mel_bins"], self._frames["n"]))
                starts.append(starts[-1] + rb.num_rows)
        if starts[-1] != self._num_rows:
            raise ValueError(f"{self.path}: index.json says {self._num_rows} rows, shards hold {starts[-1]}")
        self._batches, self._starts, self._pid = batches, starts, os.getpid()

    def _open_shard(self, shard: ShardEntry) -> pa.Table:
        """Memory-map one shard; a missing, resized or unreadable shard is an error that names it (cheap checks
        only: sha256 over every byte is `tgdp-data verify`'s job)."""
        path = self.path / shard.file
        hint = f"shard {shard.file} of {self.path} is damaged"
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
        """Pre-flight check of every shard against index.json: present, byte size, readable, row count (raises
        StoreError naming the first damaged shard). Cheap (metadata reads over the mmaps); sha256 over every byte
        is `tgdp-data verify`'s job."""
        total = sum(self._open_shard(shard).num_rows for shard in self.index.shards)
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
        return f"Store({str(self.path)!r}, rows={self._num_rows}, shards={len(self.index.shards)})"


# -- writing -----------------------------------------------------------------------------------------------


def open_sink(path: Path) -> BinaryIO:
    """The file a shard is streamed to (8 MiB buffer): `StoreWriter`'s default `open_sink`."""
    return open(path, "wb", buffering=8 << 20)  # noqa: SIM115 - closed by StoreWriter.close_shard / abort


def rows_digest(digests: list[str]) -> str:
    """sha256 over the input digests of a run of rows (a staged shard's `digest`, a split's `inputs_sha256`)."""
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


class StoreWriter:
    """Streams ordered rows into contiguous shards `shard-XXXXX.arrow` under `staging`, each with a JSON sidecar
    (file, rows, bytes, sha256, clip_ids, digest of the rows' input digests).

    Rows go out in record batches of `batch_rows`; a shard is closed once its payload (JPEG + fbank bytes) reaches
    `shard_bytes`. A shard is streamed under its temporary name (`layout.temp_path`) and committed
    (`layout.commit_temp`) when closed, so staging holds only complete shards. As a context manager, a clean exit
    closes the last shard and an exception removes the partial one; a write error (ENOSPC) is a ShardError naming
    the shard. `open_sink(path)` opens the file a shard is written to.
    """

    def __init__(
        self,
        staging: Path,
        schema: pa.Schema,
        *,
        fbank_shape: tuple[int, int],
        shard_bytes: int,
        batch_rows: int,
        open_sink: Callable[[Path], BinaryIO] = open_sink,
    ) -> None:
        self.staging, self.schema, self.fbank_shape = Path(staging), schema, fbank_shape
        self.shard_bytes, self.batch_rows, self.open_sink = shard_bytes, batch_rows, open_sink
        self.fbank_type = schema.field("fbank").type
        self.index = 0
        self.shards: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []
        self._ids: list[str] = []
        self._digests: list[str] = []
        self._payload = 0
        self._sink: BinaryIO | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close_shard()
        except BaseException:
            self.abort()
            raise

    def _name(self) -> str:
        return f"shard-{self.index:05d}.arrow"

    def resume(self, clip_ids: list[str], digests: list[str]) -> int:
        """Adopt the staged shards of an earlier run that hold exactly the next rows (same clip ids, input digests
        and size), remove every other staged or temporary file; returns the rows adopted (no ids: adopt none)."""
        pos = 0
        while (self.staging / self._name()).is_file():
            try:
                side = json.loads((self.staging / f"shard-{self.index:05d}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                break
            n = side["rows"]
            if (
                clip_ids[pos : pos + n] != side["clip_ids"]
                or rows_digest(digests[pos : pos + n]) != side["digest"]
                or (self.staging / self._name()).stat().st_size != side["bytes"]
            ):
                break
            self.shards.append(side)
            self.index += 1
            pos += n
        for stale in self.staging.iterdir():
            name = stale.name
            if name.startswith(TMP_PREFIX) or (name.startswith("shard-") and int(name[6:11]) >= self.index):
                stale.unlink()
        return pos

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """An OSError while writing removes the partial shard and becomes a ShardError naming it."""
        try:
            yield
        except OSError as exc:
            self.abort()
            hint = " (disk full)" if exc.errno == errno.ENOSPC else ""
            raise ShardError(f"writing shard {self.staging / self._name()}: {exc.strerror or exc}{hint}") from exc

    def _flush(self) -> None:
        if not self._rows:
            return
        if self._writer is None:
            self._tmp = temp_path(self.staging / self._name())
            self._sink = self.open_sink(self._tmp)
            self._writer = pa.ipc.new_stream(pa.PythonFile(self._sink, mode="w"), self.schema)
        self._writer.write_batch(self._batch(self._rows))
        self._rows = []

    def _batch(self, rows: list[dict[str, Any]]) -> pa.RecordBatch:
        n, (length, bins) = len(rows), self.fbank_shape
        arrays = []
        for f in self.schema:
            if f.name == "fbank":  # the Array2D storage: list<list<float16>> with fixed lengths
                flat = np.stack([r["fbank"] for r in rows]).reshape(-1)
                inner = pa.ListArray.from_arrays(pa.array(np.arange(n * length + 1, dtype=np.int32) * bins), flat)
                outer = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * length), inner)
                arrays.append(pa.ExtensionArray.from_storage(self.fbank_type, outer))
            else:
                arrays.append(pa.array([r.get(f.name) for r in rows], type=f.type))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def add(self, row: dict[str, Any], digest: str) -> None:
        """Append one row (its `digest` identifies its inputs); closes the shard once it is full."""
        with self._guard():
            self._rows.append(row)
            self._ids.append(row["clip_id"])
            self._digests.append(digest)
            self._payload += sum(len(b) for b in row["frames_jpeg"]) + row["fbank"].nbytes
            if len(self._rows) >= self.batch_rows:
                self._flush()
        if self._payload >= self.shard_bytes:
            self.close_shard()

    def close_shard(self) -> None:
        """Finish the open shard, if any: last batch, commit under its name, sidecar."""
        with self._guard():
            self._flush()
            if self._writer is None:
                return
            final = self.staging / self._name()
            self._writer.close()
            self._sink.close()
            commit_temp(self._tmp, final)
            sidecar = {
                "file": final.name,
                "rows": len(self._ids),
                "bytes": final.stat().st_size,
                "sha256": file_sha256(final),
                "clip_ids": self._ids,
                "digest": rows_digest(self._digests),
            }
            atomic_write(self.staging / f"shard-{self.index:05d}.json", store_json(sidecar))
        self.shards.append(sidecar)
        self.index += 1
        self._writer = self._sink = self._tmp = None
        self._ids, self._digests, self._payload = [], [], 0

    def abort(self) -> None:
        """Close and remove the shard being written (complete shards stay staged)."""
        for closer in (self._writer, self._sink):
            try:
                if closer is not None:
                    closer.close()
            except (OSError, pa.ArrowException):
                pass
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        self._writer = self._sink = self._tmp = None


# -- verify ------------------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """Problems found by `verify_store` (empty = the store is sound)."""

    splits: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(store: str | os.PathLike, decode_jpegs: bool = True) -> VerifyReport:
    """Check every split under `store` (or the one split `store` is): the index format, sha256 vs index, row counts,
    JPEGs decode to size²×3, fbank finite; and that STORE/dataset_dict.json lists only complete splits."""
    store = Path(store)
    report = VerifyReport()
    if (store / "index.json").is_file():
        dirs = [store]
    else:
        dirs = sorted(p for p in store.iterdir() if (p / "index.json").is_file()) if store.is_dir() else []
    if not dirs:
        report.problems.append(f"{store}: no store split (no index.json)")
        return report
    for split_dir in dirs:
        try:
            index = StoreIndex.read(split_dir)
        except StoreError as exc:
            report.problems.append(str(exc))
            continue
        total = sum(_verify_shard(split_dir, shard, index.meta, report, decode_jpegs) for shard in index.shards)
        if total != index.num_rows:
            report.problems.append(f"{split_dir.name}: {total} rows in shards, index says {index.num_rows}")
        report.splits[split_dir.name] = total
    dd = store / "dataset_dict.json"
    if dd.is_file():
        try:
            listed = json.loads(dd.read_text(encoding="utf-8"))["splits"]
        except (ValueError, KeyError, TypeError) as exc:
            report.problems.append(f"dataset_dict.json: unreadable ({exc})")
        else:
            missing = [s for s in listed if s not in report.splits]
            if missing:
                report.problems.append(f"dataset_dict.json: lists {missing}, which have no index.json")
    return report


def _verify_shard(split_dir: Path, shard: ShardEntry, meta: dict[str, Any], report: VerifyReport, jpegs: bool) -> int:
    """Check one shard (problems go to `report`); returns the rows it holds."""
    path, where = split_dir / shard.file, f"{split_dir.name}/{shard.file}"
    if not path.is_file():
        report.problems.append(f"{where}: missing")
        return 0
    if file_sha256(path) != shard.sha256:
        report.problems.append(f"{where}: sha256 mismatch (index {shard.sha256[:12]}…)")
    try:
        table = pa.ipc.open_stream(pa.memory_map(str(path), "r")).read_all()
    except (pa.ArrowException, OSError) as exc:
        report.problems.append(f"{where}: unreadable Arrow stream: {exc}")
        return 0
    if table.num_rows != shard.rows:
        report.problems.append(f"{where}: {table.num_rows} rows, index says {shard.rows}")
    ids = table.column("clip_id").to_pylist()
    base = 0
    for rb in table.to_batches():
        problems = _batch_problems(rb, meta, jpegs)
        report.problems.extend(f"{where}: row {base + r} ({ids[base + r]}){what}" for r, what in problems)
        base += rb.num_rows
    return table.num_rows


def _batch_problems(rb: pa.RecordBatch, meta: dict[str, Any], jpegs: bool) -> list[tuple[int, str]]:
    """(row in batch, problem) for one record batch: fbank shape and finiteness, fbank_frames, the JPEGs."""
    from PIL import Image

    shape = (meta["fbank"]["target_length"], meta["fbank"]["num_mel_bins"])
    size, n_frames = meta["frames"]["size"], meta["frames"]["n"]
    out: list[tuple[int, str]] = []
    values, _ = fbank_values(rb)
    if values.size != rb.num_rows * shape[0] * shape[1]:
        out.append((0, f": fbank values do not match {rb.num_rows}×{shape}"))
    else:
        bad = ~np.isfinite(values.reshape(rb.num_rows, -1)).all(axis=1)
        out.extend((int(r), ": fbank not finite") for r in np.flatnonzero(bad))
    nf = rb.column("fbank_frames").to_numpy()
    out.extend((int(r), f": fbank_frames {nf[r]}") for r in np.flatnonzero((nf <= 0) | (nf > shape[0])))
    if not jpegs:
        return out
    for r, frames in enumerate(rb.column("frames_jpeg").to_pylist()):
        if len(frames) != n_frames:
            out.append((r, f": {len(frames)} frames, expected {n_frames}"))
        for t, data in enumerate(frames):
            problem = _check_jpeg(data, size, Image)
            if problem:
                out.append((r, f" frame {t}: {problem}"))
    return out


def _check_jpeg(data: bytes, size: int, image_mod: Any) -> str | None:
    import io

    try:
        with image_mod.open(io.BytesIO(data)) as im:
            im.load()
            if im.size != (size, size) or im.mode != "RGB":
                return f"JPEG is {im.size[0]}×{im.size[1]} {im.mode}, expected {size}×{size} RGB"
    except Exception as exc:  # PIL raises many types for corrupt data
        return f"JPEG does not decode: {exc}"
    return None
