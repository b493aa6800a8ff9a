"""shard + verify: valid clips reach a `datasets`-loadable, idempotent, crash-safe store; verify catches damage."""

from __future__ import annotations

import errno
import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torchaudio

from tests.pipeline.lock_support import held_lock
from tgdp.pipeline import shard as shard_mod
from tgdp.pipeline.features import FeatureParams
from tgdp.pipeline.layout import clip_id_for, manifest_path, raw_path_for
from tgdp.pipeline.ledger import append_events
from tgdp.pipeline.shard import ShardConfig, run_shard, split_group
from tgdp.pipeline.validate import run_validate
from tgdp.store import ShardError, Store
from tgdp.store.verify import verify_store

# payload per clip ≈ 262 kB fbank + 16 small JPEGs: 300 kB closes a shard after every clip, so tests see several.
SMALL = ShardConfig(shard_bytes=300_000, batch_rows=1, window_clips=2)
CLIPS = [("a1", "as_bal_train", 440), ("a2", "as_unbal_train", 660), ("a3", "vgg_train", 880), ("e1", "as_eval", 550)]


def _build_root(root: Path, make_clip) -> dict[str, Path]:
    media = root.parent / f"{root.name}-media"
    rows, files = [], {}
    for i, (ytid, split, freq) in enumerate(CLIPS):
        cid = clip_id_for("audioset", ytid, 0.0)
        files[cid] = make_clip(media / f"{ytid}.mp4", duration=3.0, size="96x64", freq=freq)
        rows.append(
            {
                "clip_id": cid,
                "video_id": ytid,
                "dataset": "audioset",
                "split": split,
                "ytid": ytid,
                "start_s": 0.0,
                "end_s": 3.0,
                "labels": [f"/m/{ytid}", "/m/x"],
                "leak_eval_overlap": False,
                "source_file": "t.csv",
                "source_line": i,
            }
        )
    bad = clip_id_for("audioset", "bad", 0.0)
    (media / "bad.mp4").write_bytes(b"not a video")
    files[bad] = media / "bad.mp4"
    rows.append({**rows[0], "clip_id": bad, "ytid": "bad", "video_id": "bad", "source_line": 9})
    manifest_path(root).parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), manifest_path(root))
    events = []
    for cid, src in files.items():
        dest = raw_path_for(root, cid, ".mp4")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        digest = hashlib.sha256(dest.read_bytes()).hexdigest()
        events.append(
            {
                "clip_id": cid,
                "status": "ok",
                "reason": None,
                "transient": False,
                "raw_path": str(dest.relative_to(root)),
                "sha256": digest,
                "section_start_s": 0.0,
            }
        )
    append_events(root, "fetch", events)
    run_validate(root, backend="serial")
    return files


def _tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory, make_clip):
    tmp = tmp_path_factory.mktemp("shard")
    root = tmp / "root"
    files = _build_root(root, make_clip)
    store = tmp / "store"
    summary = run_shard(root, store, SMALL, backend="serial")
    return root, store, files, summary


def test_valid_clips_reach_the_store_and_datasets_loads_it(built):
    import datasets

    root, store, _files, summary = built
    assert summary.rows == {"train": 3, "eval": 1} and not summary.failed
    # validate's decode fed the store (one decode per clip); the cache is gone once the splits are in place
    assert summary.from_cache == 4 and summary.decoded == 0
    assert not list((root / "features").rglob("*.npz"))
    assert summary.shards["train"] == 3  # tiny shard_bytes → one clip per shard
    assert sorted(p.name for p in (store / "train").glob("*.arrow")) == [
        f"data-{k:05d}-of-00003.arrow" for k in range(3)
    ]
    assert not (store / ".staging").exists()
    ds = datasets.load_from_disk(str(store / "train"))
    assert len(ds) == 3 and ds.features["fbank"] == datasets.Array2D((1024, 128), "float16")
    assert ds[0]["clip_id"] == clip_id_for("audioset", "a1", 0.0) and ds[0]["labels"] == ["/m/a1", "/m/x"]
    assert len(ds[0]["frames_jpeg"]) == 16 and np.asarray(ds[0]["fbank"]).shape == (1024, 128)
    ev = datasets.load_from_disk(str(store / "eval"))
    assert ev["split"] == ["as_eval"]
    assert split_group("vgg_test") == "eval" and split_group("as_unbal_train") == "train"


