"""`tgdp-data shard ROOT --store STORE`: valid clips → memory-mappable Arrow shards. The format (index.json, the shard
writer, verify) belongs to `tgdp.store`; this module chooses the rows, the config and the metadata.

Per clip: the payload (16 JPEG q90 frames, kaldi fbank) that `validate` already computed from its own decode and left
in the feature cache ROOT/features/<bb>/<safe_name>.npz (`features.read_feature_cache`, used only when its key —
fetch sha256, window, `FeatureParams`, valid_rule, ffmpeg version — matches). Clips without a matching entry fall back
to `shard_clip`: ONE ffmpeg decode of the validated window (`media.decode_window`: 16 kHz mono first channel PCM +
the T sampled frames, short side → 224 + centre crop, on pipes), kaldi fbank, JPEG q90 (`features.clip_payload`, the
code validate runs, so both paths give the same bytes). Once a split is in place its cache entries are removed unless
`keep_feature_cache`.

Driver (`run_shard`): clips whose latest validate event is valid, split by manifest split (*eval*/*test* → eval,
else train), sorted by clip id. Clips are decoded in windows of `window_clips` through `map_unordered`; each
window's results are re-ordered by clip id and streamed into the shard writer, so memory is bounded by one window
plus one record batch whatever the corpus size. Shards are CONTIGUOUS runs of the sorted ids: a shard is closed
once its payload (JPEG + fbank bytes) reaches `shard_bytes`. The assignment depends only on the inputs, so a rerun
on identical inputs writes byte-identical files.

Crash safety: finished shards go to STORE/.staging/<split>/ (`StoreWriter`: temporary name, fsync, rename; a
sidecar JSON names their clips and an input digest). A rerun reuses the staged prefix whose clips and digest still
match and decodes the rest. Only when every shard is done is the split assembled in a temporary directory (named
`data-XXXXX-of-NNNNN.arrow`, `dataset_info.json`, `state.json`, `index.json`) and renamed into place, so STORE/<split>
is always either the previous complete store or the new complete one. At the end STORE/dataset_dict.json names the
complete splits, so `datasets.load_from_disk(STORE)` opens the whole store as a DatasetDict. A write error (ENOSPC)
removes the partial file and raises `ShardError` naming it. One run at a time per store: `run_shard` holds an
exclusive `flock` on STORE/.shard.lock (removed at the end); a second run fails at once with a `ShardError` naming
the holder's pid, host and start time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from tgdp.config import StrictConfig
from tgdp.core.lock import RunLock
from tgdp.pipeline.features import (
    FBANK_PARAMS,
    FeatureParams,
    cache_key,
    clip_payload,
    feature_cache_path,
    read_feature_cache,
)
from tgdp.pipeline.layout import manifest_path, safe_name, within_root
from tgdp.pipeline.ledger import append_table, compact_if_many, latest, latest_table
from tgdp.pipeline.media import decode_window, ffmpeg_version
from tgdp.pipeline.parallel import map_unordered
from tgdp.store.format import (
    FLAGS,
    METRICS_F32,
    STORE_FORMAT,
    ShardError,
    StoreError,
    StoreIndex,
    rows_digest,
    store_features,
)
from tgdp.store.fs import Location, location
from tgdp.store.remote import acquire_lease
from tgdp.store.writer import (
    StoreWriter,
    assemble_split,
    open_sink,
    recover_split,
    shard_entry,
    write_dataset_dict,
    write_store_json,
)

__all__ = [
    "ShardConfig",
    "ShardSummary",
    "ShardTask",
    "run_shard",
    "shard_clip",
    "split_group",
    "store_lock",
    "store_meta",
]

log = logging.getLogger(__name__)


STORE_LOCK = ".shard.lock"


def store_lock(store: Path | str) -> RunLock:
    """Take the exclusive lock of STORE (`STORE/.shard.lock`) for one shard run; ShardError names the holder."""
    return RunLock(Path(store) / STORE_LOCK, what="`tgdp-data shard`", error=ShardError)


class ShardConfig(StrictConfig):
    """How the store is cut into shards and decoded; what goes into a row (frames, JPEG quality, fbank) is the
    `features.*` settings (`FeatureParams`), passed to `run_shard` beside it. Everything that changes the bytes is in
    the store metadata."""

    shard_bytes: int = Field(
        1_000_000_000, ge=1, description="close a shard once its payload reaches this many bytes (~1 GB)"
    )
    batch_rows: int = Field(64, ge=1, description="rows per Arrow record batch (~32 MB)")
    window_clips: int = Field(
        128, ge=1, description="clips decoded in parallel before being written in order (bounds memory)"
    )
    ffmpeg_threads: int = Field(1, ge=0, description="ffmpeg decode threads per clip (0 = ffmpeg's choice)")
    timeout_s: float = Field(300.0, gt=0, description="seconds before one clip's decode is killed")
    keep_feature_cache: bool = Field(
        False, description="keep ROOT/features entries after their split is written (disk: about the store size)"
    )


def split_group(split: str) -> str:
    """Store split of a manifest split: anything naming eval or test → "eval", else "train"."""
    s = split.lower()
    return "eval" if ("eval" in s or "test" in s) else "train"


def store_meta(cfg: FeatureParams) -> dict[str, Any]:
    """Store metadata (index.json `meta`, and the Arrow schema metadata) of the feature settings `cfg`."""
    fb = dict(FBANK_PARAMS, sr=cfg.sample_rate, num_mel_bins=cfg.num_mel_bins, target_length=cfg.target_length)
    return {
        "format": STORE_FORMAT,
        "fbank": fb,
        "frames": {
            "n": cfg.num_frames,
            "size": cfg.frame_size,
            "crop": "center",
            "resize": "short side, ffmpeg bicubic",
            "jpeg_quality": cfg.jpeg_quality,
            "sampling": "t_i=(i+0.5)*D/n window-relative; first decoded frame with pts>=t_i (last if the stream ends)",
        },
        "audio": {"sr": cfg.sample_rate, "channel": "first", "resampler": "ffmpeg swr"},
        "ffmpeg_version": ffmpeg_version(),
    }


# -- per clip ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShardTask:
    """One valid clip to pack (`_tasks`): its raw file (absolute path), the validated window in it, the store row's
    manifest and validate columns (`row`), and its feature-cache entry with the key it must carry to be used."""

    clip_id: str
    path: str
    window_start_s: float
    duration_s: float
    row: dict[str, Any]
    cache_path: str | None = None
    cache_key: str | None = None


def cached_clip(task: ShardTask, features: FeatureParams) -> dict[str, Any] | None:
    """The shard_clip result from the feature cache, or None when the task's entry is missing, stale or damaged."""
    if not task.cache_path or not task.cache_key:
        return None
    payload = read_feature_cache(Path(task.cache_path), task.cache_key)
    if payload is None:
        return None
    if len(payload["frames_jpeg"]) != features.num_frames or payload["fbank"].shape != (
        features.target_length,
        features.num_mel_bins,
    ):
        return None
    row = dict(task.row)
    row.update(payload)
    return {"clip_id": task.clip_id, "row": row, "reason": None}


