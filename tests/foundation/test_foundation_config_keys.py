"""Config keys are discoverable: every key has a type, a default and one-line help, each CLI prints them
(`tgdp-data config`, `tgdp-eval config`, `tgdp-train --show-config`), an unknown key lists its section's keys with
the closest match, and each command's `--set` help gives an example from its own section."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from tgdp.config import ConfigError, commented_yaml, config_keys, load_config
from tgdp.eval.cli import app as eval_app
from tgdp.eval.probe import ProbeConfig
from tgdp.experiments.demo import DemoConfig
from tgdp.pipeline.cli import app as data_app
from tgdp.pipeline.config import PipelineConfig, load_pipeline_config
from tgdp.train.cli import app as train_app
from tgdp.train.config import RunConfig, load_run_config

runner = CliRunner()


@pytest.mark.parametrize("cfg", [PipelineConfig(), RunConfig(), ProbeConfig(), DemoConfig()], ids=type)
def test_every_key_has_type_default_and_help(cfg) -> None:
    keys = config_keys(cfg)
    assert len(keys) >= 10
    missing = [k.key for k in keys if not k.help or not k.type]
    assert not missing, f"keys without a Field description: {missing}"


def test_shared_keys_are_listed_once() -> None:
    keys = {k.key for k in config_keys(PipelineConfig())}
    assert {"features.num_mel_bins", "fetch.pad_s", "validate.min_frames", "shard.shard_bytes"} <= keys
    assert not keys & {"validate.features.num_mel_bins", "validate.pad_s", "shard.num_mel_bins", "fetch.cookies"}


def test_commented_yaml_loads_back(tmp_path: Path) -> None:
    cfg = load_pipeline_config(None, ["validate.min_frames=3", "fetch.format_sort=[res:240]", "features.frame_size=96"])
    text = commented_yaml(cfg)
    assert "min_frames: 3  # int >=1; default 16; " in text
    assert "manifest: null  # not set" in text  # an unset section stays loadable
    (tmp_path / "p.yaml").write_text(text)
    assert load_pipeline_config(tmp_path / "p.yaml") == cfg
    run = load_run_config("tiny_tgdp", ["optim.lr=1e-3"])
    (tmp_path / "r.yaml").write_text(commented_yaml(run))
    assert load_run_config(tmp_path / "r.yaml") == run


@pytest.mark.parametrize(
    ("load", "needles"),
    [
        (
            lambda: load_pipeline_config(None, ["validate.min_frame=3"]),
            ["'validate.min_frame'", "did you mean 'validate.min_frames'?", "validate keys: duration_tol_s,"],
        ),
        (
            lambda: load_pipeline_config(None, ["manifest.dataset=audioset", "manifest.nonsense=1"]),
            ["'manifest.nonsense'", "manifest keys: dataset, csv,"],
        ),
        (lambda: load_pipeline_config(None, ["fetchh.x=1"]), ["did you mean 'fetch'?", "PipelineConfig keys:"]),
        (
            lambda: load_run_config("tiny_tgdp", ["model.mask_ratio=0.5"]),
            ["did you mean 'model.mask_ratio_", "model keys: embed_dim"],
        ),
        (lambda: load_run_config("tiny_tgdp", ["optim.lrr=0.1"]), ["did you mean 'optim.lr'?", "optim keys: name"]),
        (lambda: load_config(ProbeConfig, None, ["epoch=3"]), ["did you mean 'epochs'?", "ProbeConfig keys: task"]),
    ],
)
def test_unknown_key_lists_its_section_and_the_closest_match(load, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load()
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_unknown_key_hint_leaves_out_keys_spelt_elsewhere() -> None:
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(None, ["shard.shard_byte=1"])
    assert "did you mean 'shard.shard_bytes'?" in str(info.value) and "num_mel_bins" not in str(info.value)


def test_data_config_command(tmp_path: Path) -> None:
    res = runner.invoke(data_app, ["config", "validate", "--json", "--set", "validate.min_frames=3"])
    assert res.exit_code == 0, res.output
    rows = {r["key"]: r for r in json.loads(res.output)}
    assert set(rows) == {k.key for k in config_keys(PipelineConfig()) if k.key.startswith("validate.")}
    assert rows["validate.min_frames"] == {
        "key": "validate.min_frames",
        "type": "int >=1",
        "value": 3,
        "default": 16,
        "help": rows["validate.min_frames"]["help"],
    }
    human = runner.invoke(data_app, ["config", "--set", "fetch.max_attempts=2"])
    assert human.exit_code == 0, human.output
    assert "fetch.max_attempts" in human.output and "(default 5)" in human.output
    shown = runner.invoke(data_app, ["config", "--show", "--set", "shard.shard_bytes=1000"])
    (tmp_path / "c.yaml").write_text(shown.output)
    assert load_pipeline_config(tmp_path / "c.yaml").shard.shard_bytes == 1000
    bad = runner.invoke(data_app, ["config", "nosuch"])
    assert bad.exit_code == 2 and "sections: features, fetch, manifest, shard, store, synth, validate" in bad.output


def test_eval_and_train_print_their_keys() -> None:
    res = runner.invoke(eval_app, ["config", "epochs", "--json", "--set", "epochs=3"])
    assert res.exit_code == 0, res.output
    assert [(r["key"], r["value"], r["default"]) for r in json.loads(res.output)] == [("epochs", 3, 25)]
    res = runner.invoke(train_app, ["--config", "tiny_tgdp", "--show-config", "--set", "optim.lr=0.001"])
    assert res.exit_code == 0, res.output
    for key in ("model_preset", "model.lambda_dis", "optim.lr", "train.steps", "data.mixup"):
        assert key in res.output
    assert "0.001 (default 0.0002)" in res.output


def _commands(app: typer.Typer) -> dict[str, click.Command]:
    group = typer.main.get_group(app)
    return dict(group.commands)


# The section a command's `--set` example must come from: its own stage, or the one key it reads.
OWN_SECTION = {
    "manifest": "manifest",
    "synth": "synth",
    "fetch": "fetch",
    "validate": "validate",
    "shard": "shard",
    "status": "fetch.max_attempts",
    "export": "fetch.max_attempts",
}


def test_each_set_help_shows_an_example_of_its_own_section() -> None:
    keys = {k.key for k in config_keys(PipelineConfig())}
    seen = {}
    for name, command in _commands(data_app).items():
        for param in command.params:
            if "--set" in getattr(param, "opts", []):
                example = re.search(r"e\.g\. ([\w.]+)=", param.help or "")
                assert example, (name, param.help)
                assert example.group(1) in keys, (name, example.group(1))
                seen[name] = example.group(1)
    for name, section in OWN_SECTION.items():
        assert seen[name] == section or seen[name].startswith(section + "."), (name, seen[name])
