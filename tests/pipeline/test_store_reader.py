"""Store reader: segment windows (docs/STORE.md), zero-copy views, pickling into DataLoader workers; the CLI."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.fixtures import make_root
from tgdp.pipeline.cli import app
from tgdp.store import Store, segment_start


def test_segment_starts_match_the_reference_windows():
    expected = [0, 0, 0, 0, 48, 112, 176, 240, 304, 368, 432, 496, 560, 608, 608, 608]
    assert [segment_start(t) for t in range(16)] == expected
    assert all(s + 416 <= 1024 for s in expected)
    assert segment_start(8, length=1024) == 0 and segment_start(15, length=96) == 960 - 48


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory, make_clip):
    tmp = tmp_path_factory.mktemp("cli")
    root, store = tmp / "root", tmp / "store"
    rows = [
        {"ytid": ytid, "split": split, "video_id": f"{ytid}_000000", "labels": [f"label {i}"], "source_line": i + 1}
        | {"media": make_clip(tmp / f"{ytid}.mp4", duration=3.0, freq=300 + 100 * i)}
        for i, (ytid, split) in enumerate([("t1", "vgg_train"), ("t2", "vgg_train"), ("v1", "vgg_test")])
    ]
    make_root(root, rows, dataset="vggsound", source="import", section_start_s=0.0)
    runner = CliRunner()
    for args in (
        ["validate", str(root), "--backend", "serial"],
        ["export", str(root), "--out", str(tmp / "export")],
        ["shard", str(root), "--store", str(store), "--backend", "serial", "--set", "shard.shard_bytes=1000000"],
        ["verify", str(store)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    return store, tmp


def test_cli_pipeline_and_reader(cli_store):
    store, tmp = cli_store
    assert (tmp / "export" / "clip_ids.txt").read_text().count("\n") == 3
    train = Store.open(store)  # STORE + default split
    assert len(train) == 2 and Store.open(store / "eval").clip_ids == ["vggsound:v1:0"]
    i = train.index_of("vggsound:t2:0")
    fb = train.fbank(i)
    assert fb.dtype == np.float16 and fb.shape == (1024, 128)
    assert not fb.flags.owndata and not fb.flags.writeable  # a view into the memory map, not a copy
    seg = train.segment(i, 13)
    assert seg.shape == (416, 128) and seg.dtype == np.float32
    np.testing.assert_allclose(seg, (fb[608:].astype(np.float32) + 5.081) / 4.4849, rtol=1e-6)
    # the lookup-table path is bit-identical to converting then normalising in float32
    exact = (fb[608:].astype(np.float32) - np.float32(-5.081)) / np.float32(4.4849)
    np.testing.assert_array_equal(seg, exact)
    assert seg.flags.writeable and seg.flags.owndata  # the caller's own array, not a view of the map
    raw = train.segment(i, 0, length=96, normalize=False)
    np.testing.assert_array_equal(raw, fb[:96].astype(np.float32))
    assert train.frame_jpeg(i, 0)[:3] == b"\xff\xd8\xff"
    import io

    from PIL import Image

    img = train.frame(i, 7)
    assert img.shape == (3, 224, 224) and str(img.dtype) == "torch.uint8"
    ref = np.asarray(Image.open(io.BytesIO(train.frame_jpeg(i, 7))).convert("RGB")).transpose(2, 0, 1)
    assert np.abs(img.numpy().astype(int) - ref).mean() < 1.0
    with pytest.raises(IndexError):
        train.frame(i, -1)
    assert train.labels(i) == ["label 1"] and train.row(i)["video_id"] == "t2_000000"
    with pytest.raises(IndexError):
        train.frame_jpeg(i, 16)
    with pytest.raises(KeyError):
        train.index_of("vggsound:nope:0")


def test_store_pickles_and_reopens_in_dataloader_workers(cli_store):
    import torch

    store, _ = cli_store
    s = Store.open(store, "train")
    s.fbank(0)  # mmaps open in this process...
    clone = pickle.loads(pickle.dumps(s))  # ...but only the path travels
    assert not clone._mapped and np.array_equal(clone.fbank(1), s.fbank(1))

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, st):
            self.st = st

        def __len__(self):
            return len(self.st) * 16

        def __getitem__(self, k):
            i, t = divmod(k, 16)
            return torch.from_numpy(self.st.segment(i, t)), len(self.st.frame_jpeg(i, t))

    loader = torch.utils.data.DataLoader(Pairs(s), batch_size=8, num_workers=1)
    segs = [seg for seg, _ in loader]
    assert len(segs) == 4 and segs[0].shape == (8, 416, 128)
    np.testing.assert_array_equal(segs[0][5].numpy(), s.segment(0, 5))
