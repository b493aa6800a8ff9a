"""The cached embedding table: one row per clip with its 16 per-frame audio and visual global tokens.

File format: Arrow IPC (`.arrow`, memory-mappable) with columns `clip_id` (string), `video_id` (string),
`labels` (list<string>), `emb_a` and `emb_v` (fixed_size_list<fixed_size_list<float16|float32, D>, T>), and schema
metadata `tgdp.eval` (JSON: T, D, dtype, checkpoint, model preset, store, split, ...). Reading gives numpy views
without a copy, so retrieval and probing never re-run the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tgdp.core.atomic import atomic_path
from tgdp.store.format import video_id_for

__all__ = ["EmbeddingTable", "read_embeddings", "video_id_from_clip_id", "write_embeddings"]

_META_KEY = b"tgdp.eval"


def video_id_from_clip_id(clip_id: str) -> str:
    """The CAV-MAE `video_id` of a store clip id `"{dataset}:{ytid}:{start_ms}"` by the store's rule
    (`tgdp.store.format.video_id_for`: AS: ytid, VGG: `ytid_SSSSSS`); any other string is its own video id."""
    parts = clip_id.rsplit(":", 1)
    head = parts[0]
    dataset, _, ytid = head.partition(":")
    if len(parts) != 2 or not ytid or not parts[1].lstrip("-").isdigit():
        return clip_id
    return video_id_for(dataset, ytid, int(parts[1]))


@dataclass
class EmbeddingTable:
    """Per-clip embeddings. emb_a, emb_v: [N, T, D] (float16 or float32); labels: N lists of label strings."""

    clip_ids: list[str]
    emb_a: np.ndarray
    emb_v: np.ndarray
    labels: list[list[str]] = field(default_factory=list)
    video_ids: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.clip_ids)
        if self.emb_a.ndim != 3 or self.emb_a.shape != self.emb_v.shape or self.emb_a.shape[0] != n:
            raise ValueError(
                f"EmbeddingTable: emb_a {self.emb_a.shape} and emb_v {self.emb_v.shape} must both be [N={n}, T, D]"
            )
        if not self.labels:
            self.labels = [[] for _ in range(n)]
        if not self.video_ids:
            self.video_ids = [video_id_from_clip_id(c) for c in self.clip_ids]
        if len(self.labels) != n or len(self.video_ids) != n:
            raise ValueError(
                f"EmbeddingTable: {len(self.labels)} labels / {len(self.video_ids)} video ids for {n} clips"
            )
        if len(set(self.clip_ids)) != n:
            raise ValueError("EmbeddingTable: duplicate clip ids")

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def num_frames(self) -> int:
        return int(self.emb_a.shape[1])

    @property
    def dim(self) -> int:
        return int(self.emb_a.shape[2])

    def subset(self, indices: Sequence[int] | np.ndarray) -> EmbeddingTable:
        """Rows `indices` in that order (a copy of the selected rows)."""
        idx = np.asarray(indices, dtype=np.int64)
        return EmbeddingTable(
            clip_ids=[self.clip_ids[i] for i in idx],
            emb_a=self.emb_a[idx],
            emb_v=self.emb_v[idx],
            labels=[self.labels[i] for i in idx],
            video_ids=[self.video_ids[i] for i in idx],
            meta=dict(self.meta),
        )


def _nested_fixed(arr: np.ndarray) -> pa.Array:
    n, t, d = arr.shape
    flat = pa.array(np.ascontiguousarray(arr).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(flat, d), t)


def write_embeddings(path: str | Path, table: EmbeddingTable, dtype: str = "float16") -> Path:
    """Write `table` as Arrow IPC (written to `path.tmp` then renamed). dtype: float16 | float32."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"write_embeddings: dtype must be float16 or float32, got {dtype!r}")
    for name, arr in (("emb_a", table.emb_a), ("emb_v", table.emb_v)):
        if not np.isfinite(arr).all():
            raise ValueError(f"write_embeddings: {name} has non-finite values")
    meta = {**table.meta, "num_frames": table.num_frames, "dim": table.dim, "dtype": dtype, "num_clips": len(table)}
    batch = pa.record_batch(
        {
            "clip_id": pa.array(table.clip_ids, pa.string()),
            "video_id": pa.array(table.video_ids, pa.string()),
            "labels": pa.array([list(x) for x in table.labels], pa.list_(pa.string())),
            "emb_a": _nested_fixed(table.emb_a.astype(dtype, copy=False)),
            "emb_v": _nested_fixed(table.emb_v.astype(dtype, copy=False)),
        }
    )
    batch = batch.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a full disk or a directory at `path`: atomic_path removes the temporary file, nothing half-written stays
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return path


def _column_array(col: pa.ChunkedArray, t: int, d: int) -> np.ndarray:
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    values = arr.flatten().flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(arr), t, d)


def read_embeddings(path: str | Path) -> EmbeddingTable:
    """Read a table written by `write_embeddings` (memory-mapped; arrays are read-only views)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embedding table {path} does not exist")
    # the map stays open: the arrays below are views into it
    tbl = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    raw = (tbl.schema.metadata or {}).get(_META_KEY)
    if raw is None:
        raise ValueError(f"{path}: not a tgdp embedding table (no {_META_KEY.decode()} metadata)")
    meta = json.loads(raw)
    missing = {"clip_id", "video_id", "labels", "emb_a", "emb_v"} - set(tbl.column_names)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    t, d = int(meta["num_frames"]), int(meta["dim"])
    return EmbeddingTable(
        clip_ids=tbl.column("clip_id").to_pylist(),
        video_ids=tbl.column("video_id").to_pylist(),
        labels=tbl.column("labels").to_pylist(),
        emb_a=_column_array(tbl.column("emb_a"), t, d),
        emb_v=_column_array(tbl.column("emb_v"), t, d),
        meta=meta,
    )
