"""One key for the store's feature parameters: `--set features.num_mel_bins=64` in validate and shard alike (the
flat shard key still works, with a note)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tgdp.config import ConfigError, load_config
from tgdp.pipeline.cli import app
from tgdp.pipeline.shard import ShardConfig
from tgdp.pipeline.validate import ValidateConfig


def test_validate_and_shard_take_the_same_feature_keys() -> None:
    sets = ["features.num_mel_bins=64", "features.frame_size=96"]
    shard = load_config(ShardConfig, None, sets)
    validate = load_config(ValidateConfig, None, sets)
    assert shard.num_mel_bins == 64 and shard.frame_size == 96
    assert shard.feature_params() == validate.features  # so shard uses validate's feature cache
    assert load_config(ShardConfig, None, ["num_mel_bins=64"]).num_mel_bins == 64  # the old key still works
    with pytest.raises(ConfigError, match="unknown key 'features.bogus'"):
        load_config(ShardConfig, None, ["features.bogus=1"])


def test_cli_flat_key_is_deprecated_in_shard_and_named_in_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "missing"
    shard = runner.invoke(app, ["shard", str(root), "--store", str(tmp_path / "s"), "--set", "num_mel_bins=64"])
    assert "deprecated" in shard.output and "features.num_mel_bins=64" in shard.output
    validate = runner.invoke(app, ["validate", str(root), "--set", "num_mel_bins=64"])
    assert validate.exit_code == 2
    assert "features.num_mel_bins" in validate.output and "Traceback" not in validate.output


def test_validate_own_num_frames_is_not_a_feature_key(tmp_path: Path) -> None:
    """ValidateConfig has its own `num_frames` (still score) beside `features.num_frames`: no note, no error."""
    out = CliRunner().invoke(app, ["validate", str(tmp_path / "missing"), "--set", "num_frames=8"])
    assert "deprecated" not in out.output and "features.num_frames" not in out.output
    assert "does not exist" in out.output  # it got past the config to the ROOT check
