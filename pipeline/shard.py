"""`tgdp-data shard ROOT --store STORE` and `tgdp-data verify STORE`: valid clips → memory-mappable Arrow shards.

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

Crash safety: finished shards go to STORE/.staging/<split>/ (written as .tmp, fsynced, renamed; a sidecar JSON
names their clips and an input digest). A rerun reuses the staged prefix whose clips and digest still match and
decodes the rest. Only when every shard is done is the split assembled in a temporary directory (named
`data-XXXXX-of-NNNNN.arrow`, `dataset_info.json`, `state.json`, `index.json`) and renamed into place, so STORE/<split>
is always either the previous complete store or the new complete one. At the end STORE/dataset_dict.json names the
complete splits, so `datasets.load_from_disk(STORE)` opens the whole store as a DatasetDict. A write error (ENOSPC)
removes the partial file and raises `ShardError` naming it. One run at a time per store: `run_shard` holds an
exclusive `flock` on STORE/.shard.lock (removed at the end); a second run fails at once with a `ShardError` naming
the holder's pid, host and start time.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from tgdp.pipeline.features import (
    FBANK_PARAMS,
    FeatureParams,
    cache_key,
    clip_payload,
    feature_cache_path,
    read_feature_cache,
)
from tgdp.pipeline.layout import file_sha256, manifest_path, within_root
from tgdp.pipeline.ledger import latest
from tgdp.pipeline.media import decode_window, ffmpeg_version
from tgdp.pipeline.validate import map_clips

__all__ = [
    "STORE_FORMAT",
    "ShardConfig",
    "ShardError",
    "ShardSummary",
    "VerifyReport",
    "run_shard",
    "shard_clip",
    "split_group",
    "store_features",
    "store_lock",
    "store_meta",
    "verify_store",
]

STORE_FORMAT = "tgdp-store/1"
_METRICS_F32 = ("audio_dur_s", "video_dur_s", "av_offset_s", "rms_dbfs", "silent_frac", "still_score")
_FLAGS = ("is_silent", "is_still", "is_av_offset")


class ShardError(RuntimeError):
    """The store could not be written; the message names the file and the cause."""


STORE_LOCK = ".shard.lock"


def store_lock(store: Path | str) -> Any:
    """Take the exclusive lock of STORE (`STORE/.shard.lock`) for one shard run; ShardError names the holder."""
    from tgdp.pipeline.fetch import RootLock

    try:
        return RootLock(Path(store) / STORE_LOCK, what="`tgdp-data shard`")
    except RuntimeError as exc:
        raise ShardError(str(exc)) from None


class ShardConfig(FeatureParams):
    """Store contents (the inherited `FeatureParams`: frames, JPEG quality, fbank) and sharding; everything that
    changes the bytes is in the store metadata."""

    shard_bytes: int = Field(1_000_000_000, ge=1)  # close a shard once its payload reaches this (~1 GB)
    batch_rows: int = Field(64, ge=1)  # rows per Arrow record batch (~32 MB)
    window_clips: int = Field(128, ge=1)  # clips decoded in parallel before being written in order (bounds memory)
    ffmpeg_threads: int = Field(1, ge=0)
    timeout_s: float = Field(300.0, gt=0)
    keep_feature_cache: bool = False  # keep ROOT/features entries after their split is written (disk: ~store size)

    def feature_params(self) -> FeatureParams:
        return FeatureParams(**{k: getattr(self, k) for k in FeatureParams.model_fields})


def split_group(split: str) -> str:
    """Store split of a manifest split: anything naming eval or test → "eval", else "train"."""
    s = split.lower()
    return "eval" if ("eval" in s or "test" in s) else "train"


def store_meta(cfg: ShardConfig) -> dict[str, Any]:
    """Store metadata (index.json `meta`, and the Arrow schema metadata)."""
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


def store_features(cfg: ShardConfig):
    """`datasets.Features` of a store row (imports `datasets`; the writer and verify need its Arrow types)."""
    import datasets

    v = datasets.Value
    return datasets.Features(
        {
            "clip_id": v("string"),
            "video_id": v("string"),
            "dataset": v("string"),
            "split": v("string"),
            "ytid": v("string"),
            "start_s": v("float64"),
            "end_s": v("float64"),
            "labels": datasets.List(v("string")),
            "leak_eval_overlap": v("bool"),
            "source_file": v("string"),
            "source_line": v("int32"),
            "frames_jpeg": datasets.List(v("binary"), length=cfg.num_frames),
            "frame_pts_s": datasets.List(v("float32"), length=cfg.num_frames),
            "fbank": datasets.Array2D((cfg.target_length, cfg.num_mel_bins), "float16"),
            "fbank_frames": v("int32"),
            "window_start_s": v("float64"),
            "video_frames": v("int32"),
            **{k: v("float32") for k in _METRICS_F32},
            **{k: v("bool") for k in _FLAGS},
            "fetch_sha256": v("string"),
        }
    )


# -- per clip ----------------------------------------------------------------------------------------------


def cached_clip(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """The shard_clip result from the feature cache, or None when the task's entry is missing, stale or damaged."""
    if not task.get("cache_path") or not task.get("cache_key"):
        return None
    payload = read_feature_cache(Path(task["cache_path"]), task["cache_key"])
    if payload is None:
        return None
    cfg = task["cfg"]
    if len(payload["frames_jpeg"]) != cfg["num_frames"] or payload["fbank"].shape != (
        cfg["target_length"],
        cfg["num_mel_bins"],
    ):
        return None
    row = dict(task["row"])
    row.update(payload)
    return {"clip_id": task["clip_id"], "row": row, "reason": None}


