"""Training throughput on CPU for the tiny presets: end-to-end samples/s, data-wait fraction, the loader's own
samples/s, and the TG-DP / CAV-MAE Sync step-time ratio.

The store is written by the real shard stage (`tests.fixtures.make_store`) from ffmpeg test clips (testsrc2 +
sine), with the tiny presets' geometry (96 px frames, 64 mel bins, 256-frame spectrograms). Run:
`.venv/bin/python -m benchmarks.bench_train` (or `make bench`).
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import Figure, bench_args, write_section

__all__ = ["main"]

NUM_CLIPS = 32
STEPS = 96
BATCH = 8
WORKERS = 1


def build_store(
    dest: Path, n: int = NUM_CLIPS, duration: float = 3.0, size: str = "128x112", encoders: int = 1, **shard: int
) -> Path:
    """A real store (split train) of `n` synthetic clips: `tests.fixtures.make_store` (ROOT + `run_shard`).

    `shard` overrides the tiny geometry (frame_size 96, num_mel_bins 64, target_length 256); `size` is the clips'
    WxH, `encoders` how many ffmpeg encodes run at once (the shard stage itself is serial)."""
    from tests.fixtures import make_store

    return make_store(
        dest,
        n,
        duration=duration,
        size=size,
        prefix="benchclip",
        num_labels=4,
        freq_step=30,
        encoders=encoders,
        **shard,
    )


def _config(preset: str, workers: int = WORKERS, steps: int = STEPS):
    from tgdp.train.config import load_run_config

    return load_run_config(
        preset,
        [
            f"train.steps={steps}",
            f"train.batch_size={BATCH}",
            f"train.num_workers={workers}",
            f"train.log_every={max(steps // 2, 1)}",
            "train.progress=false",
            "train.tensorboard=false",
            f"train.ckpt_every={steps * 10}",
        ],
    )


def loader_rate(store: Path, batches: int = 24) -> float:
    """Samples/s of the training stream alone (same worker count as the runs, no model)."""
    from torch.utils.data import DataLoader

    from tgdp.train.data import ClipDataset, TrainStream

    cfg = _config("tiny_tgdp")
    m = cfg.model_cfg()
    ds = ClipDataset(store, audio_length=m.audio_length, img_size=m.img_size, data=cfg.data)
    loader = DataLoader(TrainStream(ds, micro_batch=BATCH), batch_size=None, num_workers=WORKERS, prefetch_factor=4)
    it = iter(loader)
    next(it)  # worker start-up and shard mapping are not part of the rate
    t0 = time.perf_counter()
    for _ in itertools.islice(it, batches):
        pass
    return batches * BATCH / (time.perf_counter() - t0)


def train_rate(store: Path, preset: str, run_dir: Path, steps: int = STEPS) -> dict[str, float]:
    """Steady-state figures of the second log window (the first holds start-up)."""
    from tgdp.train.loop import fit

    summary = fit(_config(preset, steps=steps), store, run_dir)
    last = summary.history[-1]
    return {
        "samples_per_s": last["samples_per_s"],
        "data_wait_frac": last["data_wait_frac"],
        "step_time_s": last["step_time_s"],
    }


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__)
    # tiny: 8 clips (one batch) of 1 s, 2 steps per run, one run per preset
    n_clips, duration, steps, batches, runs = (8, 1.0, 2, 1, 1) if args.tiny else (NUM_CLIPS, 3.0, STEPS, 24, 2)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory(prefix="tgdp-bench-train-") as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        store = build_store(tmp_path, n=n_clips, duration=duration)
        build_s = time.perf_counter() - t0
        load = [loader_rate(store, batches) for _ in range(runs)]
        tg, sync = [], []
        for k in range(runs):
            tg.append(train_rate(store, "tiny_tgdp", tmp_path / f"tg{k}", steps))
            sync.append(train_rate(store, "tiny_cavmae_sync", tmp_path / f"sync{k}", steps))
    figures = [
        Figure("tiny_tgdp end-to-end", [r["samples_per_s"] for r in tg], unit="samples/s"),
        Figure(
            "tiny_tgdp data wait / step time",
            [100 * r["data_wait_frac"] for r in tg],
            unit="%",
            target="< 5% (tiny, 2 cores)",
        ),
        Figure("tiny_tgdp step time", [r["step_time_s"] for r in tg], unit="s"),
        Figure(f"loader alone ({WORKERS} worker)", load, unit="samples/s"),
        Figure("tiny_cavmae_sync end-to-end", [r["samples_per_s"] for r in sync], unit="samples/s"),
        Figure(
            "TG-DP / Sync step-time ratio (tiny)",
            [a["step_time_s"] / b["step_time_s"] for a, b in zip(tg, sync, strict=True)],
            unit="x",
            target="paper Table 4: 1045 s / 730 s per epoch = 1.43 (base, GPU)",
        ),
    ]
    notes = (
        f"Store: {n_clips} synthetic {duration:g} s clips written by `run_shard` (96 px, 64 mel bins, 256 frames; "
        f"built in {build_s:.0f} s). Runs: {steps} steps, global batch {BATCH}, {WORKERS} DataLoader worker, fp32 CPU, "
        "figures from the second half of each run (the first half includes start-up). Two runs per preset, "
        "alternating. The machine's 2 cores are shared with other jobs, so absolute rates are noisy; the ratio and "
        "the wait fraction are the figures to read."
    )
    write_section("train", figures, notes)


if __name__ == "__main__":
    main(sys.argv[1:])
