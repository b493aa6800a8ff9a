"""Append-only event log per stage, and the latest state of each clip derived from it.

Every attempt at a stage (fetch, validate, shard, ...) for a clip is one event row. Events are buffered and flushed
as a small Parquet file written to a temporary name and renamed, so a reader never sees a partial file and a
process killed at any moment loses at most the events it had not flushed yet (the work they describe is then
redone on the next run: nothing is recorded twice as done, nothing done is lost from the manifest's accounting).

Required event keys: `clip_id`, `status` ("ok" | "failed"), `reason` (None when ok), `transient` (bool).
The ledger adds `stage`, `attempted_at` (UTC), `worker` (host:pid) and `seq` (monotonic within a flush file).
Any other keys are stage-specific columns (nullable); files with different columns concatenate by name.
`compact()` merges many small files into one, atomically.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tgdp.pipeline.layout import events_dir

__all__ = ["EventWriter", "append_events", "compact", "latest", "read_events"]

REQUIRED = ("clip_id", "status", "reason", "transient")
STATUSES = ("ok", "failed")


def _check(event: Mapping[str, Any]) -> None:
    missing = [k for k in REQUIRED if k not in event]
    if missing:
        raise ValueError(f"event for {event.get('clip_id')!r} lacks {missing}")
    if event["status"] not in STATUSES:
        raise ValueError(f"event status must be one of {STATUSES}, got {event['status']!r}")
    if event["status"] == "failed" and not event["reason"]:
        raise ValueError(f"failed event for {event['clip_id']!r} has no reason")


def _write_atomic(table: pa.Table, directory: Path, prefix: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{prefix}{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = directory / f".tmp-{name}"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    final = directory / name
    os.replace(tmp, final)
    return final


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
    # from_pylist takes its columns from the first row only: build the union so no stage column is dropped.
    keys = list(dict.fromkeys(k for row in rows for k in row))
    table = pa.Table.from_pylist([{k: row.get(k) for k in keys} for row in rows])
    return _write_atomic(table, events_dir(root, stage))


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
    tables = [pq.read_table(f, columns=columns) for f in files]
    return pa.concat_tables(tables, promote_options="permissive")


def latest(root: Path, stage: str) -> dict[str, dict[str, Any]]:
    """The last event of `stage` per clip id, as dicts (events are applied in write order)."""
    table = read_events(root, stage)
    state: dict[str, dict[str, Any]] = {}
    for row in table.to_pylist():
        state[row["clip_id"]] = row
    return state


def compact(root: Path, stage: str) -> Path | None:
    """Merge all event files of `stage` into one (same rows, same order), atomically; old files are removed after."""
    directory = events_dir(root, stage)
    on_disk = _event_files(directory)
    if len(on_disk) <= 1:
        return on_disk[0] if on_disk else None
    files = _live_files(on_disk)
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    # A crash between publishing the merged file and deleting the originals must not double every event: the merged
    # file names the files it replaces, and readers skip those (`_live_files`).
    table = table.replace_schema_metadata({_COMPACTS: json.dumps([f.name for f in files]).encode()})
    # The merged file sorts before any later flush but after nothing it replaces: name it after the first file.
    merged = directory / files[0].name.replace(".parquet", "-compact.parquet")
    tmp = directory / f".tmp-{merged.name}"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, merged)
    for f in on_disk:
        if f != merged:
            f.unlink(missing_ok=True)
    return merged


_COMPACTS = b"tgdp_compacts"


def _event_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith(".")) if directory.is_dir() else []


def _live_files(files: list[Path]) -> list[Path]:
    """`files` minus those a compacted file already holds (left behind when a compaction died before cleanup)."""
    replaced: set[str] = set()
    for f in files:
        if f.name.endswith("-compact.parquet"):
            meta = pq.read_schema(f).metadata or {}
            replaced.update(json.loads(meta.get(_COMPACTS, b"[]")))
    return [f for f in files if f.name not in replaced]
