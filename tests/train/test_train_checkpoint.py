"""Checkpoint files: atomic names, last-K retention, weights_only loading, fallback past a corrupt newest file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tests.train.train_support import tiny_config
from tgdp.core.atomic import TMP_PREFIX, temp_path
from tgdp.train.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    remove_stale_temporaries,
    save_checkpoint,
)
from tgdp.train.config import save_run_config


def _state(step: int) -> dict:
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(lin.parameters(), betas=(0.95, 0.999))
    lin(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {
        "model": lin.state_dict(),
        "teacher": None,
        "optimizer": opt.state_dict(),
        "scaler": {},
        "step": step,
        "data_state": {"epoch": 0, "batch": step},
        "config": {"model": {"embed_dim": 64}, "train": {"seed": 0}},
        "derived": {"total_steps": 10},
        "git_rev": "abc",
    }


def test_save_keeps_last_k_and_loads_weights_only(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, _state(step), keep_last=2)
    files = list_checkpoints(tmp_path)
    assert [p.name for p in files] == ["step_00000003.pt", "step_00000004.pt"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [p.name for p in files]  # no temporary
    ckpt = load_checkpoint(files[-1])
    assert ckpt["step"] == 4 and ckpt["optimizer"]["param_groups"][0]["betas"] == (0.95, 0.999)


def test_corrupt_latest_falls_back_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for step in (5, 10):
        save_checkpoint(tmp_path, _state(step), keep_last=3)
    newest = list_checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # torn write
    with caplog.at_level(logging.WARNING):
        path, ckpt = load_latest(tmp_path)
    assert ckpt["step"] == 5 and path.name == "step_00000005.pt"
    assert "step_00000010.pt" in caplog.text and "falling back" in caplog.text


def test_no_usable_checkpoint(tmp_path: Path) -> None:
    assert load_latest(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step_00000001.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        load_latest(tmp_path)
    torch.save({"step": 1}, tmp_path / "checkpoints" / "step_00000002.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "checkpoints" / "step_00000002.pt")


def test_remove_stale_temporaries_removes_what_core_atomic_leaves(tmp_path: Path) -> None:
    # the names a killed writer leaves are the ones tgdp.core.atomic gives: `.tmp-<pid>-<name>` next to the file
    save_checkpoint(tmp_path, _state(1), keep_last=2)
    save_run_config(tiny_config(), tmp_path / "config.yaml")
    stale = [temp_path(tmp_path / "checkpoints" / "step_00000002.pt"), temp_path(tmp_path / "config.yaml")]
    stale.append(tmp_path / f"{TMP_PREFIX}1-config-history.json")
    for path in stale:
        path.write_bytes(b"torn")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["config.yaml", "step_00000001.pt"]
