"""Arrow store -> (fbank segment, frame) samples: a map-style `ClipDataset` and a resumable `TrainStream`.

Design (docs/TRAINING.md, Data):
- Train mode: one random frame index t ~ U{0..T-1} per clip per epoch, with its aligned segment
  `store.segment(i, t, length=audio_length)`. Eval mode (what `tgdp.eval` embeds with): deterministic, no crop,
  augmentation or mixup; sample k is store row `rows[k]` with the listed frames of that clip (default all), stacked
  ([T, T_seg, F] and [T, 3, S, S]); it may be given an opened store (`store=`), which travels into workers as is.
- `check_geometry` is the one check of a store split against a model (fbank length, mel bins, frame size, frames
  per clip, rows); training and every evaluation call it before reading a sample.
- Samples leave the worker compact and are normalised on the device by `batch_to_device`: frames as uint8 pixels,
  audio as the stored float16 fbank. A float32 224-px frame is 4× the bytes of the uint8 one, and converting +
  normalising it per sample in a worker cost more than decoding the JPEG; on a GPU it is free. The dtype says which
  is which: uint8 / float16 = raw, float32 = already normalised in the worker. The worker normalises audio when
  SpecAugment, time shift or mixup is on (they act on normalised values), frames when mixup is on (a mix is not an
  integer), and both with `normalize_in_worker=True` (training on the CPU with workers: the main process is then
  the bottleneck, so the work stays parallel). Values are exactly those of the per-sample path either way.
- The store is opened lazily, once per process: a DataLoader worker opens the memory-mapped shards on its first
  sample and keeps them (the open handle is dropped when the dataset is pickled into a worker).
- Per-sample randomness (frame index, crop, SpecAugment, shift, mixup) is drawn from generators seeded by
  (seed, epoch, clip index): the same clip in the same epoch gets the same sample on any rank, any worker count,
  and after a resume.
- Order: an epoch-seeded permutation of all clips, strided by rank (`perm[rank::world]`, tail dropped so every
  rank has the same number of batches), cut into micro-batches; micro-batch k of the rank's stream is built by
  worker k % num_workers. DataLoader returns workers' batches round-robin, so the stream is identical for any worker
  count, and the position is just (epoch, micro-batches consumed), saved in checkpoints as `DataState`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, default_collate, get_worker_info

from tgdp.store import StoreMismatchError
from tgdp.store.config import StoreConfig
from tgdp.store.fs import is_remote
from tgdp.store.sampling import ShuffleMode, epoch_order, resolve_mode
from tgdp.train.config import DataConfig
from tgdp.train.transforms import (
    FbankTransform,
    FrameTransform,
    decode_frame,
    mix,
    normalize_fbank,
    normalize_frames,
)

__all__ = [
    "ClipDataset",
    "DataState",
    "TrainStream",
    "batch_to_device",
    "check_geometry",
    "fbank_stats",
    "open_store",
    "store_geometry",
]

log = logging.getLogger(__name__)

Mode = Literal["train", "eval"]


def open_store(path: str | Path, split: str | None = None, store_cfg: StoreConfig | None = None) -> Any:
    """`tgdp.store.Store.open(path, split=split)`: a directory or an object-store URI, read through the shard cache
    and endpoint of `store_cfg` (imported lazily: workers pay for it once)."""
    from tgdp.store import Store

    if store_cfg is None:
        return Store.open(path, split)
    return Store.open(path, split, endpoint_url=store_cfg.endpoint_url, cache=store_cfg.cache())


def _get(meta: dict, *keys: str, default: Any = None) -> Any:
    node: Any = meta
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return default
        node = node[k]
    return node


def store_geometry(meta: dict) -> dict[str, int]:
    """{num_frames, frame_size, target_length, num_mel_bins} from store metadata (missing entries -> 0)."""
    size = _get(meta, "frames", "size", default=0)
    if isinstance(size, (list, tuple)):
        size = min(size)
    return {
        "num_frames": int(_get(meta, "frames", "n", default=0) or _get(meta, "frames", "num_frames", default=0)),
        "frame_size": int(size or 0),
        "target_length": int(_get(meta, "fbank", "target_length", default=0)),
        "num_mel_bins": int(_get(meta, "fbank", "num_mel_bins", default=0)),
    }


def check_geometry(
    store: Any,
    model: Any,
    *,
    where: str | None = None,
    model_name: str | None = None,
    resize_frames: bool = True,
    eval_frame: int | None = None,
    training: bool = False,
) -> dict[str, int]:
    """Check a store split against a model config; returns `store_geometry(store.meta)` or raises one
    `StoreMismatchError` naming every problem (and its fix: `training` picks the training or the evaluation one).

    Rules: the fbank target_length is >= the model's audio_length (a segment is cut from it), the mel bins equal the
    model's, the metadata gives frames per clip (more than `eval_frame` when given), the split has rows, and frames
    equal the model's img_size unless `resize_frames` (then any size is resized; upsampling logs a warning).
    model: anything with `audio_length`, `num_mel_bins`, `img_size` (a `ModelConfig`)."""
    geo = store_geometry(store.meta)
    if where is None:
        path, split = getattr(store, "path", None), getattr(store, "split", None)
        where = "store" + (f" {path}" if path else "") + (f" (split {split!r})" if split else "")
    problems = []
    if geo["target_length"] and geo["target_length"] < model.audio_length:
        problems.append(
            f"fbank target_length {geo['target_length']} < model audio_length {model.audio_length} "
            "(a segment must fit inside the stored spectrogram): shard with "
            f"--set features.target_length={model.audio_length} or more"
        )
    if geo["num_mel_bins"] and geo["num_mel_bins"] != model.num_mel_bins:
        other = (
            f"train with --set model.num_mel_bins={geo['num_mel_bins']}"
            if training
            else f"use a checkpoint of a {geo['num_mel_bins']}-bin model"
        )
        problems.append(
            f"store has {geo['num_mel_bins']} mel bins but the model expects {model.num_mel_bins}: build a matching "
            f"store with `tgdp-data validate ROOT --set features.num_mel_bins={model.num_mel_bins}` and `tgdp-data "
            f"shard ROOT --store NEW_STORE --set features.num_mel_bins={model.num_mel_bins}`, or {other}"
        )
    if geo["frame_size"] and geo["frame_size"] != model.img_size:
        if not resize_frames:
            problems.append(
                f"frames are {geo['frame_size']} px but the model's img_size is {model.img_size} and "
                "data.resize_frames is false"
            )
        elif geo["frame_size"] < model.img_size:
            log.warning("%s: %d px frames are upsampled to img_size %d", where, geo["frame_size"], model.img_size)
    if geo["num_frames"] < 1:
        problems.append("store metadata has no frames.n")
    elif eval_frame is not None and eval_frame >= geo["num_frames"]:
        problems.append(f"data.eval_frame={eval_frame} but clips have {geo['num_frames']} frames")
    if len(store) == 0:
        problems.append("the split is empty")
    if problems:
        name = f" {model_name!r}" if model_name else ""
        raise StoreMismatchError(f"{where} does not match model{name}: " + "; ".join(problems))
    return geo


def fbank_stats(meta: dict) -> tuple[float, float]:
    """(mean, std) that normalise the store's fbank, from its metadata."""
    fb = meta.get("fbank", {})
    if "mean" not in fb or "std" not in fb:
        raise ValueError("store metadata has no fbank mean/std")
    return float(fb["mean"]), float(fb["std"])