def shard_clip(task: ShardTask, cfg: ShardConfig, features: FeatureParams) -> dict[str, Any]:
    """One valid clip → {"clip_id", "row": dict | None, "reason": str | None} by decoding. Pure: reads the file only.
    `features`: what goes into the row (`features.*`)."""
    clip_id = task.clip_id
    kw = dict(
        num_frames=features.num_frames,
        size=features.frame_size,
        sample_rate=features.sample_rate,
        threads=cfg.ffmpeg_threads,
        timeout=cfg.timeout_s,
    )
    path, start, dur = Path(task.path), float(task.window_start_s), float(task.duration_s)
    decoded = decode_window(path, start, dur, **kw)
    if start > 0 and (decoded.errors or decoded.returncode != 0):
        decoded = decode_window(path, start, dur, from_start=True, **kw)  # as validate does after a seek error
    if decoded.errors or decoded.returncode != 0:
        return {"clip_id": clip_id, "row": None, "reason": f"corrupt_decode: {decoded.first_error}"}
    payload, reason = clip_payload(decoded.frames, decoded.frame_pts_s, decoded.pcm, features)
    if payload is None:
        return {"clip_id": clip_id, "row": None, "reason": reason}
    row = dict(task.row)
    row.update(payload)
    return {"clip_id": clip_id, "row": row, "reason": None}


