"""validate + shard CPU-seconds per 10-s 360p H.264 clip, and store loader samples/s (0 and 2 DataLoader workers).

Clips: ffmpeg testsrc2 640x360 25 fps + 44.1 kHz stereo sine, libx264 at 500 kb/s (YouTube's 360p avc1 range),
AAC 128 kb/s, 10 s of target window inside a 14 s padded section (as yt-dlp fetches it, `section_start_s` recorded).
The measured path is the CLI's: `run_validate` then `run_shard` on the same ROOT (validate decodes once and leaves
each clip's store payload in ROOT/features; shard packs it). CPU time = this process + reaped children
(ffprobe/ffmpeg) from getrusage, serial backend, torch on 1 thread. One unmeasured warm-up round first: it pays the
one-time imports (torch, torchaudio, PIL, datasets) that a long-running worker pays once per corpus, not per clip.
Loader sample = (`Store.frame`: one 224×224 frame decoded with torchvision.io.decode_jpeg, `Store.segment`: its
416×128 normalised fbank segment).
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Figure, bench_args, write_section

N_CLIPS = 8


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _make_root(tmp: Path, n_clips: int) -> Path:
    from tests.fixtures import make_clip, make_root

    rows = []
    for i in range(n_clips):
        clip = make_clip(
            tmp / "media" / f"bench{i}.mp4",
            duration=14,
            video_source=f"testsrc2=size=640x360:rate=25:duration=14,hue=H={i}",
            freq=300 + 50 * i,
            sr=44100,
            channels=2,
            preset=None,
            output_args=["-b:v", "500k", "-b:a", "128k"],
        )
        rows.append({"ytid": f"bench{i}", "start_s": 30.0, "end_s": 40.0, "labels": ["/m/04rlf"], "media": clip})
    return make_root(tmp / "root", rows, split="as_unbal_train", section_start_s=28.0)


def _loader_rate(store: Path, workers: int, samples: int = 2048) -> tuple[float, float]:
    """(samples per wall second, samples per CPU-second of this process; the latter is meaningful at 0 workers)."""
    import torch

    from tgdp.store import Store

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, st: Store) -> None:
            self.st = st

        def __len__(self) -> int:
            return samples

        def __getitem__(self, k: int):
            i, t = (k * 7919) % len(self.st), k % 16
            return self.st.frame(i, t), torch.from_numpy(self.st.segment(i, t))

    loader = torch.utils.data.DataLoader(
        Pairs(Store.open(store)), batch_size=32, num_workers=workers, persistent_workers=False
    )
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for frames, segs in loader:
        assert frames.shape[1:] == (3, 224, 224) and segs.shape[1:] == (416, 128)
        n += frames.shape[0]
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def main(argv: list[str] | None = None) -> None:
    import torch

    from tgdp.pipeline.shard import ShardConfig, run_shard
    from tgdp.pipeline.validate import run_validate

    args = bench_args(argv, __doc__)
    n_clips, rounds, samples, loader_runs = (2, 2, 64, (1, 1)) if args.tiny else (N_CLIPS, 4, 2048, (3, 2))
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        root = _make_root(tmp, n_clips)
        val, shd, total = [], [], []
        for rep in range(rounds):
            store = tmp / f"store{rep}"
            c0 = _cpu()
            s = run_validate(root, backend="serial", force=True)
            c1 = _cpu()
            sh = run_shard(root, store, ShardConfig(), backend="serial", force=True)
            c2 = _cpu()
            assert s.valid == n_clips and sh.from_cache == n_clips and sh.decoded == 0, (s, sh)
            if rep == 0:
                continue  # warm-up: one-time imports
            val.append((c1 - c0) / n_clips)
            shd.append((c2 - c1) / n_clips)
            total.append((c2 - c0) / n_clips)
        c0 = _cpu()
        run_shard(root, tmp / "store_decode", ShardConfig(), backend="serial", force=True)  # no cache: fallback
        shd_decode = [(_cpu() - c0) / n_clips]
        _loader_rate(tmp / "store1", 0, samples=min(256, samples))  # warm-up: torchvision import, page cache
        runs0 = [_loader_rate(tmp / "store1", 0, samples) for _ in range(loader_runs[0])]
        rate0, cpu0 = [r[0] for r in runs0], [r[1] for r in runs0]
        rate2 = [_loader_rate(tmp / "store1", 2, samples)[0] for _ in range(loader_runs[1])]
        figures = [
            Figure("validate CPU-s per clip", val, unit="CPU-s"),
            Figure("shard CPU-s per clip", shd, unit="CPU-s"),
            Figure("validate+shard CPU-s per clip", total, unit="CPU-s", target="≤ 0.43"),
            Figure("shard without feature cache (decode fallback) CPU-s per clip", shd_decode, unit="CPU-s"),
            Figure("loader samples/s, 0 workers", rate0, unit="samples/s", target="~1,000"),
            Figure("loader samples per CPU-second, 0 workers", cpu0, unit="samples/CPU-s"),
            Figure("loader samples/s, 2 workers", rate2, unit="samples/s"),
        ]
        notes = (
            f"{n_clips} clips of 10 s (640x360 25 fps H.264 500 kb/s + AAC stereo 44.1 kHz) inside 14 s padded "
            "sections. validate = ONE ffmpeg process per clip that probes (input dump + first-frame start times) and "
            "fully decodes the window with -xerror (16 frames → 224 crop, 16 kHz PCM), then metrics, kaldi fbank, 16 "
            "JPEG q90 and an atomic write to ROOT/features; shard = pack the cached payloads into Arrow shards. "
            "CPU = self + children (getrusage), serial backend, torch 1 thread, after one unmeasured warm-up round "
            "(imports). Of ~0.39 CPU-s, ~0.31 is the ffmpeg process (≈0.08 of it process start-up: 215 shared "
            "libraries, dynamic-linker bound) — the same as a bare `-f null` decode of the window. CPU-seconds "
            "inflate with the load on the 2 shared cores: four runs of this script on 2026-11-25 (load average 3–5) "
            "gave medians 0.381–0.530 CPU-s/clip for the same code, so compare with the decode-fallback row of the "
            "same run (one ffmpeg decode without probing, also the floor of the old shard stage). "
            "Loader: (Store.frame = decode_jpeg, Store.segment = normalised 416×128 via a float16 lookup table), "
            "batch 32, after a warm-up pass; JPEG decode (~0.2 ms) is the floor. Wall-clock rates depend on the load "
            "other engineers put on the 2 shared cores (the same code gave 811–1,763 samples/s at 0 workers across "
            "runs); samples per CPU-second is the load-independent figure. 2 workers cannot beat 0 workers on 2 "
            "busy cores: the main process, both workers and the other jobs share them."
        )
        write_section("pipeline", figures, notes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
