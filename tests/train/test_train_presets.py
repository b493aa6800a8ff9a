"""One preset system: a model preset is one YAML file (`tgdp.model.presets.MODEL_PRESET_DIR`) read by tgdp.config's
loader, and it resolves to the same `ModelConfig` from Python (`PRESETS`, `build_model(name)`), from a run config's
YAML (`model_preset:`) and from the `tgdp-train` CLI (`--set model_preset=`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tgdp.config import ConfigError, load_config
from tgdp.model import ModelConfig
from tgdp.model.presets import MODEL_PRESET_DIR, PRESETS, load_model_preset, resolve_model_config
from tgdp.train.cli import app
from tgdp.train.config import list_presets, load_run_config

# The tiny geometry and TG-DP's settings as tgdp 0.1-0.3 wrote them in Python (before the presets became YAML).
TINY = dict(
    embed_dim=64, num_heads=2, modality_depth=2, joint_depth=1, img_size=96, audio_length=128, num_mel_bins=64,
    num_register_tokens=1, decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=2,
)  # fmt: skip
TGDP = dict(
    dual_pass=True, contrastive_mask_ratio=0.5, masking="distinct", lambda_dis=0.01, dis_reduction="sum",
    dis_target="l2norm", teacher_momentum_schedule="relative_cosine", contrastive_symmetric=False,
    contrastive_gather=True,
)  # fmt: skip
LEGACY = {**TGDP, "lambda_dis": 1.0, "dis_reduction": "mean", "dis_target": "raw",
          "teacher_momentum_schedule": "cosine", "contrastive_symmetric": True}  # fmt: skip
EXPECTED = {
    "cavmae_sync_base": {},
    "tgdp_base": TGDP,
    "tgdp_base_legacy": LEGACY,
    "tiny_cavmae_sync": TINY,
    "tiny_tgdp": {**TINY, **TGDP},
    "tiny_tgdp_legacy": {**TINY, **LEGACY},
}


def test_every_preset_file_is_a_preset_with_its_values() -> None:
    assert sorted(PRESETS) == sorted(p.stem for p in MODEL_PRESET_DIR.glob("*.yaml")) == sorted(EXPECTED)
    for name, fields in EXPECTED.items():
        assert PRESETS[name] == ModelConfig(**fields), name
        assert PRESETS[name].model_fields_set == set(fields), name  # a checkpoint's stored config is unchanged


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_python_and_yaml_resolve_a_preset_identically(name: str, tmp_path: Path) -> None:
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({"model_preset": name}), encoding="utf-8")
    via_file = load_run_config(run_yaml).model_cfg()
    via_set = load_run_config("tiny_tgdp", [f"model_preset={name}"]).model_cfg()
    via_loader = load_config(ModelConfig, name, preset_dir=MODEL_PRESET_DIR)
    assert PRESETS[name] == load_model_preset(name) == resolve_model_config(name, {}) == via_loader
    assert via_file == via_set == PRESETS[name]


@pytest.mark.parametrize("name", ["tiny_tgdp", "tiny_cavmae_sync", "tiny_tgdp_legacy"])
def test_cli_resolves_a_preset_as_python_does(name: str) -> None:
    from tgdp.model import build_model

    result = CliRunner().invoke(app, ["--config", "tiny_tgdp", "--set", f"model_preset={name}", "--dry-run"])
    assert result.exit_code == 0, result.output
    dumped = yaml.safe_load(result.output)  # the resolved config; the parameter lines are comments
    assert ModelConfig.model_validate(dumped["model"]) == PRESETS[name] == build_model(name).cfg


def test_train_presets_name_model_presets() -> None:
    """Every run preset's `model_preset` is a model preset file; an unknown name lists the files."""
    for preset in list_presets():
        assert load_run_config(preset).model_preset in PRESETS, preset
    with pytest.raises(ConfigError, match="presets: cavmae_sync_base, tgdp_base"):
        load_run_config("tiny_tgdp", ["model_preset=nope"])
