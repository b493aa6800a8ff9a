"""Helpers for the train tests: a small in-memory store with the reader API, a real store, and tiny run configs.

`FakeStore` satisfies `tests.fixtures.StoreLike` (len, meta, clip_ids, labels, frame_jpeg, segment, with the
store's own `segment_start` window) so the loader and loop can be tested without the shard writer. A fake store lives
in a directory holding `fake_store.json`; `fake_open` (module level, so DataLoader workers can unpickle it) rebuilds it
from that file. `build_real_store` is a real shard-written store (`tests.fixtures.make_store`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from tests.fixtures import make_store
from tgdp.store import segment_start
from tgdp.train.config import RunConfig, load_run_config

__all__ = ["FakeStore", "build_real_store", "fake_open", "tiny_config", "write_fake_store"]

NORM_MEAN, NORM_STD = -5.081, 4.4849


class FakeStore:
    """n clips of T frames (size px JPEGs) and a [target_length, mel] fbank; content is a function of (seed, i)."""

    def __init__(
        self,
        n: int = 32,
        num_frames: int = 16,
        frame_size: int = 96,
        target_length: int = 256,
        num_mel_bins: int = 64,
        seed: int = 0,
    ) -> None:
        self.n, self.num_frames, self.seed = n, num_frames, seed
        self.meta = {
            "fbank": {"target_length": target_length, "num_mel_bins": num_mel_bins, "mean": NORM_MEAN, "std": NORM_STD},
            "frames": {"n": num_frames, "size": frame_size, "jpeg_quality": 90},
        }
        self.clip_ids = [f"synth:clip{i:04d}:0" for i in range(n)]
        self._jpeg: dict[tuple[int, int], bytes] = {}
        self.frame_size, self.target_length, self.num_mel_bins = frame_size, target_length, num_mel_bins

    def __len__(self) -> int:
        return self.n

    def labels(self, i: int) -> list[str]:
        return [f"class{i % 3}"]

    def fbank(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, i])
        base = rng.normal(-5.0, 3.0, size=(1, self.num_mel_bins))
        t = np.arange(self.target_length)[:, None]
        return (base + np.sin(t / (3 + i % 5))).astype(np.float16)

    def frame_jpeg(self, i: int, t: int) -> bytes:
        key = (i, t)
        if key not in self._jpeg:
            # numpy only: the bytes must not depend on torch's thread count (main process vs DataLoader worker).
            rng = np.random.default_rng([self.seed, i, t])
            reps = -(-self.frame_size // 8)
            grid = rng.integers(0, 256, size=(3, 8, 8), dtype=np.uint8)
            img = np.repeat(np.repeat(grid, reps, axis=1), reps, axis=2)[:, : self.frame_size, : self.frame_size]
            jpeg = torchvision.io.encode_jpeg(torch.from_numpy(np.ascontiguousarray(img)), quality=90)
            self._jpeg[key] = jpeg.numpy().tobytes()
        return self._jpeg[key]

    def segment(self, i: int, t: int, length: int = 416, normalize: bool = True) -> np.ndarray:
        start = segment_start(t, self.num_frames, self.target_length, length)
        seg = self.fbank(i)[start : start + length].astype(np.float32)
        return (seg - NORM_MEAN) / NORM_STD if normalize else seg


def write_fake_store(path: Path, **params: Any) -> Path:
    """Create a fake store directory at `path` (split dir `train/` inside) and return `path`."""
    (path / "train").mkdir(parents=True, exist_ok=True)
    (path / "fake_store.json").write_text(json.dumps(params))
    return path


def spawn_two_ranks(rank_main: Callable[..., None], tmp_path: Path, n: int = 24) -> tuple[Path, list[Any]]:
    """Run `rank_main(rank, world=2, port, store, run_dir)` in two gloo processes over a fake store of `n` clips;
    each rank writes `run_dir/rank<r>.json`. Returns (run_dir, the two ranks' JSON values)."""
    import socket

    import torch.multiprocessing as mp

    store = write_fake_store(tmp_path / "store", n=n)
    run_dir = tmp_path / "ddp"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(rank_main, args=(2, port, str(store), str(run_dir)), nprocs=2, join=True)
    return run_dir, [json.loads((run_dir / f"rank{r}.json").read_text()) for r in range(2)]


def fake_open(path: str | Path, split: str | None = None) -> FakeStore:
    path = Path(path)
    spec = path / "fake_store.json"
    if split is not None and not (path / split).is_dir():
        raise FileNotFoundError(f"no split {split!r} in {path}")
    return FakeStore(**json.loads(spec.read_text()))


def tiny_config(*overrides: str, preset: str = "tiny_tgdp") -> RunConfig:
    """A tiny packaged preset with test-friendly loop settings and the given `key=value` overrides."""
    base = (
        "train.steps=6",
        "train.batch_size=8",
        "train.num_workers=0",
        "train.log_every=1",
        "train.progress=false",
        "train.tensorboard=false",
        "optim.lr=1e-3",
    )
    return load_run_config(preset, [*base, *overrides])


_REAL_STORES: dict[tuple, Path] = {}


def build_real_store(dest: Path, ffmpeg: str, n: int = 12, duration: float = 3.0, **shard: Any) -> Path:
    """`tests.fixtures.make_store` of `n` clips `trainclip000…` (split `train`), cached per process by its
    arguments. Defaults match the tiny presets: 96 px frames, 64 mel bins, 256-frame spectrograms."""
    key = (n, duration, tuple(sorted(shard.items())))
    if key not in _REAL_STORES:
        _REAL_STORES[key] = make_store(dest, n, duration=duration, prefix="trainclip", ffmpeg=ffmpeg, **shard)
    return _REAL_STORES[key]
