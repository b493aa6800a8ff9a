"""Named model presets: one YAML file per preset in `model/preset_files/` (a `ModelConfig`'s fields, with `base:`
chains), read by the one preset loader of `tgdp.config`. Python (`PRESETS`, `build_model(name)`) and YAML (a run
config's `model_preset:`, `tgdp-train --set model_preset=...`) both resolve a name through `load_model_preset`, so a
preset means the same model everywhere. Training ablation rows are YAML overrides of these fields (tgdp.train)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tgdp.config import ConfigError, load_yaml_with_bases, validation_messages
from tgdp.model.config import ModelConfig

__all__ = ["MODEL_PRESET_DIR", "PRESETS", "load_model_preset", "resolve_model_config"]

MODEL_PRESET_DIR = Path(__file__).resolve().parent / "preset_files"


def _validated(data: Mapping[str, Any]) -> ModelConfig:
    try:
        return ModelConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(
            "invalid model config: " + "; ".join(validation_messages(exc, "model.", ModelConfig))
        ) from None


def load_model_preset(name: str) -> ModelConfig:
    """The `ModelConfig` of the preset file `MODEL_PRESET_DIR/<name>.yaml` (its `base:` chain merged)."""
    return _validated(load_yaml_with_bases(name, MODEL_PRESET_DIR))


PRESETS: dict[str, ModelConfig] = {p.stem: load_model_preset(p.stem) for p in sorted(MODEL_PRESET_DIR.glob("*.yaml"))}


def resolve_model_config(preset: str, overrides: Mapping[str, Any]) -> ModelConfig:
    """`PRESETS[preset]` with `overrides` applied and validated (unknown preset, key or bad value -> ConfigError).
    Used for a run config's model section and for the config stored in a checkpoint."""
    if preset not in PRESETS:
        raise ConfigError(f"model_preset {preset!r} is unknown; presets: {', '.join(sorted(PRESETS))}")
    return _validated({**PRESETS[preset].model_dump(), **dict(overrides)})
