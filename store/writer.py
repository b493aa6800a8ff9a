"""Writing a store: `StoreWriter` streams ordered rows into staged shards, `assemble_split` turns the staged shards
into a complete split and commits it (locally by an atomic directory exchange, remotely by uploading index.json
last: `tgdp.store.remote`), `write_dataset_dict` names the complete splits for `datasets.load_from_disk(STORE)`.

What goes in (which clips, in which order, with which config) is `tgdp.pipeline.shard`'s choice; the bytes are
decided here and in `tgdp.store.format`, so a rerun on identical inputs writes byte-identical files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from tgdp.core.atomic import TMP_PREFIX, atomic_write, commit_temp, temp_path
from tgdp.core.disk import DISK_FULL_ERRNOS, disk_usage_at, existing_ancestor
from tgdp.store.format import INDEX_FILE, ShardEntry, ShardError, StoreIndex, rows_digest, store_json
from tgdp.store.fs import Location, file_sha256, location

__all__ = [
    "DATASET_DICT",
    "StoreWriter",
    "assemble_split",
    "disk_full_hint",
    "open_sink",
    "recover_split",
    "shard_entry",
    "split_files",
    "write_dataset_dict",
    "write_store_json",
]

DATASET_DICT = "dataset_dict.json"


def open_sink(path: Path) -> BinaryIO:
    """The file a shard is streamed to (8 MiB buffer): `StoreWriter`'s default `open_sink`."""
    return open(path, "wb", buffering=8 << 20)  # noqa: SIM115 - closed by StoreWriter.close_shard / abort


def write_store_json(path: Path, obj: Any) -> None:
    """One JSON file of a local store, atomically."""
    atomic_write(path, store_json(obj))


def disk_full_hint(exc: OSError, where: Path) -> str:
    """' (disk full: N MB free on <dir>)' for ENOSPC/EDQUOT, else ''."""
    if exc.errno not in DISK_FULL_ERRNOS:
        return ""
    probe = existing_ancestor(where)
    usage = disk_usage_at(probe)
    if usage is None:
        return " (disk full)"
    return f" (disk full: {usage.free / 1e6:.1f} MB free on {probe}; free space and rerun)"