# -- writing -----------------------------------------------------------------------------------------------


def _open_sink(path: Path) -> BinaryIO:
    """The file a shard is written to (a seam for fault-injection tests)."""
    return open_sink(path)


def _write_json(path: Path, obj: Any) -> None:
    """One JSON file of a store, atomically (a seam for fault-injection tests)."""
    write_store_json(path, obj)


# -- driver ------------------------------------------------------------------------------------------------


@dataclass
class ShardSummary:
    """What one shard run did per split."""

    rows: dict[str, int] = field(default_factory=dict)
    shards: dict[str, int] = field(default_factory=dict)
    decoded: int = 0  # clips decoded here (no usable feature cache entry)
    from_cache: int = 0  # clips packed from validate's feature cache
    reused_shards: int = 0
    up_to_date: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _tasks(root: Path, params: FeatureParams) -> dict[str, list[ShardTask]]:
    """The valid clips of ROOT by store split, sorted by clip id; cache keys for the feature settings `params`."""
    table = pq.read_table(manifest_path(root))
    fetches = latest(root, "fetch")
    validates = latest(root, "validate")
    ff_version = ffmpeg_version()
    groups: dict[str, list[ShardTask]] = {}
    for row in sorted(table.to_pylist(), key=lambda r: r["clip_id"]):
        ev = validates.get(row["clip_id"])
        fe = fetches.get(row["clip_id"])
        if not ev or not ev.get("valid") or not fe or fe.get("status") != "ok":
            continue
        if ev.get("fetch_sha256") != fe.get("sha256"):
            continue  # re-fetched since it was validated: validate again first
        path = root / fe["raw_path"]
        if not within_root(root, path):
            raise ValueError(f"fetch event for {row['clip_id']!r} points outside ROOT")
        copy = {k: row.get(k) for k in ("clip_id", "video_id", "dataset", "split", "ytid", "start_s", "end_s")}
        copy.update(
            labels=list(row.get("labels") or []),
            leak_eval_overlap=bool(row.get("leak_eval_overlap") or False),
            source_file=row.get("source_file"),
            source_line=row.get("source_line"),
            window_start_s=float(ev["window_start_s"]),
            video_frames=ev.get("video_frames"),
            fetch_sha256=fe.get("sha256"),
            **{k: ev.get(k) for k in (*METRICS_F32, *FLAGS)},
        )
        dur = float(row["end_s"]) - float(row["start_s"])
        key = cache_key(fe.get("sha256"), float(ev["window_start_s"]), dur, params, ev.get("valid_rule"), ff_version)
        groups.setdefault(split_group(row["split"]), []).append(
            ShardTask(
                clip_id=row["clip_id"],
                path=str(path),
                window_start_s=float(ev["window_start_s"]),
                duration_s=dur,
                row=copy,
                cache_path=str(feature_cache_path(root, row["clip_id"])),
                cache_key=key,
            )
        )
    return groups


