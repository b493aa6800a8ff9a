"""Append-only event log per stage, and the latest state of each clip derived from it.

Every attempt at a stage (fetch, validate, shard, ...) for a clip is one event row. Events are buffered and flushed
as a small Parquet file written to a temporary name and renamed, so a reader never sees a partial file and a
process killed at any moment loses at most the events it had not flushed yet (the work they describe is then
redone on the next run: nothing is recorded twice as done, nothing done is lost from the manifest's accounting).

Required event keys: `clip_id`, `status` ("ok" | "failed"), `reason` (None when ok), `transient` (bool).
The ledger adds `stage`, `attempted_at` (UTC), `worker` (host:pid) and `seq` (monotonic within a flush file).
Any other keys are stage-specific columns (nullable). Every file of a stage is written with the stage's schema
(`STAGE_SCHEMAS`: every column, in order, typed whether or not a value is null), so the files of one stage share one
schema and `pa.concat_tables` reads them; files of older writers are cast on read (`typed`).

Order: event files are named `s<sequence>.parquet`, the sequence one more than the highest on disk, claimed with an
exclusive hard link (`core.atomic.commit_temp(..., exclusive=True)`), so two writers never share a number and a later
file always sorts after every earlier one. The wall clock plays no part in the order (a clock stepped back a day must
not hide the events written after it): `attempted_at` is data only. Files of older ROOTs are named
`<time_ns>-<pid>-<hex>.parquet`; they start with a digit and so sort, in their own (time) order, before every
sequence-named file.
`compact()` merges many small files into one, atomically.

At 2 M clips a stage has millions of events: `latest_table()` reduces them to the last event per clip in columns
(pyarrow + numpy), reading the log in chunks of `chunk_rows` events, so memory is bounded by the number of clips plus
one chunk, whatever the number of events. `latest()` (one dict per clip) is for small ROOTs and tests.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tgdp.core.atomic import atomic_path, commit_temp, temp_path
from tgdp.pipeline.layout import events_dir

__all__ = [
    "EVENT_TYPES",
    "STAGE_SCHEMAS",
    "EventWriter",
    "LatestEvents",
    "append_events",
    "append_table",
    "compact",
    "compact_if_many",
    "count_events",
    "event_positions",
    "has_events",
    "iter_event_chunks",
    "latest",
    "latest_table",
    "mask",
    "next_sequence",
    "read_events",
    "same_or_both_null",
    "typed",
]

REQUIRED = ("clip_id", "status", "reason", "transient")
STATUSES = ("ok", "failed")

_STR, _F64, _I64, _BOOL, _TS = pa.string(), pa.float64(), pa.int64(), pa.bool_(), pa.timestamp("us", tz="UTC")
# The columns of each stage's events, in order, with their types. Without them a flush file typed each column from its
# values, so a file whose events all had reason None got a `null` column and plain `pa.concat_tables` of two files
# failed ("Schema at index 1 was different"). Every file of a stage is written with exactly this schema (a key no
# stage declares follows, typed from its values), and every old file is cast to these types on read (`typed`).
_HEAD = {"clip_id": _STR, "status": _STR, "reason": _STR, "transient": _BOOL, "reason_detail": _STR}
_TAIL = {"attempted_at": _TS, "worker": _STR, "stage": _STR, "seq": _I64}
_STAGE_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "fetch": {  # fetch.EVENT_COLUMNS; import writes the same
        "attempt": _I64, "session_id": _STR, "source": _STR, "raw_path": _STR, "file_bytes": _I64, "sha256": _STR,
        "section_mode": _STR, "section_start_s": _F64, "section_end_s": _F64, "source_duration_s": _F64,
        "format_id": _STR, "vcodec": _STR, "acodec": _STR, "height": _I64, "fps": _F64, "yt_dlp_version": _STR,
        "ffmpeg_version": _STR, "elapsed_s": _F64, "next_attempt_after": _TS, "gave_up": _BOOL,
        "in_attempt_retries": _I64, "rate_wait_s": _F64, "ray_node": _STR,
    },
    "validate": {  # validate._new_event, METRIC_COLUMNS
        "valid": _BOOL, "valid_rule": _STR, "fetch_sha256": _STR, "window_start_s": _F64, "window_rule": _STR,
        "probe_duration_s": _F64, "video_codec": _STR, "audio_codec": _STR, "ffmpeg_version": _STR,
        "feature_cache": _STR, "features_id": _STR, "decode_path": _STR, "has_video": _BOOL, "has_audio": _BOOL,
        "video_frames": _I64,
        "audio_dur_s": _F64, "video_dur_s": _F64, "av_offset_s": _F64, "rms_dbfs": _F64, "silent_frac": _F64,
        "still_score": _F64, "is_silent": _BOOL, "is_still": _BOOL, "is_av_offset": _BOOL,
    },
    "shard": {"fetch_sha256": _STR, "store": _STR, "store_split": _STR, "shard_file": _STR},
}  # fmt: skip
STAGE_SCHEMAS = {stage: pa.schema({**_HEAD, **cols, **_TAIL}) for stage, cols in _STAGE_COLUMNS.items()}
EVENT_TYPES: dict[str, pa.DataType] = {f.name: f.type for schema in STAGE_SCHEMAS.values() for f in schema}


def _stage_schema(stage: str, keys: Sequence[str], infer: Callable[[list[str]], pa.Schema]) -> pa.Schema:
    """The schema of a new event file: the stage's columns (or, for an undeclared stage, the keys typed by
    `EVENT_TYPES`), then any other key with the type `infer(keys)` gives it."""
    declared = STAGE_SCHEMAS.get(stage) or pa.schema([(k, EVENT_TYPES[k]) for k in keys if k in EVENT_TYPES])
    extra = [k for k in keys if k not in declared.names]
    return pa.schema([*declared, *infer(extra)]) if extra else declared


def typed(table: pa.Table) -> pa.Table:
    """`table` with each column of `EVENT_TYPES` cast to its type (an all-null column typed `null` by an older
    writer becomes a null column of the right type); other columns as they are."""
    fields = [pa.field(f.name, EVENT_TYPES[f.name]) if f.name in EVENT_TYPES else f for f in table.schema]
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return table if schema.equals(table.schema) else table.cast(schema)


def _check(event: Mapping[str, Any]) -> None:
    missing = [k for k in REQUIRED if k not in event]
    if missing:
        raise ValueError(f"event for {event.get('clip_id')!r} lacks {missing}")
    if event["status"] not in STATUSES:
        raise ValueError(f"event status must be one of {STATUSES}, got {event['status']!r}")
    if event["status"] == "failed" and not event["reason"]:
        raise ValueError(f"failed event for {event['clip_id']!r} has no reason")


SEQ_PREFIX = "s"  # sorts after the digits that start the time-named files of older ROOTs
_SEQ_NAME = re.compile(rf"{SEQ_PREFIX}(\d+)(?:-compact)*\.parquet")


def next_sequence(directory: Path) -> int:
    """One more than the highest event-file sequence in `directory` (1 when there is none)."""
    names = os.listdir(directory) if directory.is_dir() else []  # claimed (still empty) names count too
    seqs = [int(m.group(1)) for name in names if (m := _SEQ_NAME.fullmatch(name))]
    return max(seqs, default=0) + 1


def _write_atomic(table: pa.Table, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(directory / f"{uuid.uuid4().hex}.parquet")
    try:
        pq.write_table(table, tmp)
        while True:  # a concurrent writer that claimed the number first: take the next one
            final = directory / f"{SEQ_PREFIX}{next_sequence(directory):020d}.parquet"
            try:
                return commit_temp(tmp, final, exclusive=True)
            except FileExistsError:
                continue
    finally:
        tmp.unlink(missing_ok=True)


def append_events(root: Path, stage: str, events: Iterable[Mapping[str, Any]]) -> Path | None:
    """Validate and write `events` as one new event file for `stage`; returns its path (None if empty)."""
    rows = []
    worker = f"{socket.gethostname()}:{os.getpid()}"
    now = datetime.now(timezone.utc)
    for i, event in enumerate(events):
        _check(event)
        row = dict(event)
        row.setdefault("attempted_at", now)
        row.setdefault("worker", worker)
        row["stage"] = stage
        row["seq"] = i
        rows.append(row)
    if not rows:
        return None
    keys = list(dict.fromkeys(k for row in rows for k in row))  # every row's keys, not only the first row's

    def infer(extra: list[str]) -> pa.Schema:
        return pa.Table.from_pylist([{k: row.get(k) for k in extra} for row in rows]).schema

    schema = _stage_schema(stage, keys, infer)
    table = pa.Table.from_pylist([{k: row.get(k) for k in schema.names} for row in rows], schema=schema)
    return _write_atomic(table, events_dir(root, stage))


def append_table(root: Path, stage: str, table: pa.Table) -> Path | None:
    """Write a whole table of events (one row each, REQUIRED columns present) as one event file, columnar.

    For stages that settle many clips at once (`shard` writes one event per packed clip): no dict per clip.
    """
    if table.num_rows == 0:
        return None
    missing = [k for k in REQUIRED if k not in table.column_names]
    if missing:
        raise ValueError(f"{stage} events lack {missing}")
    bad = pc.invert(pc.is_in(table.column("status"), value_set=pa.array(STATUSES)))
    if pc.any(bad).as_py():
        raise ValueError(f"{stage} event status must be one of {STATUSES}")
    no_reason = pc.and_(pc.equal(table.column("status"), "failed"), pc.is_null(table.column("reason")))
    if pc.any(no_reason).as_py():
        raise ValueError(f"a failed {stage} event has no reason")
    n = table.num_rows
    now = pa.scalar(datetime.now(timezone.utc), pa.timestamp("us", tz="UTC"))
    if "attempted_at" not in table.column_names:
        table = table.append_column("attempted_at", pa.repeat(now, n))
    if "worker" not in table.column_names:
        table = table.append_column("worker", pa.repeat(pa.scalar(f"{socket.gethostname()}:{os.getpid()}"), n))
    table = table.append_column("stage", pa.repeat(pa.scalar(stage), n))
    table = table.append_column("seq", pa.array(np.arange(n, dtype=np.int64)))
    schema = _stage_schema(stage, table.column_names, lambda extra: table.select(extra).schema)
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type) for f in schema
    ]
    return _write_atomic(pa.table(columns, schema=schema), events_dir(root, stage))


class EventWriter:
    """Buffers events and flushes them every `flush_every` events or `flush_seconds`, and on close.

    Use as a context manager; a crash loses only the unflushed buffer (whose work is then redone).
    """

    def __init__(self, root: Path, stage: str, flush_every: int = 64, flush_seconds: float = 5.0) -> None:
        self.root, self.stage = Path(root), stage
        self.flush_every, self.flush_seconds = flush_every, flush_seconds
        self._buf: list[dict[str, Any]] = []
        self._last = time.monotonic()

    def add(self, event: Mapping[str, Any]) -> None:
        _check(event)
        row = dict(event)
        row.setdefault("attempted_at", datetime.now(timezone.utc))
        self._buf.append(row)
        if len(self._buf) >= self.flush_every or time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            append_events(self.root, self.stage, self._buf)
            self._buf = []
        self._last = time.monotonic()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def read_events(root: Path, stage: str, columns: list[str] | None = None) -> pa.Table:
    """All events of `stage` in write order (file name order, then `seq`); an empty table if there are none."""
    files = _live_files(_event_files(events_dir(root, stage)))
    if not files:
        return pa.table({"clip_id": pa.array([], pa.string()), "status": pa.array([], pa.string())})
    tables = [typed(pq.read_table(f, columns=columns)) for f in files]
    return pa.concat_tables(tables, promote_options="permissive")


def latest(root: Path, stage: str) -> dict[str, dict[str, Any]]:
    """The last event of `stage` per clip id, as dicts (events are applied in write order)."""
    table = read_events(root, stage)
    state: dict[str, dict[str, Any]] = {}
    for row in table.to_pylist():
        state[row["clip_id"]] = row
    return state


def compact_if_many(root: Path, stage: str, max_files: int = 256) -> Path | None:
    """Compact `stage` when it has more than `max_files` event files (each run ends with this: thousands of small
    flush files would make every later read slow)."""
    if len(_event_files(events_dir(root, stage))) > max_files:
        return compact(root, stage)
    return None


def compact(root: Path, stage: str) -> Path | None:
    """Merge all event files of `stage` into one (same rows, same order), atomically; old files are removed after."""
    directory = events_dir(root, stage)
    on_disk = _event_files(directory)
    if len(on_disk) <= 1:
        return on_disk[0] if on_disk else None
    files = _live_files(on_disk)
    table = pa.concat_tables([typed(pq.read_table(f)) for f in files], promote_options="permissive")
    # A crash between publishing the merged file and deleting the originals must not double every event: the merged
    # file names the files it replaces, and readers skip those (`_live_files`).
    table = table.replace_schema_metadata({_COMPACTS: json.dumps([f.name for f in files]).encode()})
    # The merged file sorts after everything it replaces and before any later flush: name it after the last file,
    # whose sequence it keeps, so no later file can be given a name it lists as replaced.
    merged = directory / files[-1].name.replace(".parquet", "-compact.parquet")
    with atomic_path(merged) as tmp:
        pq.write_table(table, tmp)
    for f in on_disk:
        if f != merged:
            f.unlink(missing_ok=True)
    return merged


_COMPACTS = b"tgdp_compacts"


def has_events(root: Path, stage: str) -> bool:
    """Whether `stage` has any event file."""
    return bool(_event_files(events_dir(root, stage)))


def mask(arr: pa.Array | pa.ChunkedArray, fill: bool = False) -> np.ndarray:
    """A boolean Arrow column (e.g. of `latest_table`) as a numpy mask; nulls (no event) become `fill`."""
    return np.asarray(pc.fill_null(arr, fill).to_numpy(zero_copy_only=False), dtype=bool)


def same_or_both_null(a: pa.Array, b: pa.Array) -> np.ndarray:
    """Element-wise a == b where null == null (events written without a sha256 on both sides)."""
    return mask(pc.equal(a, b)) | (mask(pc.is_null(a)) & mask(pc.is_null(b)))


def _event_files(directory: Path) -> list[Path]:
    """The event files of a stage directory in write order (empty ones are names being claimed: skipped)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith(".") and _non_empty(p))


