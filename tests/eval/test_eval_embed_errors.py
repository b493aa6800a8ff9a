"""`tgdp-eval embed` error paths: one line (exit 2, no traceback) for a truncated checkpoint, a tgdp checkpoint given
with a `preset`, an unknown preset, an `--out` that is a directory, and a store whose index.json disagrees with its
shards; each is found before any clip is embedded, and no `.tmp-*` file is left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tgdp.core.atomic import TMP_PREFIX
from tgdp.eval import embed as embed_mod
from tgdp.eval.cli import app

runner = CliRunner()


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    from tgdp.model import build_model

    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    sd = build_model("tiny_cavmae_sync").student.state_dict()
    torch.save({"model": sd, "teacher": None, "config": {"model_preset": "tiny_cavmae_sync", "model": {}}}, path)
    return path


@pytest.fixture()
def no_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed_mod, "embed_store", lambda *a, **k: pytest.fail("embedding started before the checks"))


def _one_line(result, *parts: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = [x for x in result.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def _embed(ckpt: Path, store: Path, out: Path, *extra: str):
    args = ["embed", "--checkpoint", str(ckpt), "--store", str(store), "--out", str(out), "--device", "cpu"]
    return runner.invoke(app, [*args, "--set", "num_workers=0", *extra])


def test_truncated_checkpoint(tmp_path: Path, ckpt: Path, no_embedding: None) -> None:
    ckpt.write_bytes(ckpt.read_bytes()[:3000])
    (tmp_path / "store").mkdir()
    _one_line(_embed(ckpt, tmp_path / "store", tmp_path / "e.arrow"), str(ckpt), "unreadable checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "tiny.pt"]


def test_tgdp_checkpoint_with_preset_and_unknown_preset(tmp_path: Path, ckpt: Path, no_embedding: None) -> None:
    (tmp_path / "store").mkdir()
    out = tmp_path / "e.arrow"
    _one_line(_embed(ckpt, tmp_path / "store", out, "--set", "preset=tiny_cavmae_sync"), str(ckpt), "drop --set preset")
    _one_line(_embed(ckpt, tmp_path / "store", out, "--set", "preset=nope"), "unknown preset 'nope'")
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_out_directory_is_refused_before_anything_is_loaded(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_mod, "load_encoder", lambda *a, **k: pytest.fail("loaded before the --out check"))
    (tmp_path / "store").mkdir()
    out = tmp_path / "existing"
    out.mkdir()
    _one_line(_embed(ckpt, tmp_path / "store", out), str(out), "--out is a directory")
    assert list(out.iterdir()) == [] and not (tmp_path / "existing.tmp").exists()
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    _one_line(_embed(ckpt, tmp_path / "store", blocker / "sub" / "e.arrow"), str(blocker), "not a directory")


def test_failed_table_write_leaves_no_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    import pyarrow as pa

    from tgdp.eval.table import EmbeddingTable, write_embeddings

    table = EmbeddingTable(["a:b:0"], np.zeros((1, 2, 3), np.float32), np.zeros((1, 2, 3), np.float32), [["x"]])
    real = pa.ipc.new_file

    def full(sink, schema):  # the disk fills while the table is written
        sink.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pa.ipc, "new_file", full)
    with pytest.raises(OSError):
        write_embeddings(tmp_path / "e.arrow", table)
    monkeypatch.setattr(pa.ipc, "new_file", real)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_store_whose_index_disagrees_with_its_shards(
    ffmpeg_bin: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, ckpt: Path, no_embedding: None
) -> None:
    import shutil

    from tests.train.train_support import build_real_store

    store = tmp_path / "store"
    shutil.copytree(build_real_store(tmp_path_factory.mktemp("real"), ffmpeg_bin, n=10), store)
    split = next(p for p in store.iterdir() if (p / "index.json").is_file())
    index = json.loads((split / "index.json").read_text())
    index["num_rows"] += 3  # the probe's case: a row count that no shard holds
    (split / "index.json").write_text(json.dumps(index))
    out = tmp_path / "e.arrow"
    _one_line(_embed(ckpt, store, out, "--split", split.name), "index.json says")
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(TMP_PREFIX)]