def _digest(task: ShardTask, meta_digest: str) -> str:
    # Everything that determines the row's bytes except the file path (ROOT may move).
    payload = json.dumps({"row": task.row, "meta": meta_digest}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class _Target:
    """Where a shard run writes: the store `loc`, the local staging root, the events' `store` value, the lease."""

    loc: Location
    staging: Path
    where: str
    renew: Any = None

    @classmethod
    def of(cls, root: Path, store: str | os.PathLike | Location, endpoint_url: str | None) -> _Target:
        loc = location(store, endpoint_url)
        if not loc.remote:
            local = loc.local
            local.mkdir(parents=True, exist_ok=True)
            return cls(loc, local / ".staging", str(local.resolve()))
        # A remote store is staged on ROOT's disk (POSIX: renames, fsync), one folder per store URI.
        return cls(loc, root / "store-staging" / safe_name(loc.uri), loc.uri)


def _shard_ids(path: Path) -> list[str]:
    """The clip ids of one store shard, in order (only the clip_id column is read)."""
    with pa.memory_map(str(path), "r") as source:
        reader = pa.ipc.open_stream(source)
        return [cid for batch in reader for cid in batch.column("clip_id").to_pylist()]


def _shard_split(
    root: Path,
    target: _Target,
    split: str,
    tasks: list[ShardTask],
    settings: tuple[ShardConfig, FeatureParams],
    summary: ShardSummary,
    *,
    backend: str,
    num_workers: int,
    address: str | None,
    force: bool,
    progress: bool,
) -> None:
    cfg, params = settings
    meta = store_meta(params)
    meta_digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    digests = [_digest(t, meta_digest) for t in tasks]
    inputs_sha256 = rows_digest(digests)
    if not force and _up_to_date(root, target, split, tasks, inputs_sha256, summary):
        _drop_cache(tasks, cfg)
        return

    features = store_features(params)
    schema = features.arrow_schema
    schema = schema.with_metadata({**(schema.metadata or {}), b"tgdp": json.dumps(meta, sort_keys=True).encode()})
    staging = target.staging / split
    staging.mkdir(parents=True, exist_ok=True)
    shape = (params.target_length, params.num_mel_bins)
    kw = dict(fbank_shape=shape, shard_bytes=cfg.shard_bytes, batch_rows=cfg.batch_rows, open_sink=_open_sink)
    with StoreWriter(staging, schema, **kw) as writer:
        # Reuse the staged prefix of shards whose clips and inputs are unchanged.
        pos = writer.resume([] if force else [t.clip_id for t in tasks], digests)
        summary.reused_shards += len(writer.shards)
        parallel = (backend, num_workers, address)
        _pack(writer, tasks, digests, pos, settings, summary, parallel, f"shard {split}", progress)
    index = StoreIndex(
        split=split,
        num_rows=sum(side["rows"] for side in writer.shards),
        shards=[shard_entry(k, len(writer.shards), side) for k, side in enumerate(writer.shards)],
        meta=meta,
        config={**params.model_dump(), **cfg.model_dump()},  # the features.* settings and the shard section
        inputs_sha256=inputs_sha256,
    )
    staged = [side["file"] for side in writer.shards]
    assemble_split(target.loc, index, staging, staged, features, _write_json, target.renew)
    placed = [(e.file, side["clip_ids"]) for e, side in zip(index.shards, writer.shards, strict=True)]
    summary.rows[split], summary.shards[split] = index.num_rows, len(index.shards)
    _shard_events(root, target.where, split, placed, tasks, summary.failed)
    _drop_cache(tasks, cfg)


def _up_to_date(
    root: Path, target: _Target, split: str, tasks: list[ShardTask], inputs_sha256: str, summary: ShardSummary
) -> bool:
    """Whether STORE/<split> already holds these inputs (then its missing shard events are recorded)."""
    final = target.loc.child(split)
    try:
        old = StoreIndex.read(final)
    except FileNotFoundError:
        return False
    except StoreError as exc:  # another format or a damaged index: this run rebuilds the split
        log.warning("%s; rebuilding %s", exc, final)
        return False
    if old.inputs_sha256 != inputs_sha256 or not all(final.size(s.file) == s.bytes for s in old.shards):
        return False
    summary.up_to_date.append(split)
    summary.rows[split], summary.shards[split] = old.num_rows, len(old.shards)
    if _all_recorded(root, target.where, tasks):
        return True  # nothing to add: no shard is read (a remote one would be downloaded)
    if final.remote:
        from tgdp.store.cache import default_cache

        cache = default_cache()
        placed = [(s.file, _shard_ids(cache.fetch(final, s))) for s in old.shards]
    else:
        placed = [(s.file, _shard_ids(final.local / s.file)) for s in old.shards]
    _shard_events(root, target.where, split, placed, tasks, summary.failed, only_new=True)
    return True


def _all_recorded(root: Path, where: str, tasks: list[ShardTask]) -> bool:
    """Whether every task's latest shard event is ok, in this store, on the same download."""
    ids = pa.array([t.clip_id for t in tasks], pa.string())
    cols = {"status": pa.string(), "fetch_sha256": pa.string(), "store": pa.string()}
    last = latest_table(root, "shard", ids, cols)
    sha = pa.array([t.row.get("fetch_sha256") for t in tasks], pa.string())
    ok = pc.and_(
        pc.and_(pc.equal(last.column("status"), "ok"), pc.equal(last.column("store"), where)),
        pc.equal(last.column("fetch_sha256"), sha),
    )
    return bool(pc.all(pc.fill_null(ok, False)).as_py())


def _pack(
    writer: StoreWriter,
    tasks: list[ShardTask],
    digests: list[str],
    pos: int,
    settings: tuple[ShardConfig, FeatureParams],
    summary: ShardSummary,
    parallel: tuple[str, int, str | None],
    desc: str,
    progress: bool,
) -> None:
    """Write the rows of tasks[pos:] in order: windows of `window_clips`, from the feature cache or decoded through
    `parallel.map_unordered` (`parallel` = backend, num_workers, address; the settings are bound once per run);
    clips that fail go to `summary.failed`."""
    cfg, params = settings
    work = functools.partial(shard_clip, cfg=cfg, features=params)
    backend, num_workers, address = parallel
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), initial=pos, unit="clip", desc=desc)
    try:
        for w in range(pos, len(tasks), cfg.window_clips):
            window = tasks[w : w + cfg.window_clips]
            results = {}
            for task in window:  # cached payloads are a file read: done here, not worth a worker round trip
                res = cached_clip(task, params)
                if res is not None:
                    results[task.clip_id] = res
            todo = [t for t in window if t.clip_id not in results]
            summary.from_cache += len(results)
            if todo:
                decoded = map_unordered(work, todo, backend=backend, num_workers=num_workers, address=address)
                results.update((r["clip_id"], r) for r in decoded)
            summary.decoded += len(todo)
            for k, task in enumerate(window):
                res = results[task.clip_id]
                if res["row"] is None:
                    summary.failed[task.clip_id] = res["reason"]
                    continue
                writer.add(res["row"], digests[w + k])
            if bar is not None:
                bar.update(len(window))
    finally:
        if bar is not None:
            bar.close()