def shard_clip(task: Mapping[str, Any]) -> dict[str, Any]:
    """One valid clip → {"clip_id", "row": dict | None, "reason": str | None} by decoding. Pure: reads the file only.

    task: clip_id, path, window_start_s, duration_s, row (manifest + validate columns to copy), cfg.
    """
    cfg = ShardConfig.model_validate(task["cfg"])
    clip_id = task["clip_id"]
    kw = dict(
        num_frames=cfg.num_frames,
        size=cfg.frame_size,
        sample_rate=cfg.sample_rate,
        threads=cfg.ffmpeg_threads,
        timeout=cfg.timeout_s,
    )
    path, start, dur = Path(task["path"]), float(task["window_start_s"]), float(task["duration_s"])
    decoded = decode_window(path, start, dur, **kw)
    if start > 0 and (decoded.errors or decoded.returncode != 0):
        decoded = decode_window(path, start, dur, from_start=True, **kw)  # as validate does after a seek error
    if decoded.errors or decoded.returncode != 0:
        return {"clip_id": clip_id, "row": None, "reason": f"corrupt_decode: {decoded.first_error}"}
    payload, reason = clip_payload(decoded.frames, decoded.frame_pts_s, decoded.pcm, cfg.feature_params())
    if payload is None:
        return {"clip_id": clip_id, "row": None, "reason": reason}
    row = dict(task["row"])
    row.update(payload)
    return {"clip_id": clip_id, "row": row, "reason": None}


# -- writing -----------------------------------------------------------------------------------------------


def _open_sink(path: Path) -> BinaryIO:
    """The file a shard is written to (a seam for fault-injection tests)."""
    return open(path, "wb", buffering=8 << 20)