def batch_to_device(
    batch: dict[str, Any], device: torch.device, stats: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch -> (audio [B, T_seg, F], frames [B, 3, S, S]) normalised float32 on `device`.

    The copies are non-blocking (pinned batches overlap with compute on CUDA); the normalisation runs on the device.
    `stats` = `fbank_stats(store.meta)`; float32 audio or frames are already normalised and pass through.
    """
    audio = batch["audio"].to(device, non_blocking=True)
    frames = batch["frames"].to(device, non_blocking=True)
    return normalize_fbank(audio, *stats), normalize_frames(frames)


def _sample_seed(seed: int, epoch: int, index: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index, salt])


class ClipDataset(Dataset):
    """Clip i -> {"audio" [T_seg, F], "frames" [3, S, S], "index", "frame", ["labels" [C]], "mix_lambda"}.

    Eval mode: sample k -> {"audio" [T, T_seg, F], "frames" [T, 3, S, S], "index" = rows[k], ["labels"]}, T =
    len(frames) (default every frame of the clip). `__getitem__` uses epoch 0; training calls `sample(i, epoch)`.
    "audio" is the stored float16 fbank and "frames" uint8 pixels, or either one float32 and normalised already
    (`normalizes_audio`, `normalizes_frames`): `batch_to_device` finishes both.
    store_path or store: where to read (opened lazily, once per process) or an opened store (kept, pickled as is).
    """

    def __init__(
        self,
        store_path: str | Path | None = None,
        *,
        audio_length: int,
        img_size: int,
        mode: Mode = "train",
        data: DataConfig | None = None,
        seed: int = 0,
        label_vocab: Sequence[str] | None = None,
        open_fn: Callable[[str | Path, str | None], Any] = open_store,
        split: str | None = None,
        normalize_in_worker: bool = False,
        store: Any = None,
        rows: Sequence[int] | None = None,
        frames: Sequence[int] | None = None,
    ) -> None:
        if (store_path is None) == (store is None):
            raise ValueError("ClipDataset reads either a store_path or an opened store")
        if mode != "eval" and (rows is not None or frames is not None):
            raise ValueError("rows and frames select the samples of eval mode only")
        self.store_path = store_path if store_path is not None else getattr(store, "path", "")
        self.rows = list(rows) if rows is not None else None
        self.frames = list(frames) if frames is not None else None
        self._keeps_store = store is not None
        self.data = data if data is not None else DataConfig()
        self.split = split if split is not None else self.data.split
        self.normalize_in_worker = normalize_in_worker
        self.audio_length = audio_length
        self.img_size = img_size
        self.mode = mode
        self.seed = seed
        self.open_fn = open_fn
        self.label_index = {name: k for k, name in enumerate(label_vocab)} if label_vocab is not None else None
        self.frame_tf = FrameTransform(img_size, self.data.random_resized_crop, self.data.resize_frames)
        self.fbank_tf = FbankTransform(self.data.freqm, self.data.timem, self.data.time_shifting)
        self._store: Any = store
        self._num_frames: int | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if not self._keeps_store:
            state["_store"] = None  # each worker maps the shards itself
        return state

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = self.open_fn(self.store_path, self.split)
        return self._store

    @property
    def num_frames(self) -> int:
        if self._num_frames is None:
            n = store_geometry(self.store.meta)["num_frames"]
            if n < 1:
                raise StoreMismatchError("store metadata has no frames.n")
            self._num_frames = n
        return self._num_frames

    @property
    def eval_frames(self) -> list[int]:
        """The frame indices an eval-mode sample stacks (checked against the clips' frames)."""
        if self.frames is None:
            return list(range(self.num_frames))
        if not self.frames or any(not 0 <= t < self.num_frames for t in self.frames):
            raise ValueError(f"frames must be a non-empty list of indices in [0, {self.num_frames}), got {self.frames}")
        return self.frames

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.store)

    @property
    def normalizes_audio(self) -> bool:
        """True when the worker normalises audio itself (asked to, or train-time SpecAugment, shift or mixup)."""
        return self.normalize_in_worker or (self.mode == "train" and (self.fbank_tf.active or self.data.mixup > 0))

    @property
    def normalizes_frames(self) -> bool:
        """True when the worker normalises frames itself (asked to, or train-time mixup)."""
        return self.normalize_in_worker or (self.mode == "train" and self.data.mixup > 0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(int(index), epoch=0)

    # -- pieces -------------------------------------------------------------------------------------------------
    def _pair(self, index: int, t: int, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(audio [T_seg, F], frame [3, S, S]): raw (float16, uint8) or normalised in the worker (float32)."""
        if self.normalizes_audio:
            seg = self.store.segment(index, t, length=self.audio_length, normalize=True)
            audio = torch.from_numpy(np.ascontiguousarray(seg, dtype=np.float32))
        else:
            audio = torch.from_numpy(self._raw_segment(index, t))
        frame = self.frame_tf.pixels(decode_frame(self.store.frame_jpeg(index, t)), train=train)
        if self.normalizes_frames:
            frame = normalize_frames(frame)
        return audio, frame

    def _raw_segment(self, index: int, t: int) -> np.ndarray:
        """The stored float16 segment [T_seg, F] aligned with frame t (the float16 -> float32 -> float16 trip is
        exact; it keeps the store reader's own alignment rule)."""
        seg = self.store.segment(index, t, length=self.audio_length, normalize=False)
        return np.ascontiguousarray(seg, dtype=np.float16)

    def _labels(self, index: int) -> torch.Tensor:
        assert self.label_index is not None
        y = torch.zeros(len(self.label_index), dtype=torch.float32)
        for name in self.store.labels(index):
            k = self.label_index.get(name)
            if k is not None:
                y[k] = 1.0
        return y

    def _eval_sample(self, row: int) -> dict[str, Any]:
        pairs = [self._pair(row, t, train=False) for t in self.eval_frames]
        out: dict[str, Any] = {"index": row, "audio": torch.stack([a for a, _ in pairs])}
        out["frames"] = torch.stack([f for _, f in pairs])
        if self.label_index is not None:
            out["labels"] = self._labels(row)
        return out

    def sample(self, index: int, epoch: int) -> dict[str, Any]:
        """One sample of clip `index` (eval mode: of row `rows[index]`); all randomness is a function of (seed,
        epoch, index)."""
        if self.mode == "eval":
            return self._eval_sample(self.rows[index] if self.rows is not None else index)
        out: dict[str, Any] = {"index": index}
        rng = _sample_seed(self.seed, epoch, index)
        t = int(rng.integers(self.num_frames))
        do_mix = self.data.mixup > 0 and rng.random() < self.data.mixup
        augment = self.data.random_resized_crop or self.fbank_tf.active
        torch_seed = int(rng.integers(2**62))
        # fork_rng keeps torchvision/torchaudio draws off the caller's generator (num_workers=0 runs in-process).
        with torch.random.fork_rng(devices=[], enabled=augment):
            if augment:
                torch.manual_seed(torch_seed)
            audio, frame = self._pair(index, t, train=True)
            labels = self._labels(index) if self.label_index is not None else None
            lam = 1.0
            if do_mix:
                j = int(rng.integers(len(self)))
                t2 = int(rng.integers(self.num_frames))
                lam = float(rng.beta(10.0, 10.0))
                audio2, frame2 = self._pair(j, t2, train=True)
                audio, frame = mix(audio, audio2, lam), mix(frame, frame2, lam)
                if labels is not None:
                    labels = mix(labels, self._labels(j), lam)
            audio = self.fbank_tf(audio, train=True)
        out.update(audio=audio, frames=frame, frame=t, mix_lambda=lam)
        if labels is not None:
            out["labels"] = labels
        return out


@dataclass
class DataState:
    """Position of a rank's stream: `batch` micro-batches of `epoch` consumed (every rank is at the same place)."""

    epoch: int = 0
    batch: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DataState:
        return cls(epoch=int(d["epoch"]), batch=int(d["batch"])) if d else cls()


class TrainStream(IterableDataset):
    """Endless stream of this rank's collated micro-batches, starting at `start`; each batch carries its position.

    A yielded batch holds "epoch" and "batch" (its own position); after consuming it the stream's state is
    `DataState(epoch, batch + 1)` (normalised to the next epoch at the end of one).
    """

    def __init__(
        self,
        dataset: ClipDataset,
        *,
        micro_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        start: DataState | None = None,
        shuffle_mode: ShuffleMode = "auto",
        block_shards: int = 4,
    ) -> None:
        super().__init__()
        self.shuffle_mode = resolve_mode(shuffle_mode, is_remote(getattr(dataset, "store_path", "")))
        self.block_shards = block_shards
        index = getattr(dataset.store, "index", None)  # the real reader; a fake store is one "shard"
        self.shard_rows = [s.rows for s in index.shards] if index is not None else [len(dataset)]
        self.dataset = dataset
        self.micro_batch = micro_batch
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.start = start if start is not None else DataState()
        self.num_clips = len(dataset)
        self.batches_per_epoch = (self.num_clips // world_size) // micro_batch
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"{self.num_clips} clips are too few for micro-batch {micro_batch} on {world_size} rank(s)"
            )
        self.start = self.normalise(self.start)

    def normalise(self, state: DataState) -> DataState:
        """Carry a position past the end of an epoch into the next one."""
        extra, batch = divmod(state.batch, self.batches_per_epoch)
        return DataState(state.epoch + extra, batch)

    def rank_order(self, epoch: int) -> np.ndarray:
        """Clip indices this rank reads in `epoch`, [batches_per_epoch * micro_batch]."""
        if self.shuffle:
            perm = epoch_order(self.shard_rows, self.seed, epoch, self.shuffle_mode, self.block_shards)
        else:
            perm = np.arange(self.num_clips)
        return perm[self.rank :: self.world_size][: self.batches_per_epoch * self.micro_batch]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, batch = self.start.epoch, self.start.batch
        g = 0  # global micro-batch counter of this stream since `start`
        order = self.rank_order(epoch)
        self._prefetch(order, batch, g, worker, num_workers)
        while True:
            if g % num_workers == worker:
                idx = order[batch * self.micro_batch : (batch + 1) * self.micro_batch]
                samples = [self.dataset.sample(int(i), epoch) for i in idx]
                out = default_collate(samples)
                out["epoch"] = epoch
                out["batch"] = batch
                yield out
            g += 1
            batch += 1
            if batch == self.batches_per_epoch:
                epoch, batch = epoch + 1, 0
                order = self.rank_order(epoch)
                self._prefetch(order, batch, g, worker, num_workers)

    def _prefetch(self, order: np.ndarray, batch: int, g: int, worker: int, num_workers: int) -> None:
        """Block shuffle from a remote store: tell the store the rows this worker reads for the rest of the epoch
        (its micro-batches from `batch` on, `g` being the stream counter there), so the next block's shards download
        in the background while this one is read. The order itself is untouched: resume stays exact."""
        prefetch = getattr(self.dataset.store, "prefetch", None)
        if prefetch is None or self.shuffle_mode != "block":
            return
        mine = [b for b in range(batch, self.batches_per_epoch) if (g + b - batch) % num_workers == worker]
        rows = [order[b * self.micro_batch : (b + 1) * self.micro_batch] for b in mine]
        if rows:
            prefetch(np.concatenate(rows), ahead=self.block_shards)

    def state_after(self, batch: dict[str, Any]) -> DataState:
        """The stream position once `batch` (a yielded micro-batch) has been consumed."""
        return self.normalise(DataState(int(batch["epoch"]), int(batch["batch"]) + 1))