def _drop_cache(tasks: list[ShardTask], cfg: ShardConfig) -> None:
    """Remove the feature cache entries of a split that is now in place (unless asked to keep them)."""
    if cfg.keep_feature_cache:
        return
    for task in tasks:
        if task.cache_path:
            Path(task.cache_path).unlink(missing_ok=True)


def _shard_events(
    root: Path,
    where: str,
    split: str,
    placed: list[tuple[str, list[str]]],
    tasks: list[ShardTask],
    failed: Mapping[str, str],
    only_new: bool = False,
) -> None:
    """Record one `shard` event per clip of a split now in place (ok: which store, split and file) and per clip that
    could not be packed (failed, by reason), so that `tgdp-data status` counts sharded clips from ROOT alone.

    `only_new`: for a split found up to date, record only clips without an ok event on the same download."""
    sha = {t.clip_id: t.row.get("fetch_sha256") for t in tasks}
    ids = [cid for _, cids in placed for cid in cids]
    files = [name for name, cids in placed for _ in cids]
    bad = [cid for cid in sha if cid in failed]
    table = pa.table(
        {
            "clip_id": pa.array(ids + bad, pa.string()),
            "status": pa.array(["ok"] * len(ids) + ["failed"] * len(bad), pa.string()),
            "reason": pa.array([None] * len(ids) + [failed[c].split(":", 1)[0] for c in bad], pa.string()),
            "transient": pa.array([False] * (len(ids) + len(bad))),
            "reason_detail": pa.array([None] * len(ids) + [failed[c][:500] for c in bad], pa.string()),
            "fetch_sha256": pa.array([sha.get(c) for c in ids + bad], pa.string()),
            "store": pa.array([where] * (len(ids) + len(bad)), pa.string()),
            "store_split": pa.array([split] * (len(ids) + len(bad)), pa.string()),
            "shard_file": pa.array(files + [None] * len(bad), pa.string()),
        }
    )
    if only_new and table.num_rows:
        cols = {"status": pa.string(), "fetch_sha256": pa.string(), "store": pa.string()}
        last = latest_table(root, "shard", table.column("clip_id").combine_chunks(), cols)
        recorded = pc.and_(
            pc.and_(pc.equal(last.column("status"), table.column("status")), pc.equal(last.column("store"), where)),
            pc.equal(last.column("fetch_sha256"), table.column("fetch_sha256")),
        )
        table = table.filter(pc.invert(pc.fill_null(recorded, False)))
    append_table(root, "shard", table)
    compact_if_many(root, "shard")