def test_store_reader_matches_a_torchaudio_reference(built, ffmpeg_bin):
    _root, store, files, _ = built
    s = Store.open(store, "train")
    assert len(s) == 3 and s.clip_ids == sorted(s.clip_ids)
    cid = clip_id_for("audioset", "a2", 0.0)
    i = s.index_of(cid)
    # Independent reference: ffmpeg CLI → 16 kHz first channel PCM → kaldi fbank with the CAV-MAE arguments.
    pcm = subprocess.run(
        [ffmpeg_bin, "-v", "error", "-i", str(files[cid]), "-t", "3", "-af", "pan=mono|c0=c0", "-ar", "16000"]
        + ["-f", "s16le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    wave = torch.from_numpy(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0)[None]
    ref = torchaudio.compliance.kaldi.fbank(
        wave - wave.mean(),
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    ).numpy()
    fb = s.fbank(i)
    row = s.row(i)
    assert fb.dtype == np.float16 and fb.shape == (1024, 128) and not fb.flags.writeable  # a view of the mmap
    assert row["fbank_frames"] == ref.shape[0] == 298
    np.testing.assert_allclose(fb[: ref.shape[0]].astype(np.float32), ref, atol=0.02, rtol=0.002)
    assert not fb[ref.shape[0] :].any()  # zero padding to 1024
    seg = s.segment(i, 5)
    np.testing.assert_allclose(seg, (fb[112:528].astype(np.float32) + 5.081) / 4.4849, rtol=1e-6)
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(s.frame_jpeg(i, 15)))
    assert img.size == (224, 224) and img.mode == "RGB"
    assert s.labels(i) == ["/m/a2", "/m/x"] and row["split"] == "as_unbal_train"
    pts = np.asarray(row["frame_pts_s"])
    targets = (np.arange(16) + 0.5) * 3.0 / 16
    # Documented rule: first decoded frame (8 fps: k/8) with pts ≥ t_i; past the stream end the previous one repeats.
    decoded = np.arange(24) / 8
    expected = [decoded[decoded >= t - 1e-9][0] if (decoded >= t - 1e-9).any() else None for t in targets]
    expected = [e if e is not None else expected[k - 1] for k, e in enumerate(expected)]
    np.testing.assert_allclose(pts, expected, atol=1e-6)
    assert s.meta["fbank"]["mean"] == -5.081 and s.meta["frames"]["jpeg_quality"] == 90


def test_rerun_is_idempotent_and_byte_identical(built, monkeypatch):
    root, store, _files, _ = built
    before = _tree(store)
    again = run_shard(root, store, SMALL, backend="serial")
    assert sorted(again.up_to_date) == ["eval", "train"] and again.decoded == 0
    parsed = []  # the config is validated once per run (by the caller), never again per decoded clip
    for cls in (ShardConfig, FeatureParams):
        real = cls.model_validate
        monkeypatch.setattr(cls, "model_validate", lambda *a, real=real, **k: parsed.append(a) or real(*a, **k))
    forced = run_shard(root, store, SMALL, backend="serial", force=True)
    assert forced.decoded == 4 and forced.from_cache == 0  # the decode fallback writes the same bytes as the cache
    assert parsed == []
    assert _tree(store) == before


def test_verify_passes_then_names_a_flipped_byte(built, tmp_path):
    _root, store, _files, _ = built
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    assert verify_store(copy).ok
    target = copy / "train" / "data-00001-of-00003.arrow"
    data = bytearray(target.read_bytes())
    pos = data.index(b"\xff\xd8\xff") + 600  # inside the first JPEG's entropy-coded data
    data[pos] ^= 0xFF
    target.write_bytes(bytes(data))
    report = verify_store(copy)
    assert not report.ok
    assert any("data-00001-of-00003.arrow: sha256 mismatch" in p for p in report.problems)


def test_crash_mid_write_leaves_no_partial_shard_and_rerun_completes(built, tmp_path, monkeypatch):
    root, store, _files, _ = built
    out = tmp_path / "store"
    real_close = shard_mod.StoreWriter.close_shard
    calls = {"n": 0}

    def dying_close(self):
        calls["n"] += 1
        if calls["n"] == 2:  # first shard committed; die while the second is being finished
            raise KeyboardInterrupt("killed mid-write")
        real_close(self)

    monkeypatch.setattr(shard_mod.StoreWriter, "close_shard", dying_close)
    with pytest.raises(KeyboardInterrupt):
        run_shard(root, out, SMALL, backend="serial")
    monkeypatch.undo()
    assert not (out / "train").exists()  # nothing visible to readers
    staged = sorted(p.name for p in (out / ".staging" / "train").iterdir())
    assert staged == ["shard-00000.arrow", "shard-00000.json"]  # no .tmp left behind
    resumed = run_shard(root, out, SMALL, backend="serial")
    assert resumed.reused_shards == 1 and resumed.decoded == 3  # 2 train clips left + 1 eval clip
    assert _tree(out) == _tree(store)


def test_disk_full_is_a_clear_error_and_nothing_is_half_written(built, tmp_path, monkeypatch):
    root, _store, _files, _ = built
    out = tmp_path / "store"

    class FullDisk:
        def __init__(self, path):
            self.fh = open(path, "wb")
            self.written = 0

        def write(self, data):
            self.written += len(data)
            if self.written > 100_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    monkeypatch.setattr(shard_mod, "_open_sink", FullDisk)
    with pytest.raises(ShardError, match=r"shard-00000\.arrow.*No space left on device \(disk full: [\d.]+ MB free"):
        run_shard(root, out, SMALL, backend="serial")
    assert not (out / "train").exists()
    leftovers = [p.name for p in (out / ".staging" / "train").iterdir()]
    assert leftovers == []


def test_stale_or_damaged_cache_falls_back_to_decoding(built, tmp_path):
    from tgdp.pipeline.features import feature_cache_path
    from tgdp.pipeline.ledger import latest

    root, store, _files, _ = built
    before = _tree(store)
    run_validate(root, backend="serial", force=True)  # rewrites every valid clip's cache entry
    entries = {cid: feature_cache_path(root, cid) for cid, ev in latest(root, "validate").items() if ev["valid"]}
    assert len(entries) == 4 and all(p.is_file() for p in entries.values())
    a1, a2, a3, e1 = (entries[clip_id_for("audioset", y, 0.0)] for y in ("a1", "a2", "a3", "e1"))
    a1.write_bytes(a1.read_bytes()[:1000])  # truncated
    shutil.copyfile(a3, a2)  # a readable entry under another clip's key
    keep = ShardConfig(**{**SMALL.model_dump(), "keep_feature_cache": True})
    out = tmp_path / "store"
    summary = run_shard(root, out, keep, backend="serial")
    assert summary.decoded == 2 and summary.from_cache == 2 and not summary.failed
    data = {k: v for k, v in before.items() if k.endswith(".arrow")}
    assert {k: v for k, v in _tree(out).items() if k.endswith(".arrow")} == data  # index.json names the config
    assert a3.is_file() and e1.is_file()  # kept on request
    run_shard(root, tmp_path / "store2", SMALL, backend="serial")
    assert not any(p.is_file() for p in entries.values())


def test_a_second_shard_on_the_same_store_is_refused_naming_the_holder(built):
    import socket

    root, store, _files, _ = built
    before = _tree(store)
    # another `shard` on this store: holds the lock until released
    with held_lock("tgdp.pipeline.shard", "store_lock", store) as holder:
        with pytest.raises(ShardError) as err:
            run_shard(root, store, SMALL, backend="serial", force=True)
        msg = str(err.value)
        assert f"pid {holder.pid}" in msg and socket.gethostname() in msg and "started" in msg, msg
        assert {k: v for k, v in _tree(store).items() if not k.endswith(".lock")} == before  # nothing touched
    assert sorted(run_shard(root, store, SMALL, backend="serial").up_to_date) == ["eval", "train"]
    assert _tree(store) == before  # no lock file is left behind


def test_the_store_root_opens_as_a_datasetdict(built):
    import datasets

    _root, store, _files, _ = built
    dd = datasets.load_from_disk(str(store))
    assert isinstance(dd, datasets.DatasetDict) and sorted(dd) == ["eval", "train"]
    assert (len(dd["train"]), len(dd["eval"])) == (3, 1)
    assert dd["eval"][0]["clip_id"] == clip_id_for("audioset", "e1", 0.0)
    assert verify_store(store).splits == {"eval": 1, "train": 3}
