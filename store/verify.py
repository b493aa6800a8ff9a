"""`verify_store`: every split of a store (local or remote) checked against its index.json: sha256 of every shard,
row counts, Arrow structure, every JPEG decodes to size²×3 RGB, every fbank finite, dataset_dict.json lists only
complete splits. A remote shard is downloaded to a temporary file for the check (not into the shard cache)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tgdp.store.format import INDEX_FILE, ShardEntry, StoreError, StoreIndex, fbank_values
from tgdp.store.fs import Location, file_sha256, location
from tgdp.store.writer import DATASET_DICT

__all__ = ["VerifyReport", "verify_store"]


@dataclass
class VerifyReport:
    """Problems found by `verify_store` (empty = the store is sound)."""

    splits: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _split_locations(loc: Location) -> list[Location]:
    if loc.size(INDEX_FILE) is not None:
        return [loc]
    if loc.remote:
        return [loc.child(s) for s in ("train", "eval") if loc.child(s).size(INDEX_FILE) is not None]
    root = loc.local
    names = sorted(p.name for p in root.iterdir() if (p / INDEX_FILE).is_file()) if root.is_dir() else []
    return [loc.child(n) for n in names]


def verify_store(store: str | os.PathLike | Location, decode_jpegs: bool = True) -> VerifyReport:
    """Check every split under `store` (or the one split `store` is): the index format, sha256 vs index, row counts,
    JPEGs decode to size²×3, fbank finite; and that STORE/dataset_dict.json lists only complete splits."""
    loc = location(store)
    report = VerifyReport()
    splits = _split_locations(loc)
    if not splits:
        report.problems.append(f"{loc}: no store split (no index.json)")
        return report
    for split_loc in splits:
        try:
            index = StoreIndex.read(split_loc)
        except StoreError as exc:
            report.problems.append(str(exc))
            continue
        total = sum(_verify_shard(split_loc, shard, index.meta, report, decode_jpegs) for shard in index.shards)
        if total != index.num_rows:
            report.problems.append(f"{split_loc.name}: {total} rows in shards, index says {index.num_rows}")
        report.splits[split_loc.name] = total
    if loc.size(DATASET_DICT) is not None:
        try:
            listed = json.loads(loc.read_bytes(DATASET_DICT).decode("utf-8"))["splits"]
        except (ValueError, KeyError, TypeError) as exc:
            report.problems.append(f"dataset_dict.json: unreadable ({exc})")
        else:
            missing = [s for s in listed if s not in report.splits]
            if missing:
                report.problems.append(f"dataset_dict.json: lists {missing}, which have no index.json")
    return report


@contextmanager
def _local_copy(split: Location, shard: ShardEntry) -> Iterator[Path | None]:
    """The shard as a local file (a remote one downloaded to a temporary directory); None when it is missing."""
    if not split.remote:
        path = split.local / shard.file
        yield path if path.is_file() else None
        return
    if split.size(shard.file) is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="tgdp-verify-") as tmp:
        dest = Path(tmp) / shard.file
        split.download(dest, shard.file)
        yield dest


def _verify_shard(split: Location, shard: ShardEntry, meta: dict[str, Any], report: VerifyReport, jpegs: bool) -> int:
    """Check one shard (problems go to `report`); returns the rows it holds."""
    where = f"{split.name}/{shard.file}"
    with _local_copy(split, shard) as path:
        if path is None:
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
