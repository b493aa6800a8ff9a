"""Named model presets. Training ablation rows are YAML overrides of these fields (written in tgdp.train)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from tgdp.config import ConfigError, validation_messages
from tgdp.model.config import ModelConfig

__all__ = ["PRESETS", "resolve_model_config"]

# TG-DP as the paper defines it (§3.3, Eqs. 4 and 6, Tables 6 and 8): dual pass, ρ_c 0.5, deterministic top-k
# ("Distinct Guided Mask"), single-direction V→A InfoNCE (Eq. 4), L_dis = ‖g − ĝ‖²₂ summed over dims (Eq. 6).
# Ours (the paper gives no value): λ_dis, distilling L2-normalised tokens, and the run-length-relative EMA schedule,
# chosen from the measurements in docs/MODEL.md ("Choosing the distillation defaults").
_TGDP = dict(
    dual_pass=True,
    contrastive_mask_ratio=0.5,
    masking="distinct",
    lambda_dis=0.01,
    dis_reduction="sum",
    dis_target="l2norm",
    teacher_momentum_schedule="relative_cosine",
    contrastive_symmetric=False,
    contrastive_gather=True,
)
# Exactly the TG-DP setting of tgdp 0.1 (before the collapse study): λ_dis 1 on mean-over-dims MSE of the raw tokens,
# EMA 0.996 → 1 (cosine, absolute), symmetric InfoNCE as in the released TG-DP code.
_TGDP_LEGACY = {
    **_TGDP,
    "lambda_dis": 1.0,
    "dis_reduction": "mean",
    "dis_target": "raw",
    "teacher_momentum_schedule": "cosine",
    "contrastive_symmetric": True,
}
# Tiny: 64-d, 2 modality blocks + 1 joint, 96-px frames (6×6 patches), 128 frames × 64 bins audio (4×8 patches),
# 1 register, 64-d × 1-block decoder: forward+backward of batch 8 runs in tens of ms on a CPU core.
_TINY = dict(
    embed_dim=64,
    num_heads=2,
    modality_depth=2,
    joint_depth=1,
    img_size=96,
    audio_length=128,
    num_mel_bins=64,
    num_register_tokens=1,
    decoder_embed_dim=64,
    decoder_depth=1,
    decoder_num_heads=2,
)

PRESETS: dict[str, ModelConfig] = {
    "cavmae_sync_base": ModelConfig(),
    "tgdp_base": ModelConfig(**_TGDP),
    "tiny_cavmae_sync": ModelConfig(**_TINY),
    "tiny_tgdp": ModelConfig(**_TINY, **_TGDP),
    "tgdp_base_legacy": ModelConfig(**_TGDP_LEGACY),
    "tiny_tgdp_legacy": ModelConfig(**_TINY, **_TGDP_LEGACY),
}


def resolve_model_config(preset: str, overrides: Mapping[str, Any]) -> ModelConfig:
    """`PRESETS[preset]` with `overrides` applied and validated (unknown preset, key or bad value -> ConfigError).
    Used for a run config's model section and for the config stored in a checkpoint."""
    if preset not in PRESETS:
        raise ConfigError(f"model_preset {preset!r} is unknown; presets: {', '.join(sorted(PRESETS))}")
    try:
        return ModelConfig.model_validate({**PRESETS[preset].model_dump(), **dict(overrides)})
    except ValidationError as exc:
        raise ConfigError(
            "invalid model config: " + "; ".join(validation_messages(exc, "model.", ModelConfig))
        ) from None
