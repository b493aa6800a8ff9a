"""`tgdp-train` CLI: help, dry run, clear errors for bad inputs, and one real run on a store written by the shard
stage (tiny TG-DP, real Store reader)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tgdp.train.cli import app

runner = CliRunner()


def test_help_lists_options_without_subcommand() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for opt in ("--config", "--store", "--run-dir", "--set", "--resume", "--dry-run"):
        assert opt in result.output


def test_dry_run_prints_resolved_config_and_parameters() -> None:
    result = runner.invoke(app, ["--config", "abl_ratio_0.2", "--set", "model_preset=tiny_tgdp", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "contrastive_mask_ratio: 0.2" in result.output and "embed_dim: 64" in result.output
    assert "# parameters:" in result.output and "trainable" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "tiny_tgdp", "--set", "train.nope=1", "--dry-run"], "unknown key 'train.nope'"),
        (["--config", "tiny_tgdp", "--set", "model.bogus=1", "--dry-run"], "unknown key 'model.bogus'"),
        (["--config", "tiny_tgdp", "--set", "optim.lr=-0.1", "--dry-run"], "optim.lr"),
        (["--config", "tiny_tgdp", "--set", "train.steps=many", "--dry-run"], "train.steps"),
        (["--config", "nonexistent_preset", "--dry-run"], "neither a YAML file nor a preset"),
        (["--config", "tiny_tgdp", "--store", "/no/such/store", "--run-dir", "x"], "store not found"),
        (["--config", "tiny_tgdp"], "--store and --run-dir are required"),
    ],
)
def test_bad_inputs_exit_with_a_clear_message(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_cli_trains_on_a_real_store(ffmpeg_bin: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from tests.train.train_support import build_real_store

    store = build_real_store(tmp_path_factory.mktemp("real"), ffmpeg_bin, n=10)
    # A store whose segments are too short for the model is refused before any work.
    short = ["--set", "model.audio_length=512", "--set", "train.steps=1"]
    bad = runner.invoke(app, ["--config", "tiny_tgdp", "--store", str(store), "--run-dir", str(tmp_path / "x"), *short])
    assert bad.exit_code == 2 and "target_length 256 < model audio_length 512" in bad.output
    args = ["--config", "tiny_tgdp", "--store", str(store), "--run-dir", str(tmp_path / "run")]
    sets = ["train.steps=3", "train.batch_size=4", "train.num_workers=1", "train.log_every=1", "train.progress=false"]
    result = runner.invoke(app, [*args, *[x for s in sets for x in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert "done: step 3/3" in result.output
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] > 0 for r in rows)
    assert list((tmp_path / "run" / "tb").iterdir())  # TensorBoard event file
    longer = [*args, "--resume", "--set", "train.steps=4", "--set", "train.batch_size=4"]
    refused = runner.invoke(app, longer)  # a longer schedule is a changed config: refused unless allowed
    assert refused.exit_code == 2 and "train.steps 3 -> 4" in refused.output
    resumed = runner.invoke(app, [*longer, "--allow-config-change"])
    assert resumed.exit_code == 0, resumed.output
    assert "done: step 4/4" in resumed.output


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["truncate", "rows"])
def test_damaged_store_is_refused_before_the_run_dir_exists(
    ffmpeg_bin: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, kind: str
) -> None:
    import shutil

    from tests.train.train_support import build_real_store

    store = tmp_path / "store"
    shutil.copytree(build_real_store(tmp_path_factory.mktemp("real"), ffmpeg_bin, n=10), store)
    index_file = store / "train" / "index.json"
    index = json.loads(index_file.read_text())
    shard = index["shards"][-1]
    if kind == "truncate":
        target = store / "train" / shard["file"]
        target.write_bytes(target.read_bytes()[: shard["bytes"] // 2])
    else:  # index.json disagrees with the shard's row count
        shard["rows"] += 1
        index["num_rows"] += 1
        index_file.write_text(json.dumps(index))
    run = tmp_path / "run"
    args = ["--config", "tiny_tgdp", "--store", str(store), "--run-dir", str(run), "--set", "train.batch_size=4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert shard["file"] in result.output and "tgdp-data verify" in result.output
    assert "Traceback" not in result.output
    assert not run.exists()


def test_training_mel_mismatch_names_the_fix(tmp_path: Path) -> None:
    from tests.train.train_support import fake_open, tiny_config, write_fake_store
    from tgdp.train.loop import StoreMismatchError, check_store

    # The tiny presets need a 64-bin store; the error says how to build one (the same key in validate and shard).
    store = write_fake_store(tmp_path / "store", n=8, num_mel_bins=128)
    with pytest.raises(StoreMismatchError) as info:
        check_store(store, tiny_config(), fake_open)
    msg = str(info.value)
    assert "128 mel bins" in msg and "--set features.num_mel_bins=64" in msg
    assert "tgdp-data validate" in msg and "tgdp-data shard" in msg and "model.num_mel_bins=128" in msg


@pytest.mark.parametrize(
    ("status", "signum", "code", "line"),
    [
        ("completed", None, 0, "done: step 5/5, 12.5 samples/s, checkpoint ck/step_00000005.pt"),
        ("interrupted", 15, 143, "interrupted by SIGTERM after step 5/5: checkpoint ck/step_00000005.pt; continue"),
    ],
)
def test_cli_reports_the_fit_summary_and_checks_the_store_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, status: str, signum: int | None, code: int, line: str
) -> None:
    """`fit` checks the store; the CLI does not check it a second time, and turns the summary into a line + exit."""
    from tgdp.train import loop
    from tgdp.train.loop import FitSummary

    summary = FitSummary(status, signum, 5, 5, None, [], "ck/step_00000005.pt", 12.5, 0.4, {}, str(tmp_path))
    calls = []
    monkeypatch.setattr(loop, "fit", lambda *a, **k: calls.append(a) or summary)
    monkeypatch.setattr(loop, "check_store", lambda *a, **k: pytest.fail("the CLI checked the store itself"))
    result = runner.invoke(app, ["--config", "tiny_tgdp", "--store", str(tmp_path), "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == code, result.output
    assert line in result.output and len(calls) == 1
