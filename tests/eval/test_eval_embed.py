"""Embedding: table round trip, a fake encoder over a fake store (order, alignment, lists), the tiny real model
through both checkpoint kinds (tgdp with config inside, released `module.` state dict)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from tgdp.eval.embed import embed_store, eval_dataset, load_encoder
from tgdp.eval.retrieval import MissingClipsWarning, resolve_ids
from tgdp.eval.table import EmbeddingTable, read_embeddings, write_embeddings

MEAN, STD = -5.081, 4.4849


class FakeStore:
    """The Store reader API over synthetic content: fbank[t] rises with the clip index, frames are flat colours."""

    def __init__(self, n: int = 5, mel: int = 64, target_length: int = 256, size: int = 32) -> None:
        self.n, self.mel, self.target_length, self.size = n, mel, target_length, size
        self.meta = {
            "fbank": {"num_mel_bins": mel, "target_length": target_length, "mean": MEAN, "std": STD},
            "frames": {"n": 16, "size": size},
        }
        self.clip_ids = [f"vggsound:vid{i}:{i * 1000}" for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def labels(self, i: int) -> list[str]:
        return [f"vgg_{i % 2}"]

    def segment(self, i: int, t: int, length: int = 416, normalize: bool = True) -> np.ndarray:
        rng = np.random.default_rng([i, t])
        seg = rng.normal(-5, 3, (length, self.mel)).astype(np.float32)
        return (seg - MEAN) / STD if normalize else seg

    def frame_jpeg(self, i: int, t: int) -> bytes:
        img = torch.full((3, self.size, self.size), 10 * i + t, dtype=torch.uint8)
        return torchvision.io.encode_jpeg(img, quality=95).numpy().tobytes()


class FakeEncoder(nn.Module):
    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.p = nn.Parameter(torch.ones(()))

    def encode(self, audio: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert not self.training
        g_a = audio[:, :4, :4].flatten(1) * self.p  # [B, 16]
        g_v = frames[:, :, :4, :4].mean(dim=(1, 2, 3)).unsqueeze(1).expand(-1, 16)
        return g_a, g_v


class _Cfg:
    audio_length, img_size, num_mel_bins = 128, 96, 64


def test_table_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 16, 8)).astype(np.float32)
    t = EmbeddingTable(
        [f"audioset:y{i}:0" for i in range(4)],
        a,
        -a,
        labels=[["/m/1"], [], ["/m/1", "/m/2"], ["x"]],
        meta={"checkpoint": "c.pt"},
    )
    for dtype in ("float16", "float32"):
        back = read_embeddings(write_embeddings(tmp_path / f"e_{dtype}.arrow", t, dtype))
        assert back.clip_ids == t.clip_ids and back.labels == t.labels and back.video_ids == ["y0", "y1", "y2", "y3"]
        assert back.emb_a.dtype == np.dtype(dtype) and back.emb_a.shape == (4, 16, 8)
        np.testing.assert_allclose(back.emb_v, -a, rtol=1e-3, atol=1e-3)
        assert back.meta["checkpoint"] == "c.pt" and back.meta["dim"] == 8
    with pytest.raises(ValueError, match="non-finite"):
        write_embeddings(
            tmp_path / "bad.arrow", EmbeddingTable(["a:b:0"], np.full((1, 2, 2), np.nan), np.zeros((1, 2, 2)))
        )
    with pytest.raises(ValueError, match=r"\[N=2"):
        EmbeddingTable(["a", "b"], a, a)


def test_fake_encoder_rows_and_alignment() -> None:
    store = FakeStore()
    enc = FakeEncoder(_Cfg())
    table = embed_store(enc, store, rows=[3, 0, 2], batch_size=2)
    assert table.clip_ids == [store.clip_ids[3], store.clip_ids[0], store.clip_ids[2]]
    assert table.labels == [["vgg_1"], ["vgg_0"], ["vgg_0"]] and table.emb_a.shape == (3, 16, 16)
    for k, i in enumerate([3, 0, 2]):
        for t in (0, 7, 15):
            want = store.segment(i, t, length=128)[:4, :4].reshape(-1)
            np.testing.assert_allclose(table.emb_a[k, t], want, rtol=1e-6)
    # frame t of clip i is the flat colour 10i+t, ImageNet-normalised: the visual token grows with t
    assert np.all(np.diff(table.emb_v[0, :, 0]) > 0)
    sample = eval_dataset(store, _Cfg(), rows=[1])[0]
    assert sample["index"] == 1 and sample["audio"].shape == (16, 128, 64) and sample["frames"].shape == (16, 3, 96, 96)
    assert sample["audio"].dtype == sample["frames"].dtype == torch.float32  # normalised in the worker


def test_frame_subset_keeps_the_alignment() -> None:
    store, enc = FakeStore(), FakeEncoder(_Cfg())
    full = embed_store(enc, store, rows=[2, 4], batch_size=2)
    half = embed_store(enc, store, rows=[2, 4], batch_size=1, frames=range(0, 16, 2))
    assert half.emb_a.shape == (2, 8, 16) and half.num_frames == 8
    np.testing.assert_array_equal(half.emb_a, full.emb_a[:, ::2])
    np.testing.assert_array_equal(half.emb_v, full.emb_v[:, ::2])
    for bad in ([], [16], [-1]):
        with pytest.raises(ValueError, match="frames must be"):
            embed_store(enc, store, frames=bad)


def test_geometry_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="128 mel bins"):
        embed_store(FakeEncoder(_Cfg()), FakeStore(mel=128))
    with pytest.raises(ValueError, match="the split is empty"):
        embed_store(FakeEncoder(_Cfg()), FakeStore(n=0))


def test_listed_ids_resolve_to_store_rows() -> None:
    store = FakeStore()
    ids = ["vid2_000002", "vggsound:vid0:0", "gone_000001", "vggsound:vid2:2000"]
    with pytest.warns(MissingClipsWarning, match="1 of 4 listed clips are not in the store"):
        m = resolve_ids(ids, store.clip_ids, where="store")
    assert m.indices.tolist() == [2, 0] and m.missing == ["gone_000001"] and m.duplicates == ["vggsound:vid2:2000"]


def _tiny_checkpoints(tmp_path):
    from tgdp.model import build_model

    torch.manual_seed(0)
    model = build_model("tiny_cavmae_sync")
    sd = model.student.state_dict()
    ours = tmp_path / "ours.pt"
    torch.save(
        {"model": sd, "teacher": None, "config": {"model_preset": "tiny_cavmae_sync", "model": {}}, "step": 7}, ours
    )
    released = tmp_path / "released.pt"
    torch.save({f"module.{k}": v for k, v in sd.items()}, released)
    return model, ours, released


def test_tiny_model_both_checkpoint_kinds(tmp_path) -> None:
    pytest.importorskip("tgdp.model.tgdp")
    model, ours, released = _tiny_checkpoints(tmp_path)
    store = FakeStore(n=3)
    m1, info1 = load_encoder(ours)
    m2, info2 = load_encoder(released, preset="tiny_cavmae_sync")
    assert info1["checkpoint_kind"] == "tgdp" and info1["step"] == 7 and info2["checkpoint_kind"] == "released"
    t1 = embed_store(m1, store, batch_size=2)
    t2 = embed_store(m2, store, batch_size=3)
    np.testing.assert_allclose(t1.emb_a, t2.emb_a, atol=1e-5)
    assert t1.emb_a.shape == (3, 16, 64) and np.isfinite(t1.emb_v).all()
    # a single pair through the original model matches the cached token of that frame
    model.eval()
    audio = torch.from_numpy(store.segment(1, 5, length=128))[None]
    frames = eval_dataset(store, model.cfg, rows=[1])[0]["frames"][5:6]
    with torch.no_grad():
        g_a, g_v = model.encode(audio, frames)
    np.testing.assert_allclose(t1.emb_a[1, 5], g_a[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(t1.emb_v[1, 5], g_v[0].numpy(), atol=1e-5)
    pre = embed_store(m1, store, rows=[0], features="pre_joint")
    assert pre.emb_a.shape == (1, 16, 64) and not np.allclose(pre.emb_a, t1.emb_a[:1])


def test_released_checkpoint_is_loaded_strictly(tmp_path) -> None:
    pytest.importorskip("tgdp.model.tgdp")
    _, _, released = _tiny_checkpoints(tmp_path)
    sd = torch.load(released, weights_only=True)
    sd.pop(next(k for k in sd if "norm_a" in k))
    torch.save(sd, released)
    with pytest.raises(Exception, match="(?i)missing"):
        load_encoder(released, preset="tiny_cavmae_sync")
    with pytest.raises(ValueError, match="unknown preset"):
        load_encoder(released, preset="nope")
