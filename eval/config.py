"""Typed settings of the `tgdp-eval` commands (`--config FILE`, `--set key=value`, `tgdp-eval config --command C`).

Paths, labels (`--name`, `--dataset`), the store split, `--device` and `--json` stay options of each command; every
setting that changes what is computed is a key here (the probe's own keys are `tgdp.eval.probe.ProbeConfig`).
Imports pydantic only, so the CLI's `--help` and `config` start fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tgdp.config import StrictConfig

__all__ = ["EmbedConfig", "HealthConfig", "RetrievalConfig", "SelectionConfig"]


class EmbedConfig(StrictConfig):
    """`tgdp-eval embed`: how a checkpoint embeds a store split."""

    preset: str | None = Field(
        None, description="model preset of a released state dict (None: cavmae_sync_base; checkpoints carry theirs)"
    )
    features: Literal["global", "pre_joint"] = Field(
        "global", description="global (final-normed tokens) | pre_joint (the released probe's input)"
    )
    dtype: Literal["float16", "float32"] = Field("float16", description="stored dtype of the embeddings")
    batch_size: int = Field(8, ge=1, description="clips per forward batch (each clip = 16 frame/segment pairs)")
    num_workers: int = Field(2, ge=0, description="DataLoader workers decoding frames")


class RetrievalConfig(StrictConfig):
    """`tgdp-eval retrieval`: similarity and ranking of zero-shot retrieval."""

    strategy: Literal["diagonal_mean", "single", "all_pairs"] = Field(
        "diagonal_mean", description="clip similarity from the 16 per-frame tokens"
    )
    frame: int | None = Field(None, ge=0, description="frame of the `single` strategy (None: T//2)")
    ties: Literal["pessimistic", "optimistic"] = Field("pessimistic", description="rank of exactly tied similarities")
    chunk_size: int = Field(2048, ge=1, description="query rows per similarity block")
    plot_clips: int = Field(64, ge=2, description="clips in the similarity-matrix plot")


class HealthConfig(StrictConfig):
    """`tgdp-eval health`: the held-out InfoNCE and collapse figures."""

    batch_size: int = Field(64, ge=2, description="clips per InfoNCE chunk (chance level = ln of this)")
    frame: int = Field(8, ge=0, description="frame index of the pair taken from each clip")


class SelectionConfig(StrictConfig):
    """`tgdp-eval selection`: precision of the selected patches against a synthetic store's ground truth."""

    frame: int = Field(8, ge=0, description="frame index of the pair taken from each clip")
    source: Literal["teacher", "student"] = Field(
        "teacher", description="teacher (the EMA teacher) | student (no EMA lag)"
    )
    direction: Literal["patch_to_global", "global_to_patch"] | None = Field(
        None, description="priority direction (None: the model's)"
    )