class _ShardWriter:
    """Streams ordered rows into contiguous shards under a staging directory."""

    def __init__(self, staging: Path, cfg: ShardConfig, schema: pa.Schema, fbank_type: pa.DataType) -> None:
        self.staging, self.cfg, self.schema, self.fbank_type = staging, cfg, schema, fbank_type
        self.index = 0
        self.shards: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []
        self._ids: list[str] = []
        self._digests: list[str] = []
        self._payload = 0
        self._sink: BinaryIO | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._tmp: Path | None = None

    def adopt(self, sidecar: dict[str, Any]) -> None:
        """Reuse a staged shard from an earlier run."""
        self.shards.append(sidecar)
        self.index += 1

    def _name(self) -> str:
        return f"shard-{self.index:05d}.arrow"

    def _open(self) -> None:
        self._tmp = self.staging / f".tmp-{self._name()}"
        self._sink = _open_sink(self._tmp)
        self._writer = pa.ipc.new_stream(pa.PythonFile(self._sink, mode="w"), self.schema)

    def _flush(self) -> None:
        if not self._rows:
            return
        if self._writer is None:
            self._open()
        self._writer.write_batch(self._batch(self._rows))
        self._rows = []

    def _batch(self, rows: list[dict[str, Any]]) -> pa.RecordBatch:
        n, cfg = len(rows), self.cfg
        arrays = []
        for f in self.schema:
            if f.name == "fbank":
                flat = np.stack([r["fbank"] for r in rows]).reshape(-1)
                inner = pa.ListArray.from_arrays(
                    pa.array(np.arange(n * cfg.target_length + 1, dtype=np.int32) * cfg.num_mel_bins), pa.array(flat)
                )
                outer = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * cfg.target_length), inner)
                arrays.append(pa.ExtensionArray.from_storage(self.fbank_type, outer))
            else:
                arrays.append(pa.array([r.get(f.name) for r in rows], type=f.type))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def add(self, row: dict[str, Any], digest: str) -> None:
        self._rows.append(row)
        self._ids.append(row["clip_id"])
        self._digests.append(digest)
        self._payload += sum(len(b) for b in row["frames_jpeg"]) + row["fbank"].nbytes
        if len(self._rows) >= self.cfg.batch_rows:
            self._flush()
        if self._payload >= self.cfg.shard_bytes:
            self.close_shard()

    def close_shard(self) -> None:
        self._flush()
        if self._writer is None:
            return
        name = self._name()
        try:
            self._writer.close()
            self._sink.flush()
            os.fsync(self._sink.fileno())
            self._sink.close()
            final = self.staging / name
            os.replace(self._tmp, final)
        except OSError as exc:
            self.abort()
            hint = " (disk full)" if exc.errno == errno.ENOSPC else ""
            raise ShardError(f"writing shard {self.staging / name}: {exc.strerror or exc}{hint}") from exc
        sidecar = {
            "file": name,
            "rows": len(self._ids),
            "bytes": final.stat().st_size,
            "sha256": file_sha256(final),
            "clip_ids": self._ids,
            "digest": hashlib.sha256("\n".join(self._digests).encode()).hexdigest(),
        }
        _write_json(self.staging / f"shard-{self.index:05d}.json", sidecar)
        self.shards.append(sidecar)
        self.index += 1
        self._writer = self._sink = self._tmp = None
        self._ids, self._digests, self._payload = [], [], 0

    def write_guarded(self, fn: Any) -> None:
        try:
            fn()
        except OSError as exc:
            name = self._tmp.name if self._tmp else self._name()
            self.abort()
            hint = " (disk full)" if exc.errno == errno.ENOSPC else ""
            raise ShardError(f"writing shard {self.staging / name}: {exc.strerror or exc}{hint}") from exc

    def abort(self) -> None:
        for closer in (self._writer, self._sink):
            try:
                if closer is not None:
                    closer.close()
            except (OSError, pa.ArrowException):
                pass
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        self._writer = self._sink = self._tmp = None


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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


def _tasks(root: Path, cfg: ShardConfig) -> dict[str, list[dict[str, Any]]]:
    table = pq.read_table(manifest_path(root))
    fetches = latest(root, "fetch")
    validates = latest(root, "validate")
    cfg_dict = cfg.model_dump()
    params, ff_version = cfg.feature_params(), ffmpeg_version()
    groups: dict[str, list[dict[str, Any]]] = {}
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
            **{k: ev.get(k) for k in (*_METRICS_F32, *_FLAGS)},
        )
        dur = float(row["end_s"]) - float(row["start_s"])
        key = cache_key(fe.get("sha256"), float(ev["window_start_s"]), dur, params, ev.get("valid_rule"), ff_version)
        groups.setdefault(split_group(row["split"]), []).append(
            {
                "clip_id": row["clip_id"],
                "path": str(path),
                "window_start_s": float(ev["window_start_s"]),
                "duration_s": dur,
                "row": copy,
                "cfg": cfg_dict,
                "cache_path": str(feature_cache_path(root, row["clip_id"])),
                "cache_key": key,
            }
        )
    return groups


