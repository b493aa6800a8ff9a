"""Named model presets. Training ablation rows are YAML overrides of these fields (written in tgdp.train)."""

from __future__ import annotations

from tgdp.model.config import ModelConfig

__all__ = ["PRESETS"]

_TGDP = dict(
    dual_pass=True,
    contrastive_mask_ratio=0.5,
    masking="distinct",
    lambda_dis=1.0,
    contrastive_symmetric=True,
    contrastive_gather=True,
)
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
}