def run_shard(
    root: Path,
    store: str | os.PathLike | Location,
    cfg: ShardConfig | None = None,
    *,
    features: FeatureParams | None = None,
    backend: str = "serial",
    num_workers: int = 2,
    address: str | None = None,
    force: bool = False,
    progress: bool = False,
    endpoint_url: str | None = None,
) -> ShardSummary:
    """Write STORE/train and STORE/eval from the valid clips under ROOT (module docstring), rows made with the
    `features.*` settings `features` (default `FeatureParams()`; validate's feature cache is used when they match).
    STORE may be an object-store URI (`s3://bucket/prefix`; `endpoint_url` for an S3-compatible server)."""
    cfg = cfg or ShardConfig()
    params = features or FeatureParams()
    root = Path(root)
    target = _Target.of(root, store, endpoint_url)
    summary = ShardSummary()
    groups = _tasks(root, params)
    if not any(groups.values()):
        log.warning("no valid clips to shard in %s: run validate first (`tgdp-data status ROOT`)", root)
    lock = _take_lock(target)  # two runs on one store would share staging and the split being assembled
    try:
        for split in ("train", "eval"):
            if not target.loc.remote:
                recover_split(target.loc.local, split)  # a crash inside a fallback swap left only .old-<split>
            tasks = groups.get(split, [])
            if not tasks:
                continue
            _shard_split(
                root,
                target,
                split,
                tasks,
                (cfg, params),
                summary,
                backend=backend,
                num_workers=num_workers,
                address=address,
                force=force,
                progress=progress,
            )
        if target.staging.is_dir() and not any(target.staging.iterdir()):
            target.staging.rmdir()
        write_dataset_dict(target.loc, _write_json)
    finally:
        lock.release()
    return summary


def _take_lock(target: _Target) -> Any:
    """The local store's `flock` (`store_lock`), or for a remote store its lease (renewed after every shard)."""
    if not target.loc.remote:
        return store_lock(target.loc.local)
    lease = acquire_lease(target.loc)
    target.renew = lease.renew
    return lease
