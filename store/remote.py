"""Writing a split to an object store: shards uploaded from the local staging directory, resumable, index.json last
(the commit), under a lease so two shard runs on one prefix cannot both write (docs/STORE.md, "Remote stores").

Object stores have no rename and no `flock`. The commit rule is therefore: the split's shards and `datasets` files
go up first, `index.json` last; a reader opens a split only through its index.json, so it never sees a half-written
split. A re-shard that changes a committed split first deletes its old index.json (readers then get "no index.json"
rather than a mix), and removes the old split's leftover shard objects after the new commit.

Resume: `STORE/.uploads/<split>.json` records each shard object known complete (name, bytes, sha256), written after
each upload; with the old index.json's entries it tells a rerun which objects are already there with the right size
and sha256, so they are not uploaded again. The lease, `STORE/.shard.lease`, holds an owner (pid, host, run token)
and an expiry; it is renewed after every shard and deleted at the end. A run that finds another's unexpired lease
stops with a ShardError naming the holder; an expired one (its writer died) is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tgdp.store.format import INDEX_FILE, ShardError, StoreError, StoreIndex, store_json
from tgdp.store.fs import Location

__all__ = ["LEASE", "Lease", "PublishReport", "acquire_lease", "publish_split"]

LEASE = ".shard.lease"
LEASE_TTL_S = 600.0


@dataclass
class Lease:
    """This run's hold on a remote store prefix (`acquire_lease`)."""

    store: Location
    owner: str
    token: str
    ttl_s: float = LEASE_TTL_S

    def _write(self) -> None:
        body = {"owner": self.owner, "token": self.token, "expires": time.time() + self.ttl_s}
        self.store.write_bytes(store_json(body), LEASE)

    def renew(self) -> None:
        """Push the expiry forward; a ShardError if another run has taken the lease meanwhile."""
        held = _read_lease(self.store)
        if held is not None and held.get("token") != self.token:
            raise ShardError(f"{self.store}: lost the shard lease to {held.get('owner')}; rerun when it has finished")
        self._write()

    def release(self) -> None:
        held = _read_lease(self.store)
        if held is not None and held.get("token") == self.token:
            self.store.delete(LEASE)


def _read_lease(store: Location) -> dict[str, Any] | None:
    try:
        return json.loads(store.read_bytes(LEASE).decode("utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        return {"owner": "unreadable lease", "token": "", "expires": 0.0}


def acquire_lease(store: Location, ttl_s: float = LEASE_TTL_S, settle_s: float = 0.2) -> Lease:
    """Take the write lease of `store` (checking the bucket first); ShardError naming the holder when another run
    holds an unexpired one. After writing, the lease is read back once `settle_s` later: of two runs that wrote at
    the same moment, only the one whose token survived goes on."""
    store.check_bucket()
    held = _read_lease(store)
    if held is not None and float(held.get("expires", 0)) > time.time():
        raise _held(store, held)
    lease = Lease(store, f"pid {os.getpid()} on {socket.gethostname()}", uuid.uuid4().hex, ttl_s)
    lease._write()
    time.sleep(settle_s)
    held = _read_lease(store)
    if held is None or held.get("token") != lease.token:
        raise _held(store, held or {"owner": "another run (lease removed)", "expires": 0})
    return lease


def _held(store: Location, held: dict[str, Any]) -> ShardError:
    until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(held.get("expires", 0))))
    return ShardError(
        f"{store} is being written by another `tgdp-data shard` ({held.get('owner')}, lease until {until}); "
        "wait for it to finish (a dead run's lease expires by itself)"
    )


@dataclass
class PublishReport:
    """What `publish_split` did: shard objects uploaded, and those found complete and kept."""

    uploaded: int = 0
    kept: int = 0
    bytes_uploaded: int = 0


def _known(store: Location, split: Location, ledger: str) -> tuple[dict[str, dict[str, Any]], StoreIndex | None]:
    """Objects known complete: the committed index's shards and the upload ledger of an interrupted run."""
    known: dict[str, dict[str, Any]] = {}
    try:
        old: StoreIndex | None = StoreIndex.read(split)
    except (FileNotFoundError, StoreError):
        old = None
    if old is not None:
        known.update({e.file: {"bytes": e.bytes, "sha256": e.sha256} for e in old.shards})
    try:
        known.update(json.loads(store.read_bytes(".uploads", ledger).decode("utf-8")))
    except (FileNotFoundError, ValueError):
        pass
    return known, old


def publish_split(
    store: Location,
    index: StoreIndex,
    staging: Path,
    staged: list[str],
    files: dict[str, Any],
    renew: Callable[[], None] | None = None,
) -> PublishReport:
    """Upload the staged shards (`staged`, in index order) and the split's JSON files (`files`, index.json last)."""
    split, ledger = store.child(index.split), f"{index.split}.json"
    known, old = _known(store, split, ledger)
    if old is not None:
        store.write_bytes(store_json(known), ".uploads", ledger)  # the old shards stay known once uncommitted
        split.delete(INDEX_FILE)
    report = PublishReport()
    for name, entry in zip(staged, index.shards, strict=True):
        have = known.get(entry.file)
        if have == {"bytes": entry.bytes, "sha256": entry.sha256} and split.size(entry.file) == entry.bytes:
            report.kept += 1
        else:
            split.upload(staging / name, entry.file)
            known[entry.file] = {"bytes": entry.bytes, "sha256": entry.sha256}
            store.write_bytes(store_json(known), ".uploads", ledger)
            report.uploaded += 1
            report.bytes_uploaded += entry.bytes
        if renew is not None:
            renew()
    for name, obj in files.items():  # index.json last: the commit
        split.write_bytes(store_json(obj), name)
    current = {e.file for e in index.shards}
    for stale in sorted(set(known) - current):
        split.delete(stale)
    store.delete(".uploads", ledger)
    return report
