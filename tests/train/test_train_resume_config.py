"""Resume under a changed config: refused by default with the changed keys listed; `--allow-config-change` continues,
keeps `config.yaml` as the first config, adds a `config-history.json` entry with the step it took effect at, and
every checkpoint holds the config it was written under."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.train.train_support import fake_open, tiny_config, write_fake_store
from tgdp.config import ConfigError
from tgdp.train import cli, loop
from tgdp.train.checkpoint import list_checkpoints, load_checkpoint
from tgdp.train.config import CONFIG_HISTORY, config_changes
from tgdp.train.loop import fit

FIRST = ("train.steps=2", "train.batch_size=4", "train.keep_last=5")


@pytest.fixture()
def run(tmp_path: Path) -> tuple[Path, Path]:
    store = write_fake_store(tmp_path / "store", n=24)
    fit(tiny_config(*FIRST), store, tmp_path / "run", store_opener=fake_open)
    return store, tmp_path / "run"


def test_config_changes_lists_leaf_keys() -> None:
    old = {"model_preset": "a", "train": {"batch_size": 4, "seed": 0}, "optim": {"lr": 1e-3}}
    new = {"model_preset": "a", "train": {"batch_size": 8, "seed": 0, "accum": 2}, "optim": {"lr": 1e-3}}
    assert config_changes(old, new) == {"train.accum": [None, 2], "train.batch_size": [4, 8]}


def test_changed_batch_size_is_refused_then_allowed_and_recorded(run: tuple[Path, Path]) -> None:
    store, run_dir = run
    first_yaml = (run_dir / "config.yaml").read_text()
    changed = tiny_config("train.steps=3", "train.batch_size=8", "train.keep_last=5")
    with pytest.raises(ConfigError) as info:
        fit(changed, store, run_dir, resume=True, store_opener=fake_open)
    msg = str(info.value)
    assert "train.batch_size 4 -> 8" in msg and "train.steps 2 -> 3" in msg and "--allow-config-change" in msg
    assert "step_00000002.pt" in msg
    assert (run_dir / "config.yaml").read_text() == first_yaml and not (run_dir / CONFIG_HISTORY).exists()
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_00000002.pt"]

    summary = fit(changed, store, run_dir, resume=True, allow_config_change=True, store_opener=fake_open)
    assert summary.step == 3
    assert (run_dir / "config.yaml").read_text() == first_yaml  # the config the run started under
    history = json.loads((run_dir / CONFIG_HISTORY).read_text())
    assert len(history) == 1
    entry = history[0]
    assert entry["step"] == 2 and entry["checkpoint"] == "step_00000002.pt"
    assert entry["changed"]["train.batch_size"] == [4, 8] and entry["changed"]["train.steps"] == [2, 3]
    assert entry["changed"]["derived.total_steps"] == [2, 3]
    assert entry["config"]["train"]["batch_size"] == 8 and entry["derived"]["batch_size"] == 8
    # each checkpoint holds the config it was written under
    old, new = (load_checkpoint(p) for p in list_checkpoints(run_dir))
    assert old["step"] == 2 and old["config"]["train"]["batch_size"] == 4
    assert new["step"] == 3 and new["config"]["train"]["batch_size"] == 8


def test_bookkeeping_changes_resume_without_the_flag_and_are_recorded(run: tuple[Path, Path]) -> None:
    store, run_dir = run
    again = tiny_config(*FIRST, "train.log_every=5")
    summary = fit(again, store, run_dir, resume=True, store_opener=fake_open)
    assert summary.resumed_from.endswith("step_00000002.pt")
    history = json.loads((run_dir / CONFIG_HISTORY).read_text())
    assert [e["changed"] for e in history] == [{"train.log_every": [1, 5]}]


def test_cli_refusal_is_one_line_naming_the_keys(run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    store, run_dir = run
    monkeypatch.setattr(loop, "fit", functools.partial(fit, store_opener=fake_open))
    sets = [*FIRST, "train.num_workers=0", "train.progress=false", "train.tensorboard=false", "optim.lr=2e-3"]
    args = ["--config", "tiny_tgdp", "--store", str(store), "--run-dir", str(run_dir), "--resume"]
    result = CliRunner().invoke(cli.app, [*args, *[x for s in sets for x in ("--set", s)]])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "optim.lr 0.001 -> 0.002" in lines[0] and "--allow-config-change" in lines[0]
    assert "train.log_every" not in lines[0]  # the preset's log_every differs too: bookkeeping
