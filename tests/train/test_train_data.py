"""Loader: sample shapes and modes, augmentations, deterministic rank/worker order and exact resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from tests.train.train_support import NORM_MEAN, NORM_STD, FakeStore, fake_open, write_fake_store
from tgdp.train.config import DataConfig
from tgdp.train.data import ClipDataset, DataState, TrainStream, batch_to_device
from tgdp.train.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FbankTransform,
    FrameTransform,
    decode_frame,
    normalize_fbank,
    normalize_frames,
)


@pytest.fixture()
def store_dir(tmp_path: Path) -> Path:
    return write_fake_store(tmp_path / "store", n=20, frame_size=64)


def _ds(store_dir: Path, mode: str = "train", **data: object) -> ClipDataset:
    return ClipDataset(
        store_dir, audio_length=128, img_size=96, mode=mode, data=DataConfig(**data), seed=3, open_fn=fake_open
    )


def test_train_sample_shapes_and_alignment(store_dir: Path) -> None:
    ds = _ds(store_dir)
    s = ds.sample(4, epoch=0)
    # Samples leave the worker raw: the stored float16 fbank and uint8 pixels.
    assert s["audio"].shape == (128, 64) and s["audio"].dtype == torch.float16
    assert s["frames"].shape == (3, 96, 96) and s["frames"].dtype == torch.uint8  # 64 px frames resized to 96
    store = FakeStore(n=20, frame_size=64)
    expected = store.segment(4, s["frame"], length=128)
    np.testing.assert_array_equal(normalize_fbank(s["audio"], NORM_MEAN, NORM_STD).numpy(), expected)
    # The same clip in the same epoch is the same sample; another epoch may pick another frame.
    assert torch.equal(ds.sample(4, 0)["audio"], s["audio"])
    frames = {ds.sample(4, e)["frame"] for e in range(20)}
    assert len(frames) > 3 and all(0 <= t < 16 for t in frames)


def test_eval_mode_is_deterministic_and_aligned(store_dir: Path) -> None:
    """Eval mode (what tgdp.eval embeds with): listed rows, every frame (or the listed ones) stacked, no randomness,
    and each pair is exactly the training sample of that frame."""
    aug = {"random_resized_crop": True, "freqm": 16, "timem": 32, "mixup": 0.5}  # eval applies none of them
    ds = _ds(store_dir, "eval", **aug)
    a = ds[2]
    assert a["index"] == 2 and a["audio"].shape == (16, 128, 64) and a["frames"].shape == (16, 3, 96, 96)
    assert a["audio"].dtype == torch.float16 and a["frames"].dtype == torch.uint8  # raw: augmentation is off
    assert torch.equal(ds.sample(2, epoch=5)["audio"], a["audio"])
    store = FakeStore(n=20, frame_size=64)
    tf = FrameTransform(96)
    for t in (0, 5, 15):
        np.testing.assert_array_equal(
            normalize_fbank(a["audio"][t], NORM_MEAN, NORM_STD).numpy(), store.segment(2, t, 128)
        )
        assert torch.equal(a["frames"][t], tf.pixels(decode_frame(store.frame_jpeg(2, t))))
    sub = ClipDataset(
        audio_length=128, img_size=96, mode="eval", store=store, rows=[7, 2], frames=[5, 0], normalize_in_worker=True
    )
    assert len(sub) == 2 and sub[1]["index"] == 2 and sub[0]["index"] == 7
    s = sub[1]
    assert s["audio"].dtype == s["frames"].dtype == torch.float32 and s["audio"].shape == (2, 128, 64)
    assert torch.equal(s["audio"], normalize_fbank(a["audio"][[5, 0]], NORM_MEAN, NORM_STD))
    assert torch.equal(s["frames"], normalize_frames(a["frames"][[5, 0]]))
    for bad in ([], [16], [-1]):
        with pytest.raises(ValueError, match="frames must be"):
            ClipDataset(audio_length=128, img_size=96, mode="eval", store=store, frames=bad)[0]
    with pytest.raises(ValueError, match="eval mode only"):
        ClipDataset(audio_length=128, img_size=96, store=store, rows=[1])
    with pytest.raises(ValueError, match="either a store_path or an opened store"):
        ClipDataset(store_dir, audio_length=128, img_size=96, store=store)


def test_one_geometry_check_names_every_problem_and_its_fix() -> None:
    """`check_geometry` (training's check_store, and embed, health and selection) names all problems in one error;
    the mel-bin fix is training's or evaluation's."""
    from tgdp.model import PRESETS
    from tgdp.store import StoreMismatchError
    from tgdp.train.data import check_geometry

    m = PRESETS["tiny_cavmae_sync"]  # audio_length 128, 64 mel bins, img_size 96
    bad = FakeStore(n=0, num_frames=4, frame_size=64, target_length=100, num_mel_bins=128)
    with pytest.raises(StoreMismatchError) as info:
        check_geometry(bad, m, where="store S", model_name="tiny", resize_frames=False, eval_frame=4, training=True)
    msg = str(info.value)
    assert msg.startswith("store S does not match model 'tiny': fbank target_length 100 < model audio_length 128")
    for part in ("--set features.target_length=128", "128 mel bins but the model expects 64",
                 "tgdp-data validate ROOT --set features.num_mel_bins=64", "train with --set model.num_mel_bins=128",
                 "frames are 64 px but the model's img_size is 96", "data.eval_frame=4 but clips have 4 frames",
                 "the split is empty"):  # fmt: skip
        assert part in msg, part
    with pytest.raises(StoreMismatchError, match="use a checkpoint of a 128-bin model") as info:
        check_geometry(FakeStore(n=2, num_mel_bins=128), m)
    assert "train with" not in str(info.value) and "frames are" not in str(info.value)
    no_frames = FakeStore(n=2)
    del no_frames.meta["frames"]["n"]
    with pytest.raises(StoreMismatchError, match="no frames.n"):
        check_geometry(no_frames, m)
    assert check_geometry(FakeStore(n=2, frame_size=64), m, resize_frames=True) == {
        "num_frames": 16, "frame_size": 64, "target_length": 256, "num_mel_bins": 64,
    }  # fmt: skip


def test_frame_normalisation_and_no_resize_error() -> None:
    img = torch.full((3, 96, 96), 255, dtype=torch.uint8)
    out = FrameTransform(96)(img)
    expect = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[:, 0, 0], expect, atol=1e-5)
    with pytest.raises(ValueError, match="resize_frames is false"):
        FrameTransform(96, resize=False)(torch.zeros((3, 64, 64), dtype=torch.uint8))
    jpeg = FakeStore(frame_size=64).frame_jpeg(0, 0)
    assert decode_frame(jpeg).shape == (3, 64, 64)


def test_device_normalisation_equals_the_per_sample_path(store_dir: Path) -> None:
    """uint8/float16 out of the loader + `batch_to_device` gives exactly the old per-sample float32 values."""
    store = FakeStore(n=20, frame_size=64)
    tf = FrameTransform(96)
    pixels = torch.stack([tf.pixels(decode_frame(store.frame_jpeg(i, 3))) for i in range(4)])
    want = torch.stack([v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)(p.float().div_(255.0)) for p in pixels])
    assert torch.equal(normalize_frames(pixels), want) and torch.equal(tf(pixels[0]), want[0])
    batch = next(iter(DataLoader(TrainStream(_ds(store_dir), micro_batch=4), batch_size=None)))
    audio, frames = batch_to_device(batch, torch.device("cpu"), (NORM_MEAN, NORM_STD))
    assert audio.dtype == frames.dtype == torch.float32 and frames.shape == (4, 3, 96, 96)
    for k, (i, t) in enumerate(zip(batch["index"].tolist(), batch["frame"].tolist(), strict=True)):
        np.testing.assert_array_equal(audio[k].numpy(), store.segment(i, t, length=128))
        assert torch.equal(frames[k], tf(decode_frame(store.frame_jpeg(i, t))))
    with pytest.raises(TypeError, match="float16"):
        normalize_fbank(torch.zeros(2, dtype=torch.float64), NORM_MEAN, NORM_STD)
    # normalize_in_worker (CPU training with workers): float32 out of the worker, passed through, same values.
    ds = ClipDataset(
        store_dir, audio_length=128, img_size=96, data=DataConfig(), seed=3, open_fn=fake_open, normalize_in_worker=True
    )
    wb = next(iter(DataLoader(TrainStream(ds, micro_batch=4), batch_size=None)))
    assert wb["audio"].dtype == wb["frames"].dtype == torch.float32
    w_audio, w_frames = batch_to_device(wb, torch.device("cpu"), (NORM_MEAN, NORM_STD))
    assert torch.equal(w_audio, audio) and torch.equal(w_frames, frames)


def test_augmentations_apply_and_are_reproducible(store_dir: Path) -> None:
    plain = _ds(store_dir).sample(1, 0)
    aug = _ds(store_dir, random_resized_crop=True, freqm=16, timem=32, time_shifting=0.2)
    s1, s2 = aug.sample(1, 0), aug.sample(1, 0)
    # SpecAugment works on normalised values, so the worker normalises audio itself (and says so by its dtype).
    assert s1["audio"].dtype == torch.float32 and s1["frames"].dtype == torch.uint8
    plain = {**plain, "audio": normalize_fbank(plain["audio"], NORM_MEAN, NORM_STD)}
    assert torch.equal(s1["audio"], s2["audio"]) and torch.equal(s1["frames"], s2["frames"])
    assert s1["frame"] == plain["frame"]  # augmentation draws do not change the frame choice
    assert not torch.equal(s1["audio"], plain["audio"]) and not torch.allclose(s1["frames"], plain["frames"])
    # Augmenting does not consume the caller's torch generator (num_workers=0 shares the process with the model).
    torch.manual_seed(0)
    aug.sample(2, 0)
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))


def test_fbank_transform_masks_and_shift() -> None:
    x = torch.arange(100 * 8, dtype=torch.float32).reshape(100, 8) + 1
    torch.manual_seed(0)
    shifted = FbankTransform(time_shifting=0.1)(x, train=True)
    shift = int(torch.nonzero(shifted[:, 0] == x[0, 0])[0])
    assert shift <= 10 or shift >= 90
    assert torch.equal(torch.roll(x, shift, 0), shifted)
    masked = FbankTransform(freqm=4, timem=20)(x, train=True)
    assert (masked == 0).any() and masked.shape == x.shape
    assert torch.equal(FbankTransform(freqm=4)(x, train=False), x)


def test_mixup_mixes_audio_frames_labels(store_dir: Path) -> None:
    ds = ClipDataset(
        store_dir,
        audio_length=128,
        img_size=96,
        data=DataConfig(mixup=1.0),
        seed=0,
        label_vocab=["class0", "class1", "class2"],
        open_fn=fake_open,
    )
    s = ds.sample(0, 0)
    assert s["frames"].dtype == s["audio"].dtype == torch.float32  # mixed in the worker, hence normalised there
    lam = s["mix_lambda"]
    assert 0.0 < lam < 1.0 and lam != 1.0
    assert s["labels"].sum().item() == pytest.approx(1.0)
    assert s["labels"][0] >= lam - 1e-6  # clip 0 is class0 with weight >= lambda


def _collect(stream: TrainStream, n: int, num_workers: int = 0) -> list[dict]:
    loader = DataLoader(stream, batch_size=None, num_workers=num_workers)
    return list(itertools.islice(iter(loader), n))


@pytest.mark.parametrize("world", [1, 2])
def test_ranks_partition_each_epoch(store_dir: Path, world: int) -> None:
    ds = _ds(store_dir)
    seen = []
    for rank in range(world):
        s = TrainStream(ds, micro_batch=3, rank=rank, world_size=world, seed=1)
        n = s.batches_per_epoch
        batches = _collect(s, n)
        assert all(b["epoch"] == 0 for b in batches) and [b["batch"] for b in batches] == list(range(n))
        seen += [int(i) for b in batches for i in b["index"]]
    assert len(seen) == len(set(seen))  # no clip twice within an epoch, across ranks
    assert len(seen) == world * ((20 // world) // 3) * 3


def test_stream_independent_of_worker_count_and_resumable(store_dir: Path) -> None:
    ds = _ds(store_dir)
    mk = lambda start=None: TrainStream(ds, micro_batch=4, rank=1, world_size=2, seed=5, start=start)  # noqa: E731
    ref = _collect(mk(), 7)  # 2 batches per epoch: crosses three epochs
    two = _collect(mk(), 7, num_workers=2)
    for a, b in zip(ref, two, strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["audio"], b["audio"])
    assert [int(b["epoch"]) for b in ref] == [0, 0, 1, 1, 2, 2, 3]
    # Resume after the 3rd batch reproduces batches 4..7 exactly, samples included.
    state = mk().state_after(ref[2])
    assert state == DataState(epoch=1, batch=1)
    resumed = _collect(mk(DataState.from_dict(state.as_dict())), 4)
    for a, b in zip(ref[3:], resumed, strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["frames"], b["frames"])
    # The epoch permutation changes between epochs.
    assert not torch.equal(ref[0]["index"], ref[2]["index"])


def test_too_few_clips_is_an_error(store_dir: Path) -> None:
    with pytest.raises(ValueError, match="too few"):
        TrainStream(_ds(store_dir), micro_batch=16, world_size=2)
