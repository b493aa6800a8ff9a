"""The accounting funnel: every source clip in exactly one state, computed in columns from the event logs.

`clip_states(root)` gives each clip of ROOT's manifest one state (definitions: docs/STORE.md, "Clip states"):

  never_tried   no fetch event
  gone          last fetch failed permanently (by reason)
  pending       last fetch failed transiently and may be retried now (by reason)
  backoff       ... retried once `next_attempt_after` has passed
  gave_up       ... `max_attempts` transient failures reached (still pending: raise fetch.max_attempts to resume)
  file_missing  last fetch ok, but the clip has no verdict yet and its raw file is gone or has the wrong size: the
                next fetch downloads it again
  not_validated last fetch ok, no validate verdict on that download (sha256) yet (or only a transient one)
  dropped       validate's verdict on that download: invalid (by reason)
  valid         validate's verdict on that download: valid; not (yet) in a store
  sharded       valid, and packed into a store by `shard` (an ok shard event on that same download)

A verdict or a store row is a fact about the downloaded bytes (their sha256), so it stays true when the raw media
are deleted afterwards: a sharded clip whose media were deleted stays `sharded`, a dropped one stays `dropped`.
Only a clip whose next step needs the file (validate) falls back to `file_missing`. A valid clip not yet sharded
whose raw file and feature-cache entry are both gone is counted in `shard.raw_missing` (the next fetch downloads it
again). `funnel()` (what `tgdp-data status` prints) and `tgdp.pipeline.export` both derive their counts from
`clip_states`, so they agree on every count whatever is on disk.

Stage sums (`check`): source = fetched + gone + pending_transient + never_tried; fetched = valid + dropped +
not_validated; valid = sharded + not_sharded. Events of clip ids outside the manifest are `orphan_events`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tgdp.pipeline import ledger
from tgdp.pipeline.features import feature_cache_path
from tgdp.pipeline.layout import manifest_path, temporaries

__all__ = [
    "FETCHED_STATES",
    "STATES",
    "ClipStates",
    "clip_states",
    "format_funnel",
    "funnel",
    "funnel_from_states",
    "root_temporaries",
    "strictly_increasing",
    "unique_manifest",
]

STATES = (
    "never_tried",
    "gone",
    "pending",
    "backoff",
    "gave_up",
    "file_missing",
    "not_validated",
    "dropped",
    "valid",
    "sharded",
)
_S = {name: np.int8(i) for i, name in enumerate(STATES)}
FETCHED_STATES = ("not_validated", "dropped", "valid", "sharded")  # a download exists and is current
_PENDING = [_S[s] for s in ("pending", "backoff", "gave_up", "file_missing")]
_DICT = pa.dictionary(pa.int32(), pa.string())
_SHA = pa.binary(16)  # sha256 prefix: 64 bits tell two downloads of one clip apart
FETCH_COLUMNS = {
    "status": _DICT,
    "reason": _DICT,
    "transient": pa.bool_(),
    "sha256": pa.string(),
    "raw_path": pa.string(),
    "file_bytes": pa.int64(),
    "next_attempt_after": pa.timestamp("us", tz="UTC"),
}
VALIDATE_COLUMNS = {
    "status": _DICT,
    "reason": _DICT,
    "transient": pa.bool_(),
    "valid": pa.bool_(),
    "fetch_sha256": pa.string(),
    "valid_rule": _DICT,
}
SHARD_COLUMNS = {"status": _DICT, "reason": _DICT, "transient": pa.bool_(), "fetch_sha256": pa.string()}


@dataclass
class ClipStates:
    """One state per unique manifest clip (row i ↔ `manifest` row i ↔ source.parquet row source_rows[i]), plus the
    last event per stage behind it.

    state: (n,) int8 index into STATES; reason: (n,) string or null — the fetch reason for gone/pending/backoff/
    gave_up, "file_missing", the validate reason for dropped (and transient validate failures), the shard reason for
    valid clips whose last shard event failed; raw_missing: (n,) bool, valid-not-sharded clips without raw file or
    feature-cache entry; attempts / transient_failures: (n,) fetch events per clip.
    """

    manifest: pa.Table
    source_rows: np.ndarray
    state: np.ndarray
    reason: pa.Array
    raw_missing: np.ndarray
    attempts: np.ndarray
    transient_failures: np.ndarray
    fetch: ledger.LatestEvents
    validate: ledger.LatestEvents | None
    shard: ledger.LatestEvents | None
    duplicate_source_rows: int
    orphan_ids: set[str]

    def mask(self, *names: str) -> np.ndarray:
        return np.isin(self.state, [_S[n] for n in names])

    def fetched_on_disk(self, root: Path) -> np.ndarray:
        """(n,) bool: the last fetch is ok and its raw file is in ROOT with the recorded size, whatever the later
        verdicts say (what `import` leaves alone; a clip of any other state takes an imported file)."""
        fe = self.fetch
        ok = ledger.mask(pc.and_(pc.equal(fe.column("status"), "ok"), pc.is_valid(fe.column("file_bytes"))))
        idx = np.flatnonzero(ok)
        out = np.zeros(len(ok), dtype=bool)
        out[idx] = _files_present(root, fe.column("raw_path"), fe.column("file_bytes"), idx)
        return out


def _files_present(root: Path, rel: pa.Array, sizes: pa.Array | None, idx: np.ndarray) -> np.ndarray:
    """(len(idx),) bool: ROOT/rel[i] is a file (of sizes[i] bytes when given), for i in idx.

    The directories (buckets) are checked first, in columns: a clip in a missing bucket costs no system call, so a
    ROOT whose media were deleted is checked in a moment."""
    out = np.zeros(idx.size, dtype=bool)
    if idx.size == 0:
        return out
    base = os.fspath(root)
    paths = rel.take(pa.array(idx))
    if not (Path(root) / "raw").is_dir() and pc.all(pc.starts_with(paths, "raw/")).as_py():
        return out  # the media were deleted (ROOT/raw is gone): nothing to look for
    dirs = pc.replace_substring_regex(paths, r"/[^/]*$", "")
    uniq = pc.unique(dirs).drop_null().to_pylist()
    existing = pa.array([d for d in uniq if os.path.isdir(os.path.join(base, d))], pa.string())
    look = np.flatnonzero(ledger.mask(pc.is_in(dirs, value_set=existing)))
    if look.size == 0:
        return out
    want = sizes.take(pa.array(idx[look])).to_pylist() if sizes is not None else [None] * look.size
    for k, p, size in zip(look.tolist(), paths.take(pa.array(look)).to_pylist(), want, strict=True):
        try:
            st = os.stat(os.path.join(base, p))
        except OSError:
            continue
        out[k] = size is None or st.st_size == size
    return out


def _cache_present(root: Path, ids: pa.Array, idx: np.ndarray) -> np.ndarray:
    """Which of ids[idx] have a feature-cache entry (ROOT/features/<bb>/<safe_name>.npz)."""
    if idx.size == 0 or not (Path(root) / "features").is_dir():
        return np.zeros(idx.size, dtype=bool)
    rel = [feature_cache_path(root, cid).relative_to(root).as_posix() for cid in ids.take(pa.array(idx)).to_pylist()]
    return _files_present(root, pa.array(rel, pa.string()), None, np.arange(idx.size))


def clip_states(
    root: Path,
    max_attempts: int | None = 5,
    *,
    now: datetime | None = None,
    manifest_columns: Sequence[str] | None = ("clip_id", "split"),
    extra_columns: Mapping[str, Mapping[str, pa.DataType]] | None = None,
    check_files: bool = True,
    progress: bool = False,
    sha_type: pa.DataType | None = None,
) -> ClipStates:
    """Each manifest clip's state (module docstring), from the event logs in columns.

    `manifest_columns`: the manifest columns to keep (None: all); `extra_columns`: stage -> extra columns of that
    stage's last event to keep (export's metrics, `clips`' details), read in the same pass; `check_files`: look
    for raw files of clips that still need them. `max_attempts`: the cap the fetch runs used (None: nobody gives
    up). `sha_type`: how the fetch sha256 is kept (default: its first 16 hex digits, enough to tell two downloads
    of one clip apart; `pa.string()`: whole).
    """
    root = Path(root)
    manifest, source_rows, duplicates = unique_manifest(root, manifest_columns)
    ids = manifest.column("clip_id").combine_chunks()
    fe, va, sh = _latest_events(root, ids, extra_columns or {}, sha_type, progress)
    state, reason = _fetch_states(fe, max_attempts, now or datetime.now(timezone.utc))
    reason = _verdict_states(state, reason, fe, va, sh)
    raw_missing = np.zeros(len(ids), dtype=bool)
    if check_files:
        reason = _missing_files(root, ids, fe, state, reason, raw_missing)
    orphans = set(fe.orphan_ids)
    for ev in (va, sh):
        if ev is not None:
            orphans |= ev.orphan_ids
    return ClipStates(
        manifest=manifest,
        source_rows=source_rows,
        state=state,
        reason=reason,
        raw_missing=raw_missing,
        attempts=fe.events,
        transient_failures=fe.transient_failures,
        fetch=fe,
        validate=va,
        shard=sh,
        duplicate_source_rows=duplicates,
        orphan_ids=orphans,
    )


def unique_manifest(root: Path, manifest_columns: Sequence[str] | None) -> tuple[pa.Table, np.ndarray, int]:
    """The manifest with each clip id's first row only, those rows' indices in source.parquet (n,) int64, and the
    number of rows dropped as duplicates."""
    mpath = manifest_path(root)
    if not mpath.is_file():
        raise FileNotFoundError(f"{mpath} not found: run `tgdp-data manifest` first")
    cols = None if manifest_columns is None else list(dict.fromkeys(["clip_id", "split", *manifest_columns]))
    manifest = pq.read_table(mpath, columns=cols)
    ids = manifest.column("clip_id").combine_chunks()
    # `manifest` writes the ids sorted and unique: checking that is far cheaper than hashing 2 M ids
    ordered = strictly_increasing(ids)
    unique = ids if ordered else pc.unique(ids)
    duplicates = len(ids) - len(unique)
    source_rows = np.arange(len(ids), dtype=np.int64)
    if duplicates:  # keep each clip's first row
        source_rows = np.sort(np.unique(pc.index_in(ids, value_set=unique).to_numpy(), return_index=True)[1])
        manifest = manifest.take(pa.array(source_rows))
    return manifest, source_rows, duplicates


def strictly_increasing(ids: pa.Array | pa.ChunkedArray) -> bool:
    """Whether the ids are sorted and unique, as `manifest` writes them (a hand-made manifest may not be)."""
    return len(ids) < 2 or bool(pc.all(pc.greater(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py())


def _latest_events(
    root: Path,
    ids: pa.Array,
    extra: Mapping[str, Mapping[str, pa.DataType]],
    sha_type: pa.DataType | None,
    progress: bool,
) -> tuple[ledger.LatestEvents, ledger.LatestEvents | None, ledger.LatestEvents | None]:
    """The last fetch, validate and shard event per id (None for a stage that has no events yet)."""
    stages = [s for s in ("validate", "shard") if ledger.has_events(root, s)]
    bar = None
    if progress:
        from tqdm import tqdm

        total = sum(ledger.count_events(root, s) for s in ["fetch", *stages])
        bar = tqdm(total=total, unit="event", unit_scale=True, desc="reading events", leave=False, disable=None)
    step = bar.update if bar is not None else None
    try:
        where = ledger.event_positions(root, ["fetch", *stages], ids)  # one hash table of the ids for all stages
        fcols = {**FETCH_COLUMNS, **extra.get("fetch", {}), "sha256": sha_type or _SHA}
        fe = ledger.latest_table(root, "fetch", ids, fcols, on_chunk=step, positions=where["fetch"])
        va = sh = None
        if "validate" in stages:
            vcols = {**VALIDATE_COLUMNS, **extra.get("validate", {}), "fetch_sha256": _SHA}
            va = ledger.latest_table(root, "validate", ids, vcols, on_chunk=step, positions=where["validate"])
        if "shard" in stages:
            scols = {**SHARD_COLUMNS, **extra.get("shard", {}), "fetch_sha256": _SHA}
            sh = ledger.latest_table(root, "shard", ids, scols, on_chunk=step, positions=where["shard"])
    finally:
        if bar is not None:
            bar.close()
    return fe, va, sh


def _fetch_states(fe: ledger.LatestEvents, max_attempts: int | None, now: datetime) -> tuple[np.ndarray, pa.Array]:
    """What the last fetch says: state (n,) int8 — never_tried, gone, pending, backoff, gave_up, or not_validated
    for an ok fetch — and reason (n,): the fetch reason of failed clips, null for the others."""
    n = len(fe.has_event)
    status = fe.column("status")
    ok = ledger.mask(pc.equal(status, "ok"))
    failed = ledger.mask(pc.equal(status, "failed"))
    transient = ledger.mask(fe.column("transient"))
    state = np.full(n, _S["never_tried"], dtype=np.int8)
    state[failed & ~transient] = _S["gone"]
    ft = failed & transient
    state[ft] = _S["pending"]
    if max_attempts is not None:
        gave_up = ft & (fe.transient_failures >= max_attempts)
    else:
        gave_up = np.zeros(n, dtype=bool)
    later = ledger.mask(pc.greater(fe.column("next_attempt_after"), pa.scalar(now, pa.timestamp("us", tz="UTC"))))
    state[ft & ~gave_up & later] = _S["backoff"]
    state[gave_up] = _S["gave_up"]
    state[ok] = _S["not_validated"]
    reason = fe.column("reason").cast(pa.string())
    return state, pc.if_else(pa.array(ok), pa.nulls(n, pa.string()), reason)


def _verdict_states(
    state: np.ndarray,
    reason: pa.Array,
    fe: ledger.LatestEvents,
    va: ledger.LatestEvents | None,
    sh: ledger.LatestEvents | None,
) -> pa.Array:
    """Fetched clips move on by the verdicts on their download (same sha256): dropped or valid by the last
    validate event, sharded by an ok shard event. `state` is updated in place; the reasons come back."""
    n = len(state)
    fsha = fe.column("sha256")
    if fsha.type != _SHA:  # the whole sha256 was asked for: compare its prefix with the other stages'
        fsha = pc.utf8_rpad(pc.utf8_slice_codeunits(fsha, 0, _SHA.byte_width), _SHA.byte_width, " ").cast(_SHA)
    ok = state == _S["not_validated"]  # every ok fetch, so far
    if va is not None:
        current = ok & va.has_event & ledger.same_or_both_null(va.column("fetch_sha256"), fsha)
        vtransient = ledger.mask(va.column("transient"))
        settled = current & ~vtransient
        valid = settled & ledger.mask(va.column("valid"))
        state[settled & ~valid] = _S["dropped"]
        state[valid] = _S["valid"]
        vreason = va.column("reason").cast(pa.string())
        reason = pc.if_else(pa.array(current), vreason, reason)
    if sh is not None:
        on_download = (state == _S["valid"]) & sh.has_event & ledger.same_or_both_null(sh.column("fetch_sha256"), fsha)
        packed = on_download & ledger.mask(pc.equal(sh.column("status"), "ok"))
        shard_failed = on_download & ledger.mask(pc.equal(sh.column("status"), "failed"))
        state[packed] = _S["sharded"]
        reason = pc.if_else(pa.array(shard_failed), sh.column("reason").cast(pa.string()), reason)
        reason = pc.if_else(pa.array(packed), pa.nulls(n, pa.string()), reason)
    return reason


def _missing_files(
    root: Path, ids: pa.Array, fe: ledger.LatestEvents, state: np.ndarray, reason: pa.Array, raw_missing: np.ndarray
) -> pa.Array:
    """Clips whose next step needs the raw file: not_validated ones without it become file_missing (`state` in
    place, the reasons come back); valid-not-sharded ones without it and without a feature-cache entry are marked
    in `raw_missing` (n,) bool."""
    todo = np.flatnonzero((state == _S["not_validated"]) | (state == _S["valid"]))
    present = _files_present(root, fe.column("raw_path"), fe.column("file_bytes"), todo)
    lost = todo[~present]
    unvalidated = lost[state[lost] == _S["not_validated"]]
    state[unvalidated] = _S["file_missing"]
    mark = np.zeros(len(state), dtype=bool)
    mark[unvalidated] = True
    reason = pc.if_else(pa.array(mark), pa.scalar("file_missing"), reason)
    unsharded = lost[state[lost] == _S["valid"]]
    raw_missing[unsharded[~_cache_present(root, ids, unsharded)]] = True
    return reason


def _by_reason(reason: pa.Array, mask: np.ndarray, default: str) -> dict[str, int]:
    if not mask.any():
        return {}
    vc = pc.value_counts(pc.fill_null(reason.filter(pa.array(mask)), default))
    return dict(sorted((str(v["values"]), int(v["counts"])) for v in vc.to_pylist()))


def funnel_from_states(cs: ClipStates) -> dict[str, Any]:
    """The funnel dict (module docstring) of computed clip states; `check` is True when every stage sums."""
    counts = np.bincount(cs.state, minlength=len(STATES))
    c = {name: int(counts[i]) for i, name in enumerate(STATES)}
    st = cs.state
    fetched = sum(c[s] for s in FETCHED_STATES)
    pending = c["pending"] + c["backoff"] + c["gave_up"] + c["file_missing"]
    out: dict[str, Any] = {
        "source": len(st),
        "duplicate_source_rows": cs.duplicate_source_rows,
        "fetch": {
            "fetched": fetched,
            "gone": c["gone"],
            "gone_by_reason": _by_reason(cs.reason, st == _S["gone"], "unknown"),
            "pending_transient": pending,
            "pending_by_reason": _by_reason(cs.reason, np.isin(st, _PENDING), "unknown"),
            "pending_backoff": c["backoff"],
            "pending_gave_up": c["gave_up"],
            "never_tried": c["never_tried"],
        },
        "validate": {
            "valid": c["valid"] + c["sharded"],
            "dropped": c["dropped"],
            "dropped_by_reason": _by_reason(cs.reason, st == _S["dropped"], "invalid"),
            "not_validated": c["not_validated"],
        },
        "shard": {
            "sharded": c["sharded"],
            "not_sharded": c["valid"],
            "failed_by_reason": _by_reason(
                cs.reason, (st == _S["valid"]) & ledger.mask(pc.is_valid(cs.reason)), "failed"
            ),
            "raw_missing": int(cs.raw_missing.sum()),
        },
        "orphan_events": len(cs.orphan_ids),
    }
    f, v, s = out["fetch"], out["validate"], out["shard"]
    out["check"] = bool(
        f["fetched"] + f["gone"] + f["pending_transient"] + f["never_tried"] == out["source"]
        and v["valid"] + v["dropped"] + v["not_validated"] == f["fetched"]
        and s["sharded"] + s["not_sharded"] == v["valid"]
        and sum(f["gone_by_reason"].values()) == f["gone"]
        and sum(f["pending_by_reason"].values()) == f["pending_transient"]
        and sum(v["dropped_by_reason"].values()) == v["dropped"]
    )
    return out


def funnel(root: Path, max_attempts: int | None = 5, progress: bool = False) -> dict[str, Any]:
    """The funnel of ROOT as a JSON-able dict (what `tgdp-data status --json` prints)."""
    out = funnel_from_states(clip_states(root, max_attempts, progress=progress))
    out["temporaries"] = root_temporaries(root)
    return out


def root_temporaries(root: Path, shown: int = 20) -> dict[str, Any]:
    """The `.tmp-*` files under ROOT's manifest/, events/, features/ and export/ (a running writer's, or debris of a
    killed one that the next run of its stage removes): {"count": n, "paths": the first `shown`, relative to ROOT}."""
    root = Path(root)
    found = temporaries(root / "manifest") + temporaries(root / "events", 1) + temporaries(root / "features", 1)
    found += temporaries(root / "export")  # the usual export folder (`--out ROOT/export`)
    return {"count": len(found), "paths": [p.relative_to(root).as_posix() for p in found[:shown]]}


def format_funnel(f: dict[str, Any]) -> str:
    """Human-readable funnel (what `tgdp-data status` prints without `--json`)."""
    fe = f["fetch"]
    lines = [f"source clips            {f['source']:>10,}"]
    lines.append(f"  fetched               {fe['fetched']:>10,}")
    lines.append(f"  gone (permanent)      {fe['gone']:>10,}")
    lines += [f"    {r:<20}{n:>10,}" for r, n in fe["gone_by_reason"].items()]
    lines.append(f"  pending (transient)   {fe['pending_transient']:>10,}")
    lines += [f"    {r:<20}{n:>10,}" for r, n in fe["pending_by_reason"].items()]
    lines.append(f"    (backing off {fe['pending_backoff']:,}, gave up at the attempt cap {fe['pending_gave_up']:,})")
    lines.append(f"  never tried           {fe['never_tried']:>10,}")
    v = f["validate"]
    lines.append(f"validate: valid {v['valid']:,}, dropped {v['dropped']:,}, not validated {v['not_validated']:,}")
    lines += [f"    {r:<20}{n:>10,}" for r, n in v["dropped_by_reason"].items()]
    s = f["shard"]
    lines.append(f"shard: sharded {s['sharded']:,}, not sharded {s['not_sharded']:,}")
    lines += [f"    failed: {r:<12}{n:>10,}" for r, n in s["failed_by_reason"].items()]
    if s["raw_missing"]:
        lines.append(
            f"    {s['raw_missing']:,} valid clips not sharded have neither raw media nor a feature-cache entry: "
            "the next fetch downloads them again"
        )
    lines.append(f"orphan events           {f['orphan_events']:>10,}   (events of clips not in the manifest)")
    lines.append(f"duplicate source rows   {f['duplicate_source_rows']:>10,}   (repeats of a clip id, counted once)")
    tmp = f.get("temporaries") or {}
    if tmp.get("count"):
        note = "the next run of their stage removes those whose writer is gone"
        lines.append(f"temporary files left: {tmp['count']:,} ({note})")
        lines += [f"    {p}" for p in tmp["paths"]]
    lines.append("sums check: " + ("ok" if f["check"] else "MISMATCH"))
    return "\n".join(lines)
