"""shard under a full disk (over an existing good store, and while assembling) and `tgdp-data verify` on damaged
shards: a clear error, the previous store intact, nothing half-written, and a rerun equal to the clean store."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.reliability.rel_support import FEATURES, SHARD, snapshot
from tgdp.pipeline import shard as shard_mod
from tgdp.pipeline.cli import app
from tgdp.pipeline.shard import run_shard
from tgdp.store import ShardError
from tgdp.store.verify import verify_store

pytestmark = pytest.mark.reliability


def _tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


class _FullDisk:
    """A shard sink that fails with ENOSPC once `limit` bytes have been written in this process."""

    written = 0
    limit = 0

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "wb")  # noqa: SIM115 - closed by the writer through __getattr__

    def write(self, data: bytes) -> int:
        type(self).written += len(data)
        if type(self).written > type(self).limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.fh.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


@pytest.mark.parametrize("limit", [10_000, 60_000])
def test_disk_full_over_existing_store_keeps_it(
    tmp_path: Path, clean_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    store = tmp_path / "store"
    shutil.copytree(clean_run["store"], store)
    before = _tree(store)
    _FullDisk.written, _FullDisk.limit = 0, limit
    monkeypatch.setattr(shard_mod, "_open_sink", _FullDisk)
    with pytest.raises(ShardError, match=r"shard-\d{5}\.arrow.*No space left on device \(disk full: [\d.]+ MB free"):
        run_shard(clean_run["root"], store, SHARD, features=FEATURES, backend="serial", force=True)
    monkeypatch.undo()
    # The complete old store is untouched and still verifies; no temp file is left in staging.
    assert {k: v for k, v in _tree(store).items() if not k.startswith(".staging")} == before
    assert not [p for p in store.rglob(".tmp-*")]
    assert verify_store(store).ok
    run_shard(clean_run["root"], store, SHARD, features=FEATURES, backend="serial", force=True)
    assert _tree(store) == _tree(clean_run["store"])


def test_disk_full_while_assembling_index(
    tmp_path: Path, clean_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    real = shard_mod._write_json

    def full_on_index(path: Path, obj: Any) -> None:
        if path.name == "index.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, obj)

    monkeypatch.setattr(shard_mod, "_write_json", full_on_index)
    with pytest.raises(ShardError, match=r"assembling .*\.tmp-train: No space left on device"):
        run_shard(clean_run["root"], store, SHARD, features=FEATURES, backend="serial")
    monkeypatch.undo()
    assert not (store / "train").exists() and not (store / "eval").exists()  # no split without its index
    run_shard(clean_run["root"], store, SHARD, features=FEATURES, backend="serial")
    assert snapshot(clean_run["root"], store) == clean_run["snapshot"]
    assert _tree(store) == _tree(clean_run["store"])


def _first_shard(store: Path) -> Path:
    index = json.loads((store / "train" / "index.json").read_text())
    return store / "train" / index["shards"][0]["file"]


@pytest.mark.parametrize("damage", ["flip_jpeg_byte", "flip_fbank_byte", "truncate", "delete"])
def test_verify_cli_names_the_damaged_shard(tmp_path: Path, clean_run: dict[str, Any], damage: str) -> None:
    store = tmp_path / "store"
    shutil.copytree(clean_run["store"], store)
    ok = CliRunner().invoke(app, ["verify", str(store)])
    assert ok.exit_code == 0 and ok.output.strip().endswith("ok"), ok.output
    target = _first_shard(store)
    data = bytearray(target.read_bytes())
    if damage == "flip_jpeg_byte":
        data[data.index(b"\xff\xd8\xff") + 300] ^= 0x55
    elif damage == "flip_fbank_byte":
        data[-2000] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) // 2]
    if damage == "delete":
        target.unlink()
    else:
        target.write_bytes(bytes(data))
    out = CliRunner().invoke(app, ["verify", str(store)])
    assert out.exit_code == 1, out.output
    assert f"FAIL train/{target.name}: " in out.output
    if damage != "delete":
        assert "sha256 mismatch" in out.output
