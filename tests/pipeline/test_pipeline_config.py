"""One typed config for every `tgdp-data` command: `--config FILE` ← `--set section.key=value` ← run-level flags,
unknown keys named, and one key per shared setting (`features.*`, `fetch.pad_s`, `fetch.max_attempts`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tgdp.config import ConfigError
from tgdp.pipeline.cli import app
from tgdp.pipeline.config import PipelineConfig, load_pipeline_config
from tgdp.pipeline.features import FeatureParams
from tgdp.pipeline.layout import manifest_path
from tgdp.pipeline.shard import ShardConfig

# Each command with settings, the arguments it needs, and the sections it reads.
COMMANDS = {
    "manifest": (["--dataset", "audioset"], ["manifest"]),
    "synth": ([], ["synth"]),
    "fetch": ([], ["fetch"]),
    "status": ([], ["fetch"]),
    "validate": ([], ["validate", "features"]),
    "export": (["--out", "OUT"], ["fetch"]),
    "shard": (["--store", "STORE"], ["shard", "features"]),
}


def _root(tmp_path: Path) -> Path:
    """A ROOT that passes `require_root` (the stage functions are replaced, so the manifest is never read)."""
    root = tmp_path / "root"
    manifest_path(root).parent.mkdir(parents=True)
    manifest_path(root).touch()
    return root


def _invoke(command: str, tmp_path: Path, *args: str) -> Any:
    extra, _ = COMMANDS[command]
    extra = [str(tmp_path / a) if a in ("OUT", "STORE") else a for a in extra]
    return CliRunner().invoke(app, [command, str(tmp_path / "target"), *extra, *args])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_names_an_unknown_key(command: str, tmp_path: Path) -> None:
    for section in COMMANDS[command][1]:
        out = _invoke(command, tmp_path, "--set", f"{section}.bogus=1")
        assert out.exit_code == 2, (command, out.output)
        assert f"unknown key '{section}.bogus'" in out.output and "Traceback" not in out.output
    out = _invoke(command, tmp_path, "--set", "fetchh.rate_per_hour=0")  # a misspelt section
    assert out.exit_code == 2 and "unknown key 'fetchh'" in out.output


def test_file_then_set_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("fetch: {sessions: 3, rate_per_hour: 10, max_attempts: 4}\n")
    cfg_file = tmp_path / "pipeline.yaml"
    cfg_file.write_text("base: base.yaml\nfetch: {rate_per_hour: 20, workers: 5, backend: serial}\n")
    seen: dict[str, Any] = {}

    class Summary:
        def as_dict(self) -> dict[str, Any]:
            return {"selected": 0, "attempted": 0, "ok": 0, "seconds": 0.0, "failed": {}, "skipped": {}}

    def fake_fetch(root: Path, cfg: Any) -> Summary:
        seen["cfg"] = cfg
        return Summary()

    monkeypatch.setattr("tgdp.pipeline.fetch.fetch", fake_fetch)
    root = _root(tmp_path)
    args = ["fetch", str(root), "--config", str(cfg_file), "--set", "fetch.rate_per_hour=0", "--workers", "7"]
    out = CliRunner().invoke(app, [*args, "--set", "fetch.url_template=http://127.0.0.1:9/v/{ytid}", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["ok"] == 0
    cfg = seen["cfg"]
    assert (cfg.sessions, cfg.max_attempts) == (3, 4)  # from the base file
    assert cfg.backend == "serial"  # from the file
    assert cfg.rate_per_hour == 0  # --set over the file
    assert cfg.workers == 7  # the run-level flag over the file
    assert cfg.url_template == "http://127.0.0.1:9/v/{ytid}" and cfg.progress is False  # --json: no bar


def test_status_and_export_count_gave_up_with_fetch_max_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int | None] = []

    def fake_funnel(root: Path, max_attempts: int | None = 5, progress: bool = False) -> dict[str, Any]:
        seen.append(max_attempts)
        return {"check": True}

    monkeypatch.setattr("tgdp.pipeline.status.funnel", fake_funnel)
    root = _root(tmp_path)
    cfg_file = tmp_path / "pipeline.yaml"
    cfg_file.write_text("fetch: {max_attempts: 9}\n")
    assert CliRunner().invoke(app, ["status", str(root), "--json"]).exit_code == 0
    assert CliRunner().invoke(app, ["status", str(root), "--json", "--config", str(cfg_file)]).exit_code == 0
    out = CliRunner().invoke(app, ["status", str(root), "--json", "--set", "fetch.max_attempts=2"])
    assert out.exit_code == 0, out.output
    assert seen == [5, 9, 2]


def test_validate_and_shard_read_one_features_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI validates the config once and hands both stages the one `features` section (so shard uses
    validate's feature cache) and validate the padding fetch used, as arguments."""
    seen: dict[str, dict] = {}

    def record(stage: str):
        def run(root, cfg, **kw):
            seen[stage] = {"cfg": cfg, **kw}
            raise SystemExit(0)

        return run

    monkeypatch.setattr("tgdp.pipeline.validate.run_validate", record("validate"))
    monkeypatch.setattr(
        "tgdp.pipeline.shard.run_shard", lambda root, store, cfg, **kw: record("shard")(root, cfg, **kw)
    )
    root = _root(tmp_path)
    sets = ["--set", "features.num_mel_bins=64", "--set", "features.frame_size=96", "--set", "fetch.pad_s=1.5"]
    CliRunner().invoke(app, ["validate", str(root), *sets, "--set", "validate.num_frames=8"])
    CliRunner().invoke(app, ["shard", str(root), "--store", str(tmp_path / "s"), *sets])
    want = FeatureParams(num_mel_bins=64, frame_size=96)
    assert seen["validate"]["features"] == want and seen["shard"]["features"] == want
    assert seen["validate"]["pad_s"] == 1.5  # the padding fetch used, one key
    assert seen["validate"]["cfg"].num_frames == 8  # validate's own still-score frames are not a feature key
    assert isinstance(seen["shard"]["cfg"], ShardConfig) and "num_mel_bins" not in ShardConfig.model_fields


@pytest.mark.parametrize(
    ("override", "key", "fix"),
    [
        ("shard.num_mel_bins=64", "shard.num_mel_bins", "did you mean 'features.num_mel_bins'?"),
        ("shard.features.num_mel_bins=64", "shard.features", "did you mean 'features'?"),
        ("validate.features.num_mel_bins=64", "validate.features", "did you mean 'features'?"),
        ("validate.pad_s=1", "validate.pad_s", "did you mean 'fetch.pad_s'?"),
    ],
)
def test_a_shared_setting_has_one_key(override: str, key: str, fix: str) -> None:
    """A shared setting spelt under a stage section is an unknown key there; the hint names where it lives."""
    with pytest.raises(ConfigError, match=re.escape(f"unknown key '{key}'; {fix}")):
        load_pipeline_config(None, [override])
    section, name = key.split(".")
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):  # built in Python, not only via --set
        PipelineConfig.model_validate({section: {name: {} if name == "features" else 1}})


def test_cli_names_the_shared_key(tmp_path: Path) -> None:
    root = tmp_path / "missing"
    for args in (["shard", str(root), "--store", str(tmp_path / "s")], ["validate", str(root)]):
        out = CliRunner().invoke(app, [*args, "--set", "shard.num_mel_bins=64"])
        assert out.exit_code == 2 and "features.num_mel_bins" in out.output and "Traceback" not in out.output
    out = CliRunner().invoke(app, ["validate", str(root), "--set", "features.num_mel_bins=64"])
    assert "does not exist" in out.output  # it got past the config to the ROOT check
