"""The store package on a local disk: bytes unchanged by the move out of the pipeline, the writer's abort on a full
disk, the split swap that never leaves no split, `Store.open` honouring `split`, and index/shard mismatches as
StoreError."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from tests.store.store_support import META, Shape, rows, write_split
from tgdp.store import Store, StoreError
from tgdp.store.format import ShardError, store_features
from tgdp.store.writer import StoreWriter, recover_split, swap_dirs

# sha256 of every file but dataset_info.json (its text is `datasets`' to decide) of the split written by
# `write_split`, computed with the code before the store moved out of `tgdp.pipeline` (pipeline/store.py +
# shard._assemble at commit 435738c): the move changed no byte.
GOLDEN = {
    "data-00000-of-00003.arrow": "b30514f7de06da86d373a805b420070266edacd3080f336a47dd038b4647bcd0",
    "data-00001-of-00003.arrow": "352e9ca5807458a2e803d96ae26700ac9d8bedcc71b08c29906a8c7c79f47e45",
    "data-00002-of-00003.arrow": "48d061a57f5e53ac90cea1c95ac9f5ef9ddae5eaa522aa8af808cc9e3ece1289",
    "index.json": "e5eeb32ac3e7a6537e137c3e6a7c883b555cf7b754a48da88d04bc462c5209c1",
    "state.json": "b673c2863cc08c98b2057e113b6d34bdc3881f27adab7b205f856fbffe7fba00",
}


def test_the_store_bytes_are_those_of_the_pipeline_era_writer(tmp_path: Path) -> None:
    write_split(tmp_path / "store", tmp_path / "store" / ".staging" / "train")
    split = tmp_path / "store" / "train"
    found = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in split.iterdir()}
    assert found.pop("dataset_info.json")
    assert found == GOLDEN
    assert json.loads((tmp_path / "store" / "dataset_dict.json").read_text()) == {"splits": ["train"]}


class _LimitedRaw(io.RawIOBase):
    """A file whose device fills after `limit` bytes: writes then raise ENOSPC, as on a small tmpfs."""

    def __init__(self, path: Path, limit: int) -> None:
        self._fh, self._left = open(path, "wb"), limit  # noqa: SIM115 - closed in close()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self._left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= len(data)
        return self._fh.write(data)

    def close(self) -> None:
        self._fh.close()
        super().close()


@pytest.mark.parametrize("limit", [100, 3_000, 9_000])
def test_a_full_disk_aborts_once_and_leaves_no_temporary_file(tmp_path: Path, limit: int) -> None:
    """The sink is buffered as the real one is, so the ENOSPC may come from the writer's close: abort must not close
    the writer a second time (that raised `ValueError: write to closed file`) and must remove `.tmp-*`."""
    schema = store_features(Shape).arrow_schema
    data, digests = rows(7)
    sink = lambda p: io.BufferedWriter(_LimitedRaw(p, limit), buffer_size=4096)  # noqa: E731
    kw = dict(fbank_shape=(64, 8), shard_bytes=10**9, batch_rows=2, open_sink=sink)
    with pytest.raises(ShardError) as err, StoreWriter(tmp_path, schema, **kw) as writer:
        for r, d in zip(data, digests, strict=True):
            writer.add(r, d)
    text = str(err.value)
    assert "\n" not in text and "shard-00000.arrow" in text and "disk full:" in text and " MB free on " in text
    assert list(tmp_path.iterdir()) == []


def test_the_split_swap_never_leaves_no_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    write_split(store, tmp_path / "st1", n=5, seed=1)
    old_ids = Store.open(store, "train").clip_ids
    seen = []
    real_rmtree = shutil.rmtree

    def look(path, *a, **k):  # the moment the old split is being removed, STORE/train must be the new one
        if Path(path).name == ".tmp-train":
            seen.append(len(Store.open(store, "train")))
        return real_rmtree(path, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", look)
    write_split(store, tmp_path / "st2", n=6, seed=2)
    assert seen == [6]
    assert len(Store.open(store, "train")) == 6 and not (store / ".tmp-train").exists()
    assert len(old_ids) == 5


def test_the_fallback_swap_crash_is_recovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without RENAME_EXCHANGE the swap is two renames; a crash between them leaves only .old-<split>, which the next
    shard run puts back (and the split is never lost)."""
    from tgdp.store import writer

    store = tmp_path / "store"
    write_split(store, tmp_path / "st1", n=5, seed=1)
    monkeypatch.setattr(writer, "_exchange", lambda a, b: False)
    real_replace = writer.os.replace
    calls = []

    def crash_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed between moving the old split aside and moving the new one in
        return real_replace(src, dst)

    new = tmp_path / "new"
    shutil.copytree(store / "train", new)
    monkeypatch.setattr(writer.os, "replace", crash_second)
    with pytest.raises(KeyboardInterrupt):
        swap_dirs(new, store / "train")
    monkeypatch.undo()
    assert not (store / "train").exists() and (store / ".old-train" / "index.json").is_file()
    recover_split(store, "train")
    assert len(Store.open(store, "train")) == 5


def test_open_refuses_a_split_folder_of_another_split(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_split(store, tmp_path / "st", n=3)
    assert Store.open(store / "train").split == "train" and Store.open(store / "train", "train").split == "train"
    with pytest.raises(StoreError, match=r"holds split 'train', not 'eval'"):
        Store.open(store / "train", "eval")
    assert Store.open(store).split == "train"  # a STORE folder without a split: train


def test_a_wrong_row_count_in_index_json_is_a_store_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_split(store, tmp_path / "st", n=4)
    path = store / "train" / "index.json"
    data = json.loads(path.read_text())
    data["num_rows"] = 5
    path.write_text(json.dumps(data))
    st = Store.open(store, "train")
    with pytest.raises(StoreError, match=r"index.json says 5 rows, its shards hold 4"):
        st.fbank(0)
    with pytest.raises(StoreError, match=r"index.json says 5 rows, its shards hold 4"):
        st.check()


def test_schema_metadata_is_the_store_meta(tmp_path: Path) -> None:
    write_split(tmp_path / "store", tmp_path / "st", n=2)
    shard = next((tmp_path / "store" / "train").glob("data-*.arrow"))
    schema = pa.ipc.open_stream(pa.memory_map(str(shard))).schema
    assert json.loads(schema.metadata[b"tgdp"]) == META