def _digest(task: Mapping[str, Any], meta_digest: str) -> str:
    # Everything that determines the row's bytes except the file path (ROOT may move).
    payload = json.dumps({"row": task["row"], "meta": meta_digest}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _shard_split(
    store: Path,
    split: str,
    tasks: list[dict[str, Any]],
    cfg: ShardConfig,
    summary: ShardSummary,
    *,
    backend: str,
    num_workers: int,
    address: str | None,
    force: bool,
    progress: bool,
) -> None:
    meta = store_meta(cfg)
    meta_digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    digests = [_digest(t, meta_digest) for t in tasks]
    inputs_sha256 = hashlib.sha256("\n".join(digests).encode()).hexdigest()
    final_dir = store / split
    index_file = final_dir / "index.json"
    if not force and index_file.is_file():
        old = json.loads(index_file.read_text(encoding="utf-8"))
        if old.get("inputs_sha256") == inputs_sha256 and all((final_dir / s["file"]).is_file() for s in old["shards"]):
            summary.up_to_date.append(split)
            summary.rows[split], summary.shards[split] = old["num_rows"], len(old["shards"])
            _drop_cache(tasks, cfg)
            return

    features = store_features(cfg)
    schema = features.arrow_schema
    schema = schema.with_metadata({**(schema.metadata or {}), b"tgdp": json.dumps(meta, sort_keys=True).encode()})
    staging = store / ".staging" / split
    staging.mkdir(parents=True, exist_ok=True)
    for stale in staging.glob(".tmp-*"):
        stale.unlink()
    writer = _ShardWriter(staging, cfg, schema, schema.field("fbank").type)

    # Reuse the staged prefix of shards whose clips and inputs are unchanged.
    pos = 0
    while True:
        side_path = staging / f"shard-{writer.index:05d}.json"
        arrow_path = staging / f"shard-{writer.index:05d}.arrow"
        if force or not side_path.is_file() or not arrow_path.is_file():
            break
        side = json.loads(side_path.read_text(encoding="utf-8"))
        ids = [t["clip_id"] for t in tasks[pos : pos + side["rows"]]]
        digest = hashlib.sha256("\n".join(digests[pos : pos + side["rows"]]).encode()).hexdigest()
        if ids != side["clip_ids"] or digest != side["digest"] or arrow_path.stat().st_size != side["bytes"]:
            break
        writer.adopt(side)
        summary.reused_shards += 1
        pos += side["rows"]
    for stale in staging.glob("shard-*"):
        if int(stale.name[6:11]) >= writer.index:
            stale.unlink()

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), initial=pos, unit="clip", desc=f"shard {split}")
    try:
        for w in range(pos, len(tasks), cfg.window_clips):
            window = tasks[w : w + cfg.window_clips]
            results = {}
            for task in window:  # cached payloads are a file read: done here, not worth a worker round trip
                res = cached_clip(task)
                if res is not None:
                    results[task["clip_id"]] = res
            todo = [t for t in window if t["clip_id"] not in results]
            summary.from_cache += len(results)
            if todo:
                results.update((r["clip_id"], r) for r in map_clips(shard_clip, todo, backend, num_workers, address))
            summary.decoded += len(todo)
            for k, task in enumerate(window):
                res = results[task["clip_id"]]
                if res["row"] is None:
                    summary.failed[task["clip_id"]] = res["reason"]
                    continue
                writer.write_guarded(lambda res=res, d=digests[w + k]: writer.add(res["row"], d))
            if bar is not None:
                bar.update(len(window))
        writer.write_guarded(writer.close_shard)
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    _assemble(store, split, staging, writer.shards, cfg, features, meta, inputs_sha256, summary)
    _drop_cache(tasks, cfg)


