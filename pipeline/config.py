"""`PipelineConfig`: every setting of the data pipeline in one typed config, one section per stage.

Every `tgdp-data` command reads the same config (`--config FILE`, then `--set section.key=value`, then its run-level
flags: paths, backend/address, workers), so one file describes a whole ROOT's pipeline:

    features:  {num_mel_bins: 64, frame_size: 96}   # the store payload; validate's cache and shard both use it
    fetch:     {rate_per_hour: 0, max_attempts: 3}  # status and export read fetch.max_attempts too
    validate:  {min_frames: 16}
    shard:     {shard_bytes: 300000000}
    synth:     {num_clips: 50}
    manifest:  {dataset: audioset, skip_bad: true}

A setting that two stages share has one key: `features.<key>` (not `validate.features.<key>` or the flat
`shard.<key>` that `ShardConfig` inherits), `fetch.pad_s` (the padding validate assumes for a fetch without a section
start), `fetch.max_attempts` (what status and export count as gave_up). Spelling one of them under a stage section is
an error that names the key to use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tgdp.config import (
    ConfigError,
    StrictConfig,
    apply_overrides,
    deep_merge,
    load_yaml_with_bases,
    validate_config,
)
from tgdp.pipeline.features import FeatureParams
from tgdp.pipeline.fetch import FetchConfig
from tgdp.pipeline.manifest import ManifestConfig
from tgdp.pipeline.shard import ShardConfig
from tgdp.pipeline.synth import SynthConfig
from tgdp.pipeline.validate import ValidateConfig
from tgdp.store.config import StoreConfig

__all__ = ["PipelineConfig", "load_pipeline_config"]


def _shared_key_problem(data: Any) -> str | None:
    """Why `data` spells a shared setting under a stage section (None when it does not)."""
    if not isinstance(data, Mapping):
        return None
    validate, shard = data.get("validate", data.get("validation")), data.get("shard")
    # A section given as a model was built in Python (e.g. by `validate_config()`), not spelt by a user.
    validate_keys = set() if isinstance(validate, BaseModel) else set(dict(validate or {}))
    shard_keys = set() if isinstance(shard, BaseModel) else set(dict(shard or {}))
    moved = [f"validate.{k}" for k in ("features", "pad_s") if k in validate_keys]
    moved += [f"shard.{k}" for k in sorted(shard_keys & {"features", *FeatureParams.model_fields})]
    if not moved:
        return None
    fixes = ", ".join(f"{k} -> {_shared_key(k)}" for k in moved)
    return f"unknown key {', '.join(map(repr, moved))}: a setting two stages share has one key ({fixes})"


def _shared_key(key: str) -> str:
    """Where a shared setting spelt as `key` lives: `fetch.pad_s`, the `features` section, or `features.<leaf>`."""
    leaf = key.split(".")[-1]
    return "fetch.pad_s" if leaf == "pad_s" else "features" if leaf == "features" else f"features.{leaf}"


class PipelineConfig(StrictConfig):
    """The data pipeline's settings (module docstring); `validate_config()`/`shard_config()` fill in the shared keys."""

    # `validate` would shadow BaseModel.validate: the field is `validation`, spelt `validate` in files and --set.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    # Filled in from `features` and `fetch.pad_s`; spelling them here is an error (`_shared_key_problem`).
    hidden_keys: ClassVar[tuple[str, ...]] = (
        "validate.features",
        "validate.pad_s",
        *(f"shard.{k}" for k in FeatureParams.model_fields),
    )

    features: FeatureParams = Field(default_factory=FeatureParams)
    manifest: ManifestConfig | None = None  # `tgdp-data manifest` requires manifest.dataset (its --dataset flag)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    validation: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    shard: ShardConfig = Field(default_factory=ShardConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)  # a remote STORE: endpoint (credentials: the environment)

    @model_validator(mode="before")
    @classmethod
    def _one_key_per_setting(cls, data: Any) -> Any:
        problem = _shared_key_problem(data)
        if problem:
            raise ValueError(problem)
        return data

    def validate_config(self) -> ValidateConfig:
        """The validate stage's config with `features` and `fetch.pad_s` filled in."""
        return self.validation.model_copy(update={"features": self.features, "pad_s": self.fetch.pad_s})

    def shard_config(self) -> ShardConfig:
        """The shard stage's config with the `features` section filled in."""
        return self.shard.model_copy(update=self.features.model_dump())


def load_pipeline_config(
    source: str | Path | None = None,
    overrides: Iterable[str] = (),
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> PipelineConfig:
    """defaults ← YAML `source` (with `base:` chains) ← `--set` overrides ← `sections` (a command's run-level flags;
    None values are left out) → a validated `PipelineConfig` (ConfigError names each bad key)."""
    data: dict[str, Any] = load_yaml_with_bases(source) if source is not None else {}
    data = apply_overrides(data, overrides)
    problem = _shared_key_problem(data)
    if problem:
        raise ConfigError(f"invalid PipelineConfig: {problem}")
    for name, values in (sections or {}).items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            data[name] = deep_merge(data.get(name) or {}, given)
    return validate_config(PipelineConfig, data)
