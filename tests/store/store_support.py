"""A small split written through the store's own writer (no ffmpeg, no pipeline): fixed rows, fixed metadata, so
the bytes are a pure function of the store code and pyarrow's IPC format."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from tgdp.store.format import StoreIndex, rows_digest, store_features
from tgdp.store.writer import StoreWriter, assemble_split, shard_entry, write_dataset_dict


class Shape:
    num_frames, target_length, num_mel_bins = 2, 64, 8


META = {
    "fbank": {"mean": -5.081, "std": 4.4849, "target_length": 64, "num_mel_bins": 8},
    "frames": {"n": 2, "size": 32},
}


def rows(n: int = 7, seed: int = 7) -> tuple[list[dict[str, Any]], list[str]]:
    rng = np.random.default_rng(seed)
    out, digests = [], []
    for i in range(n):
        fb = rng.standard_normal((64, 8)).astype(np.float16)
        row = dict(clip_id=f"d:{i:03d}:0", video_id=f"v{i}", dataset="audioset", split="as_bal_train", ytid=f"y{i}")
        row |= dict(start_s=float(i), end_s=float(i) + 10, labels=[f"/m/{i}", "x"], leak_eval_overlap=bool(i % 2))
        row |= dict(source_file="f.csv", source_line=i + 1, frames_jpeg=[bytes([i, t]) * (50 + i) for t in range(2)])
        row |= dict(
            frame_pts_s=[0.25, 0.75], fbank=fb, fbank_frames=60 + i % 4, window_start_s=0.5, video_frames=100 + i
        )
        row |= dict(audio_dur_s=10.0, video_dur_s=10.0, av_offset_s=0.01 * i, rms_dbfs=-20.5, silent_frac=0.0)
        row |= dict(still_score=0.1, is_silent=False, is_still=bool(i == 3), is_av_offset=False)
        out.append(row | {"fetch_sha256": f"{i:064x}"})
        digests.append(hashlib.sha256(str(i).encode()).hexdigest())
    return out, digests


def write_split(store: Any, staging: Path, n: int = 7, seed: int = 7, split: str = "train") -> StoreIndex:
    """Write `n` rows as STORE/<split> (local path or URI) through StoreWriter + assemble_split; returns the index."""
    features = store_features(Shape)
    schema = features.arrow_schema
    schema = schema.with_metadata({**(schema.metadata or {}), b"tgdp": json.dumps(META, sort_keys=True).encode()})
    staging.mkdir(parents=True, exist_ok=True)
    data, digests = rows(n, seed)
    payload = data[0]["fbank"].nbytes + 2 * 100
    with StoreWriter(staging, schema, fbank_shape=(64, 8), shard_bytes=payload * 3, batch_rows=2) as w:
        for r, d in zip(data, digests, strict=True):
            w.add(r, d)
    entries = [shard_entry(k, len(w.shards), s) for k, s in enumerate(w.shards)]
    index = StoreIndex(split, n, entries, META, {"seed": 1}, rows_digest(digests))
    assemble_split(store, index, staging, [s["file"] for s in w.shards], features)
    write_dataset_dict(store)
    return index