def _drop_cache(tasks: list[dict[str, Any]], cfg: ShardConfig) -> None:
    """Remove the feature cache entries of a split that is now in place (unless asked to keep them)."""
    if cfg.keep_feature_cache:
        return
    for task in tasks:
        if task.get("cache_path"):
            Path(task["cache_path"]).unlink(missing_ok=True)


def _assemble(
    store: Path,
    split: str,
    staging: Path,
    shards: list[dict[str, Any]],
    cfg: ShardConfig,
    features: Any,
    meta: dict[str, Any],
    inputs_sha256: str,
    summary: ShardSummary,
) -> None:
    """Build the complete split in a temporary directory, then swap it into place."""
    tmp_dir = store / f".tmp-{split}"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    n = len(shards)
    entries = []
    try:
        for k, side in enumerate(shards):
            name = f"data-{k:05d}-of-{n:05d}.arrow"
            os.replace(staging / side["file"], tmp_dir / name)
            entries.append(
                {
                    "file": name,
                    "rows": side["rows"],
                    "bytes": side["bytes"],
                    "sha256": side["sha256"],
                    "first_clip_id": side["clip_ids"][0],
                    "last_clip_id": side["clip_ids"][-1],
                }
            )
        info = {
            "citation": "",
            "description": f"tgdp clip store ({split}); see index.json and docs/STORE.md",
            "features": features.to_dict(),
            "homepage": "",
            "license": "",
        }
        _write_json(tmp_dir / "dataset_info.json", info)
        state = {
            "_data_files": [{"filename": e["file"]} for e in entries],
            "_fingerprint": inputs_sha256[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        _write_json(tmp_dir / "state.json", state)
        index = {
            "format": STORE_FORMAT,
            "split": split,
            "num_rows": sum(e["rows"] for e in entries),
            "shards": entries,
            "meta": meta,
            "config": cfg.model_dump(),
            "inputs_sha256": inputs_sha256,
            "assignment": "rows sorted by clip_id; contiguous shards closed at shard_bytes of payload",
        }
        _write_json(tmp_dir / "index.json", index)  # written last: its presence marks a complete split
    except OSError as exc:
        raise ShardError(f"assembling {tmp_dir}: {exc.strerror or exc}") from exc
    final_dir = store / split
    old_dir = store / f".old-{split}"
    if old_dir.exists():
        shutil.rmtree(old_dir)
    if final_dir.exists():
        os.replace(final_dir, old_dir)
    os.replace(tmp_dir, final_dir)
    shutil.rmtree(old_dir, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    summary.rows[split], summary.shards[split] = index["num_rows"], n


def _write_dataset_dict(store: Path) -> None:
    """STORE/dataset_dict.json (`{"splits": [...]}`), what `datasets.load_from_disk(STORE)` looks for to open the
    store as a DatasetDict. It names the complete splits only (those with index.json) and holds nothing else, so
    identical stores stay byte-identical; no index.json lists it, and verify checks it against the split folders."""
    splits = [s for s in ("train", "eval") if (store / s / "index.json").is_file()]
    if splits:
        try:
            _write_json(store / "dataset_dict.json", {"splits": splits})
        except OSError as exc:
            raise ShardError(f"writing {store / 'dataset_dict.json'}: {exc.strerror or exc}") from exc


def run_shard(
    root: Path,
    store: Path,
    cfg: ShardConfig | None = None,
    *,
    backend: str = "serial",
    num_workers: int = 2,
    address: str | None = None,
    force: bool = False,
    progress: bool = False,
) -> ShardSummary:
    """Write STORE/train and STORE/eval from the valid clips under ROOT (module docstring)."""
    cfg = cfg or ShardConfig()
    root, store = Path(root), Path(store)
    store.mkdir(parents=True, exist_ok=True)
    summary = ShardSummary()
    groups = _tasks(root, cfg)
    lock = store_lock(store)  # two runs on one store would share .staging/ and .tmp-<split>/
    try:
        for split in ("train", "eval"):
            tasks = groups.get(split, [])
            if not tasks:
                continue
            _shard_split(
                store,
                split,
                tasks,
                cfg,
                summary,
                backend=backend,
                num_workers=num_workers,
                address=address,
                force=force,
                progress=progress,
            )
        staging_root = store / ".staging"
        if staging_root.is_dir() and not any(staging_root.iterdir()):
            staging_root.rmdir()
        _write_dataset_dict(store)
    finally:
        lock.release()
    return summary


# -- verify ------------------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """Problems found by `verify_store` (empty = the store is sound)."""

    splits: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _split_dirs(store: Path) -> list[Path]:
    if (store / "index.json").is_file():
        return [store]
    return sorted(p for p in store.iterdir() if p.is_dir() and (p / "index.json").is_file())


def verify_store(store: Path, decode_jpegs: bool = True) -> VerifyReport:
    """Check every split under `store`: sha256 vs index, row counts, JPEGs decode to size²×3, fbank finite."""
    from PIL import Image

    store = Path(store)
    report = VerifyReport()
    dirs = _split_dirs(store) if store.is_dir() else []
    if not dirs:
        report.problems.append(f"{store}: no store split (no index.json)")
        return report
    for split_dir in dirs:
        index = json.loads((split_dir / "index.json").read_text(encoding="utf-8"))
        meta = index["meta"]
        size, n_frames = meta["frames"]["size"], meta["frames"]["n"]
        shape = (meta["fbank"]["target_length"], meta["fbank"]["num_mel_bins"])
        total = 0
        for shard in index["shards"]:
            path = split_dir / shard["file"]
            where = f"{split_dir.name}/{shard['file']}"
            if not path.is_file():
                report.problems.append(f"{where}: missing")
                continue
            if file_sha256(path) != shard["sha256"]:
                report.problems.append(f"{where}: sha256 mismatch (index {shard['sha256'][:12]}…)")
            try:
                table = pa.ipc.open_stream(pa.memory_map(str(path), "r")).read_all()
            except (pa.ArrowException, OSError) as exc:
                report.problems.append(f"{where}: unreadable Arrow stream: {exc}")
                continue
            if table.num_rows != shard["rows"]:
                report.problems.append(f"{where}: {table.num_rows} rows, index says {shard['rows']}")
            total += table.num_rows
            ids = table.column("clip_id").to_pylist()
            batches = table.to_batches()
            bases = np.cumsum([0] + [rb.num_rows for rb in batches])
            for rb, base in zip(batches, bases.tolist(), strict=False):
                fb = rb.column("fbank")
                fb = fb.storage if isinstance(fb, pa.ExtensionArray) else fb
                vals = fb.flatten().flatten().to_numpy(zero_copy_only=False)
                if vals.size != rb.num_rows * shape[0] * shape[1]:
                    report.problems.append(f"{where}: fbank values do not match {rb.num_rows}×{shape}")
                else:
                    bad = ~np.isfinite(vals.reshape(rb.num_rows, -1)).all(axis=1)
                    for r in np.flatnonzero(bad):
                        report.problems.append(f"{where}: row {base + r} ({ids[base + r]}): fbank not finite")
                nf = rb.column("fbank_frames").to_numpy()
                for r in np.flatnonzero((nf <= 0) | (nf > shape[0])):
                    report.problems.append(f"{where}: row {base + r} ({ids[base + r]}): fbank_frames {nf[r]}")
                if not decode_jpegs:
                    continue
                frames = rb.column("frames_jpeg").to_pylist()
                for r, jpegs in enumerate(frames):
                    if len(jpegs) != n_frames:
                        report.problems.append(f"{where}: row {base + r}: {len(jpegs)} frames, expected {n_frames}")
                    for t, data in enumerate(jpegs):
                        problem = _check_jpeg(data, size, Image)
                        if problem:
                            report.problems.append(f"{where}: row {base + r} ({ids[base + r]}) frame {t}: {problem}")
        if total != index["num_rows"]:
            report.problems.append(f"{split_dir.name}: {total} rows in shards, index says {index['num_rows']}")
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
