"""The store on a real S3 server (SeaweedFS, tests/store/conftest.py): write, commit rule, resume, lease, reading
through the shard cache, and the faults (server killed mid-download, killed upload, corrupt object, wrong
credentials, missing bucket)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.store.store_support import write_split
from tgdp.store import RemoteError, ShardError, Store, StoreError
from tgdp.store.cache import ShardCache
from tgdp.store.fs import Location, location
from tgdp.store.remote import acquire_lease
from tgdp.store.verify import verify_store


def test_a_split_written_to_s3_reads_back_like_the_local_one(s3: dict, tmp_path: Path) -> None:
    local = write_split(tmp_path / "local", tmp_path / "st-local")
    remote = write_split(s3["uri"], tmp_path / "st-remote")
    assert remote == local and not (tmp_path / "st-remote").exists()  # staging removed once committed
    loc = location(s3["uri"])
    for entry in local.shards:  # the uploaded objects are the local files, byte for byte
        data = loc.child("train").read_bytes(entry.file)
        assert hashlib.sha256(data).hexdigest() == entry.sha256
    assert loc.size(".shard.lease") is None and loc.size(".uploads", "train.json") is None
    cache = ShardCache(tmp_path / "cache")
    st, ref = Store(loc.child("train"), cache), Store.open(tmp_path / "local", "train")
    assert len(st) == len(ref) == 7 and st.split == "train" and st.clip_ids == ref.clip_ids
    for i in range(len(st)):
        np.testing.assert_array_equal(st.segment(i, 3, 32), ref.segment(i, 3, 32))
        assert st.frame_jpeg(i, 1) == ref.frame_jpeg(i, 1)
    assert cache.downloads == len(local.shards)
    assert sorted(p.stem for p in (tmp_path / "cache").glob("*/*.arrow")) == sorted(e.sha256 for e in local.shards)
    again = Store(loc.child("train"), ShardCache(tmp_path / "cache"))
    again.check()  # HEADs only: nothing downloaded
    assert again.clip_ids == ref.clip_ids and again._cache.downloads == 0  # every shard once per node
    report = verify_store(s3["uri"], decode_jpegs=False)
    assert report.ok and report.splits == {"train": 7}, report.problems
    assert Store.open(s3["uri"]).split == "train"


def test_a_killed_upload_converges_and_skips_complete_shards(
    s3: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_upload = Location.upload
    uploads: list[str] = []

    def dying(self, src, *names):
        if len(uploads) == 2:
            raise RemoteError(f"{self.child(*names)}: connection reset (injected)")
        uploads.append(names[-1])
        return real_upload(self, src, *names)

    monkeypatch.setattr(Location, "upload", dying)
    with pytest.raises(RemoteError):
        write_split(s3["uri"], tmp_path / "st")
    split = location(s3["uri"]).child("train")
    assert split.size("index.json") is None  # not committed: readers see no split, never a partial one
    with pytest.raises(FileNotFoundError, match="no index.json"):
        Store.open(s3["uri"], "train")
    # The lease of the dead run is still there: it names the holder; a rerun by the same tests takes it over.
    location(s3["uri"]).delete(".shard.lease")
    uploads.clear()
    monkeypatch.setattr(Location, "upload", lambda self, src, *n: (uploads.append(n[-1]), real_upload(self, src, *n)))
    index = write_split(s3["uri"], tmp_path / "st")
    assert uploads == [index.shards[2].file]  # the two shards already up were kept
    assert verify_store(s3["uri"], decode_jpegs=False).ok


def test_two_writers_on_one_prefix_the_second_is_refused_naming_the_holder(s3: dict) -> None:
    loc = location(s3["uri"])
    lease = acquire_lease(loc, settle_s=0)
    with pytest.raises(ShardError, match=r"being written by another `tgdp-data shard` \(pid \d+ on .*lease until"):
        acquire_lease(loc, settle_s=0)
    lease.release()
    acquire_lease(loc, settle_s=0).release()


def test_a_corrupt_shard_object_is_named_by_its_sha256(s3: dict, tmp_path: Path) -> None:
    index = write_split(s3["uri"], tmp_path / "st")
    split = location(s3["uri"]).child("train")
    name = index.shards[1].file
    data = bytearray(split.read_bytes(name))
    data[len(data) // 2] ^= 0xFF
    split.write_bytes(bytes(data), name)
    st = Store(split, ShardCache(tmp_path / "cache"))
    with pytest.raises(StoreError, match=rf"shard {name} of s3://.* is corrupt: sha256"):
        st.clip_ids  # noqa: B018 - maps every shard
    assert not list((tmp_path / "cache").glob("*/.tmp-*"))  # nothing partial left in the cache
    assert any(name in p for p in verify_store(s3["uri"], decode_jpegs=False).problems)


def test_wrong_credentials_and_a_missing_bucket_are_one_line(
    s3: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_split(s3["uri"], tmp_path / "st", n=2)
    with pytest.raises(RemoteError, match=r"bucket 'no-such-bucket-tgdp' does not exist") as err:
        Store.open("s3://no-such-bucket-tgdp/store", "train")
    assert "\n" not in str(err.value)
    from tgdp.store import fs

    monkeypatch.setattr(fs, "_FILESYSTEMS", {})
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    with pytest.raises(RemoteError, match="check the credentials") as err:
        Store.open(s3["uri"], "train")
    text = str(err.value)
    assert "\n" not in text and "wrong-secret-value" not in text and s3["uri"] in text


def test_credentials_in_a_uri_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="credentials in a store URI are refused") as err:
        location("s3://AKIAXXX:topsecret@bucket/store")
    assert "topsecret" not in str(err.value)


def test_server_killed_mid_download_retries_then_names_shard_and_uri(
    s3: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tgdp.store import fs

    index = write_split(s3["uri"], tmp_path / "st", n=4)
    monkeypatch.setattr(fs, "S3_MAX_ATTEMPTS", 1)  # the SDK's own retries would only make the test slower
    monkeypatch.setattr(fs, "_FILESYSTEMS", {})
    split = location(s3["uri"]).child("train")
    st = Store(split, ShardCache(tmp_path / "cache", attempts=2, backoff_s=0.05))
    server = s3["server"]
    server.stop()
    try:
        with pytest.raises(RemoteError) as err:
            st.fbank(0)
    finally:
        server.start()
    text = str(err.value)
    assert "\n" not in text and f"shard {index.shards[0].file}" in text and "after 2 attempts" in text
    assert s3["uri"] in text
    # The server is back (its volume servers take a moment to rejoin): the SDK's and the cache's retries converge.
    monkeypatch.setattr(fs, "S3_MAX_ATTEMPTS", 5)
    monkeypatch.setattr(fs, "_FILESYSTEMS", {})
    assert len(Store(split, ShardCache(tmp_path / "cache", attempts=8, backoff_s=0.25)).clip_ids) == 4


def _fetch_all(uri: str, cache_dir: str, env: dict) -> int:
    """In a fresh process (as a torchrun rank or a DataLoader worker): map every shard; returns its downloads."""
    import os

    os.environ.update(env)
    cache = ShardCache(cache_dir)
    store = Store.open(uri, "train", cache=cache)
    store.check()
    assert len(store.clip_ids) == len(store)
    return cache.downloads


def test_processes_on_one_node_download_each_shard_once(s3: dict, tmp_path: Path) -> None:
    import multiprocessing as mp
    import os

    index = write_split(s3["uri"], tmp_path / "st", n=7)
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    with mp.get_context("spawn").Pool(3) as pool:
        downloads = pool.starmap(_fetch_all, [(s3["uri"], str(tmp_path / "cache"), env)] * 3)
    assert sum(downloads) == len(index.shards), downloads


def test_datasets_load_from_disk_opens_the_bucket_store(s3: dict, tmp_path: Path) -> None:
    """`datasets.load_from_disk("s3://…", storage_options=…)` (fsspec's s3fs, a dev dependency) opens the store."""
    import os

    import datasets

    write_split(s3["uri"], tmp_path / "st", n=5)
    opts = {
        "key": os.environ["AWS_ACCESS_KEY_ID"],
        "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": s3["endpoint"], "region_name": "us-east-1"},
    }
    dd = datasets.load_from_disk(s3["uri"], storage_options=opts)
    assert isinstance(dd, datasets.DatasetDict) and list(dd) == ["train"]
    assert dd["train"].num_rows == 5 and dd["train"][0]["clip_id"] == "d:000:0"


def test_a_remote_read_downloads_only_the_shards_it_touches(s3: dict, tmp_path: Path) -> None:
    """Rows are mapped shard by shard: reading one row of a remote split downloads one shard, and `check` (the
    training pre-flight) downloads none but names a missing object."""
    index = write_split(s3["uri"], tmp_path / "st", n=7)
    split = location(s3["uri"]).child("train")
    cache = ShardCache(tmp_path / "cache")
    st = Store(split, cache)
    st.check()
    assert cache.downloads == 0
    st.fbank(len(st) - 1)
    assert cache.downloads == 1
    split.delete(index.shards[0].file)
    with pytest.raises(StoreError, match=rf"shard {index.shards[0].file} of s3://.* is damaged: missing"):
        Store(split, ShardCache(tmp_path / "cache2")).check()
