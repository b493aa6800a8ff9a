"""`PipelineConfig`: every setting of the data pipeline in one typed config, one section per stage.

Every `tgdp-data` command reads the same config (`--config FILE`, then `--set section.key=value`, then its run-level
flags: paths, backend/address, workers), so one file describes a whole ROOT's pipeline:

    features:  {num_mel_bins: 64, frame_size: 96}   # the store payload; validate's cache and shard both use it
    fetch:     {rate_per_hour: 0, max_attempts: 3}  # status and export read fetch.max_attempts too
    validate:  {min_frames: 16}
    shard:     {shard_bytes: 300000000}
    synth:     {num_clips: 50}
    manifest:  {dataset: audioset, skip_bad: true}

A setting that two stages share has one key, and the stages get it as an argument: `features.<key>` (the store
payload: `run_validate(features=...)` caches it, `run_shard(features=...)` packs it), `fetch.pad_s` (the padding
validate assumes for a fetch without a section start: `run_validate(pad_s=...)`), `fetch.max_attempts` (what status
and export count as gave_up). No stage section has these keys, so `shard.num_mel_bins` is an unknown key whose error
lists the section's keys and the closest match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from tgdp.config import (
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


class PipelineConfig(StrictConfig):
    """The data pipeline's settings (module docstring), validated once per command; each stage gets its section and
    the shared settings it reads as arguments."""

    # `validate` would shadow BaseModel.validate: the field is `validation`, spelt `validate` in files and --set.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    features: FeatureParams = Field(default_factory=FeatureParams)
    manifest: ManifestConfig | None = None  # `tgdp-data manifest` requires manifest.dataset (its --dataset flag)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    validation: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    shard: ShardConfig = Field(default_factory=ShardConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)  # a remote STORE: endpoint (credentials: the environment)


def load_pipeline_config(
    source: str | Path | None = None,
    overrides: Iterable[str] = (),
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> PipelineConfig:
    """defaults ← YAML `source` (with `base:` chains) ← `--set` overrides ← `sections` (a command's run-level flags;
    None values are left out) → a validated `PipelineConfig` (ConfigError names each bad key)."""
    data: dict[str, Any] = load_yaml_with_bases(source) if source is not None else {}
    data = apply_overrides(data, overrides)
    for name, values in (sections or {}).items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            data[name] = deep_merge(data.get(name) or {}, given)
    return validate_config(PipelineConfig, data)