def _non_empty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:  # removed by a compaction since the listing
        return False


def _live_files(files: list[Path]) -> list[Path]:
    """`files` minus those a compacted file already holds (left behind when a compaction died before cleanup)."""
    replaced: set[str] = set()
    for f in files:
        if f.name.endswith("-compact.parquet"):
            meta = pq.read_schema(f).metadata or {}
            replaced.update(json.loads(meta.get(_COMPACTS, b"[]")))
    return [f for f in files if f.name not in replaced]


# ------------------------------------------------------------------------------------------- columnar reading


def count_events(root: Path, stage: str) -> int:
    """Number of events of `stage` (from the Parquet footers, no data read)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in _live_files(_event_files(events_dir(root, stage))))


def iter_event_chunks(
    root: Path,
    stage: str,
    columns: Mapping[str, pa.DataType],
    chunk_rows: int = 1 << 20,
    with_clip_id: bool = True,
) -> Iterator[pa.Table]:
    """The events of `stage` in write order as tables of about `chunk_rows` rows with exactly `columns` (plus
    `clip_id` first, unless `with_clip_id` is False), cast to the given types; a column a file lacks is null.
    Files are read in batches, so memory holds one chunk whatever the size of a (compacted) file."""
    wanted = {"clip_id": pa.string(), **columns} if with_clip_id else dict(columns)
    buf: list[pa.Table] = []
    rows = 0
    for f in _live_files(_event_files(events_dir(root, stage))):
        names = set(pq.read_schema(f).names)
        dict_cols = [c for c, t in wanted.items() if c in names and pa.types.is_dictionary(t)]
        pf = pq.ParquetFile(f, read_dictionary=dict_cols or None)
        present = [c for c in wanted if c in names]
        for batch in pf.iter_batches(batch_size=min(chunk_rows, 1 << 18), columns=present or None):
            n = batch.num_rows
            arrays = []
            for c, t in wanted.items():
                if c in names:
                    col = batch.column(c)
                    arrays.append(col if col.type == t else col.cast(t))
                else:
                    arrays.append(pa.nulls(n, t))
            buf.append(pa.table(arrays, names=list(wanted)))
            rows += n
            if rows >= chunk_rows:
                yield pa.concat_tables(buf).combine_chunks()
                buf, rows = [], 0
    if buf:
        yield pa.concat_tables(buf).combine_chunks()


@dataclass
class LatestEvents:
    """The last event per clip of one stage, aligned with the ids it was asked for (row i ↔ ids[i]).

    table: the requested columns of each clip's last event (all null where a clip has none);
    has_event: (n,) bool; events: (n,) int64 events per clip; transient_failures: (n,) int64 failed+transient events;
    orphan_ids: clip ids that have events but are not among the ids.
    """

    table: pa.Table
    has_event: np.ndarray
    events: np.ndarray
    transient_failures: np.ndarray
    orphan_ids: set[str]

    def column(self, name: str) -> pa.Array:
        col = self.table.column(name)
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()  # no copy of a one-chunk column


def latest_table(
    root: Path,
    stage: str,
    ids: pa.Array,
    columns: Mapping[str, pa.DataType],
    chunk_rows: int = 1 << 19,
    on_chunk: Callable[[int], None] | None = None,
    positions: tuple[np.ndarray, set[str]] | None = None,
) -> LatestEvents:
    """Reduce the event log of `stage` to the last event per clip of `ids` (unique), in columns.

    Two passes over the log: (1) the clip id column alone → each event's row in `ids` (`pc.index_in`, one hash
    table) and each clip's last event; (2) per chunk of the other columns, the values of the last events it holds
    (`take`), scattered into per-clip columns at the end. Memory: the per-clip columns plus one chunk (and 8 bytes
    per event for the row numbers), flat in the number of events. A column typed `pa.binary(k)` keeps the first k
    bytes of a string column (a sha256 prefix to compare
    downloads at a quarter of the memory). `on_chunk(rows)` is called after each chunk (progress bars).
    """
    n = len(ids)
    cols = {c: t for c, t in columns.items() if c != "clip_id"}
    read = {c: (pa.string() if _is_prefix(t) else t) for c, t in cols.items()}
    read.setdefault("status", pa.string())
    read.setdefault("transient", pa.bool_())
    # Pass 1: every event's clip id → its row in `ids` (one hash table for the whole log, clip ids only), and from
    # those each clip's last event (its global index in write order).
    pos, orphans = positions if positions is not None else event_positions(root, [stage], ids, chunk_rows)[stage]
    known = np.flatnonzero(pos >= 0)
    last = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last, pos[known], known)
    has = last >= 0
    events = np.bincount(pos[known], minlength=n).astype(np.int64)
    tfail = np.zeros(n, dtype=np.int64)
    # the clips' last events in write order (each chunk holds a contiguous run of them), without sorting
    is_last = np.zeros(pos.size, dtype=bool)
    is_last[last[has]] = True
    winner_at = np.flatnonzero(is_last)
    winners = pos[winner_at]
    parts: dict[str, list[pa.Array]] = {c: [] for c in cols}
    # Pass 2: per chunk of the other columns, the transient failures and the values of the last events it holds.
    offset = 0
    for chunk in iter_event_chunks(root, stage, read, chunk_rows, with_clip_id=False):
        m = chunk.num_rows
        p = pos[offset : offset + m]
        failed_t = pc.and_(pc.equal(chunk.column("status"), "failed"), pc.fill_null(chunk.column("transient"), False))
        ft = np.asarray(failed_t.to_numpy(zero_copy_only=False), dtype=bool) & (p >= 0)
        tfail += np.bincount(p[ft], minlength=n)
        lo, hi = np.searchsorted(winner_at, [offset, offset + m])
        local = pa.array(winner_at[lo:hi] - offset)
        for c, t in cols.items():
            col = chunk.column(c).take(local)
            if _is_prefix(t):
                col = pc.utf8_rpad(pc.utf8_slice_codeunits(col, 0, t.byte_width), t.byte_width, " ").cast(t)
            parts[c].append(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
        offset += m
        if on_chunk is not None:
            on_chunk(m)
        del chunk
    # one scatter per column: clip i takes the value at its rank among the winners (null without events)
    rank = np.full(n, -1, dtype=np.int64)
    rank[winners] = np.arange(winners.size, dtype=np.int64)
    scatter = pa.array(rank, mask=rank < 0)
    state = {}
    for c, t in cols.items():
        values = pa.concat_arrays(parts.pop(c)) if winners.size else pa.nulls(0, t)
        state[c] = values.take(scatter)
    table = pa.table(list(state.values()), names=list(state)) if state else pa.table({})
    return LatestEvents(table, has, events, tfail, orphans)


def event_positions(
    root: Path, stages: Sequence[str], ids: pa.Array, chunk_rows: int = 1 << 19
) -> dict[str, tuple[np.ndarray, set[str]]]:
    """Per stage: (each event's row in `ids` or -1, the clip ids outside `ids`), in write order.

    One `pc.index_in` over the clip ids of all the stages: the hash table of `ids` (the costly part at 2 M clips)
    is built once."""
    per_stage = {s: [c.column("clip_id") for c in iter_event_chunks(root, s, {}, chunk_rows)] for s in stages}
    counts = {s: sum(len(c) for c in cols) for s, cols in per_stage.items()}
    chunks = [a for cols in per_stage.values() for col in cols for a in col.chunks]
    del per_stage
    out: dict[str, tuple[np.ndarray, set[str]]] = {}
    if not chunks:
        return {s: (np.zeros(0, dtype=np.int64), set()) for s in stages}
    all_ids = pa.chunked_array(chunks, pa.string())
    pos = pc.index_in(all_ids, value_set=ids)
    flat = pc.fill_null(pos, -1).to_numpy().astype(np.int64)
    start = 0
    for s in stages:
        end = start + counts[s]
        orphans: set[str] = set()
        if pos.null_count:
            part = all_ids.slice(start, end - start)
            orphans = set(pc.unique(part.filter(pc.is_null(pos.slice(start, end - start)))).to_pylist())
        out[s] = (flat[start:end], orphans)
        start = end
    return out


def _is_prefix(t: pa.DataType) -> bool:
    return pa.types.is_fixed_size_binary(t)