class StoreWriter:
    """Streams ordered rows into contiguous shards `shard-XXXXX.arrow` under `staging`, each with a JSON sidecar
    (file, rows, bytes, sha256, clip_ids, digest of the rows' input digests).

    Rows go out in record batches of `batch_rows`; a shard is closed once its payload (JPEG + fbank bytes) reaches
    `shard_bytes`. A shard is streamed under its temporary name (`core.atomic.temp_path`) and committed
    (`core.atomic.commit_temp`) when closed, so staging holds only complete shards. As a context manager, a clean exit
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
        """An OSError while writing removes the partial shard and becomes a ShardError naming it and the free
        space."""
        try:
            yield
        except OSError as exc:
            self.abort()
            path = self.staging / self._name()
            raise ShardError(f"writing shard {path}: {exc.strerror or exc}{disk_full_hint(exc, self.staging)}") from exc

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
            writer, sink = self._writer, self._sink
            self._writer = None  # closed from here on: abort must not close it a second time
            writer.close()
            self._sink = None
            sink.close()
            commit_temp(self._tmp, final)
            sidecar = {
                "file": final.name,
                "rows": len(self._ids),
                "bytes": final.stat().st_size,
                "sha256": file_sha256(final),
                "clip_ids": self._ids,
                "digest": rows_digest(self._digests),
            }
            self._tmp = None
            atomic_write(self.staging / f"shard-{self.index:05d}.json", store_json(sidecar))
        self.shards.append(sidecar)
        self.index += 1
        self._ids, self._digests, self._payload = [], [], 0

    def abort(self) -> None:
        """Close and remove the shard being written (complete shards stay staged). Safe after a failed close: each
        handle is dropped before it is closed, and a close that fails (a full disk flushing its buffer, a writer
        whose sink is already closed) is ignored, so the temporary file is always removed."""
        writer, sink, tmp = self._writer, self._sink, self._tmp
        self._writer = self._sink = self._tmp = None
        self._rows = []
        try:
            for closer in (writer, sink):
                try:
                    if closer is not None:
                        closer.close()
                except (OSError, ValueError, pa.ArrowException):
                    pass
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)


# -- split assembly ----------------------------------------------------------------------------------------


def shard_entry(k: int, n: int, side: dict[str, Any]) -> ShardEntry:
    """The index entry of staged shard `side` (a `StoreWriter` sidecar) placed as shard k of n."""
    return ShardEntry(
        file=f"data-{k:05d}-of-{n:05d}.arrow",
        rows=side["rows"],
        bytes=side["bytes"],
        sha256=side["sha256"],
        first_clip_id=side["clip_ids"][0],
        last_clip_id=side["clip_ids"][-1],
    )


def split_files(index: StoreIndex, features: Any) -> dict[str, Any]:
    """The `datasets` files of a split (dataset_info.json, state.json) and index.json, in the order written: index
    last, its presence marks a complete split."""
    info = {
        "citation": "",
        "description": f"tgdp clip store ({index.split}); see index.json and docs/STORE.md",
        "features": features.to_dict(),
        "homepage": "",
        "license": "",
    }
    state = {
        "_data_files": [{"filename": e.file} for e in index.shards],
        "_fingerprint": index.inputs_sha256[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    return {"dataset_info.json": info, "state.json": state, INDEX_FILE: index.to_dict()}


def assemble_split(
    store: str | os.PathLike | Location,
    index: StoreIndex,
    staging: Path,
    staged: list[str],
    features: Any,
    write_json: Callable[[Path, Any], None] = write_store_json,
    renew: Callable[[], None] | None = None,
) -> None:
    """Make the staged shards (`staged`, in order) the split `index.split` of `store` and commit it.

    Local: build the split in STORE/.tmp-<split> (shards renamed in under their index names, the `datasets` files,
    index.json last), then exchange it with STORE/<split> in one `renameat2(RENAME_EXCHANGE)`, so a reader sees the
    old split or the new one, never none or a mix. Remote: `tgdp.store.remote.publish_split` (index.json last)."""
    loc = location(store)
    if loc.remote:
        from tgdp.store.remote import publish_split

        publish_split(loc, index, staging, staged, split_files(index, features), renew)
        shutil.rmtree(staging, ignore_errors=True)
        return
    root, split = loc.local, index.split
    tmp_dir = root / f".tmp-{split}"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    try:
        for name, entry in zip(staged, index.shards, strict=True):
            os.replace(staging / name, tmp_dir / entry.file)
        for name, obj in split_files(index, features).items():
            write_json(tmp_dir / name, obj)
    except OSError as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise ShardError(f"assembling {tmp_dir}: {exc.strerror or exc}{disk_full_hint(exc, root)}") from exc
    swap_dirs(tmp_dir, root / split)
    shutil.rmtree(staging, ignore_errors=True)


def swap_dirs(new: Path, final: Path) -> None:
    """Put directory `new` in place of `final` atomically; the old `final` (if any) is removed afterwards.

    Where the kernel or file system has no RENAME_EXCHANGE, the old split is first renamed to `.old-<split>`; a
    crash between the two renames leaves `.old-<split>`, which readers fall back to and `recover_split` restores."""
    if not final.exists():
        os.replace(new, final)
        return
    if _exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old split
        return
    old = final.with_name(f".old-{final.name}")
    if old.exists():
        shutil.rmtree(old)
    os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def recover_split(store: Path, split: str) -> None:
    """After a crash inside the fallback swap (`swap_dirs`): put STORE/.old-<split> back when STORE/<split> is
    missing, so the store again holds a complete split."""
    old, final = store / f".old-{split}", store / split
    if old.is_dir() and not (final / INDEX_FILE).is_file():
        if final.exists():
            shutil.rmtree(final)
        os.replace(old, final)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """`renameat2(a, b, RENAME_EXCHANGE)`: swap two paths atomically (Linux ≥ 3.15). False where unsupported."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def write_dataset_dict(
    store: str | os.PathLike | Location, write_json: Callable[[Path, Any], None] = write_store_json
) -> None:
    """STORE/dataset_dict.json (`{"splits": [...]}`), what `datasets.load_from_disk(STORE)` looks for to open the
    store as a DatasetDict. It names the complete splits only (those with index.json) and holds nothing else, so
    identical stores stay byte-identical; no index.json lists it, and verify checks it against the split folders."""
    loc = location(store)
    splits = [s for s in ("train", "eval") if loc.child(s).size(INDEX_FILE) is not None]
    if not splits:
        return
    try:
        if loc.remote:
            loc.write_bytes(store_json({"splits": splits}), DATASET_DICT)
        else:
            write_json(loc.local / DATASET_DICT, {"splits": splits})
    except OSError as exc:
        raise ShardError(f"writing {loc.child(DATASET_DICT)}: {exc.strerror or exc}") from exc
