"""`ModelConfig`: every architecture and loss choice of CAV-MAE Sync and TG-DP in one strict, validated config.

Paper (TG-DP, §3.2-§3.3 and §4.4) vs released code vs here; "ours" = the paper gives no value (docs/MODEL.md):

| choice | paper | Sync released | TG-DP released | default here |
|---|---|---|---|---|
| contrastive direction | Eq. 4: single V→A | single V→A | symmetric (all-gather) | `contrastive_symmetric` F |
| contrastive negatives | – | per-replica | global batch (all-gather) | `contrastive_gather`: Sync F, TG-DP T |
| contrastive τ / λ_contra | not given | 0.05 / 0.01–0.5 | 0.05 / 0.01 | 0.05 / 0.01 |
| norm_pix_loss | – | True (dev runs) | False (never passed) | True in both presets (same setting) |
| contrastive-pass ratio ρ_c | 0.5 (paper §3.3, T. 6) | – | 0.75 code default | 0.5 |
| keep count k | – | int(N·(1-ρ)) | `ranked_masking` missing | int() ("floor"); "round" offered |
| teacher token order | full unmasked input | – | shuffled (bug) | original; `teacher_shuffle_bug` = bug |
| priority direction | patch-global attention | – | patch→global attn[:,:,1:,0] | `patch_to_global`; `global_to_patch` |
| token selection | top-k (paper §3.3, Table 8) | – | top-k unless `probe_guide` | `distinct` |
| Gumbel ranking | noise on the scores | – | softmax(attn/τ)+G, τ=1 | log(priority)/τ + G, τ=1 |
| distillation form | Eq. 6: ‖g − ĝ‖²₂ (sum over dims) | – | absent | `dis_reduction` sum, `dis_target` l2norm (ours) |
| λ1 / λ2 / λ3 | not given | – | – | 1 / 0.01 / 0.01 (λ_dis ours, measured) |
| EMA momentum | EMA, value not given | – | absent | 0.996 → 1 cosine, relative to run length (ours) |
| joint-layer loop | – | does not chain | does not chain | chained (same at depth 1) |
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tgdp.config import StrictConfig

__all__ = ["ModelConfig", "keep_count"]


def keep_count(n: int, ratio: float, rounding: str = "floor") -> int:
    """Visible tokens out of `n` at mask `ratio`: int(n·(1-ratio)) as released ("floor") or round() ("round")."""
    x = n * (1.0 - ratio)
    return int(x) if rounding == "floor" else int(round(x))


class ModelConfig(StrictConfig):
    """CAV-MAE Sync backbone + TG-DP options. Defaults are the CAV-MAE Sync ViT-B released architecture."""

    # encoder
    embed_dim: int = Field(768, gt=0, description="encoder width D")
    num_heads: int = Field(12, gt=0, description="encoder attention heads")
    modality_depth: int = Field(11, ge=1, description="modality-specific blocks per modality (blocks_a/blocks_v)")
    joint_depth: int = Field(1, ge=1, description="joint blocks (blocks_u)")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width as a multiple of the width")
    patch_size: int = Field(16, gt=0, description="square patch side (audio and video)")
    img_size: int = Field(224, gt=0, description="input frame side in pixels")
    audio_length: int = Field(416, gt=0, description="T_seg, fbank frames per audio segment")
    num_mel_bins: int = Field(128, gt=0, description="fbank mel bins F of the audio input")
    num_register_tokens: int = Field(
        8, ge=0, description="register tokens per modality; appended at the end, dropped before the joint blocks"
    )
    # decoder
    decoder_embed_dim: int = Field(512, gt=0, description="MAE decoder width")
    decoder_depth: int = Field(8, ge=1, description="MAE decoder blocks")
    decoder_num_heads: int = Field(16, gt=0, description="MAE decoder attention heads")
    # reconstruction pass
    norm_pix_loss: bool = Field(True, description="MAE targets normalised per patch")
    mask_ratio_a: float = Field(0.75, gt=0.0, lt=1.0, description="audio mask ratio of the reconstruction pass")
    mask_ratio_v: float = Field(0.75, gt=0.0, lt=1.0, description="video mask ratio of the reconstruction pass")
    keep_rounding: Literal["floor", "round"] = Field(
        "floor", description="visible-token count: floor = int(N(1-ratio)) as released, or round"
    )
    # TG-DP dual pass
    dual_pass: bool = Field(False, description="TG-DP: a second, contrastive pass besides the reconstruction pass")
    contrastive_mask_ratio: float = Field(
        0.5, ge=0.0, lt=1.0, description="mask ratio of the contrastive pass; 0 = it sees all tokens"
    )
    masking: Literal["random", "distinct", "probabilistic"] = Field(
        "random",
        description="contrastive-pass tokens: random, distinct (teacher top-k) or probabilistic (Gumbel top-k)",
    )
    gumbel_tau: float = Field(1.0, gt=0.0, description="temperature of the probabilistic (Gumbel) selection")
    priority_direction: Literal["patch_to_global", "global_to_patch"] = Field(
        "patch_to_global", description="which attention scores a token: patch_to_global or global_to_patch"
    )
    teacher_shuffle_bug: bool = Field(False, description="reproduce the released code's shuffled teacher token order")
    teacher_momentum: float = Field(0.996, ge=0.0, le=1.0, description="EMA momentum of the teacher at the start")
    teacher_momentum_end: float = Field(1.0, ge=0.0, le=1.0, description="EMA momentum at the end of the run")
    teacher_momentum_schedule: Literal["constant", "cosine", "relative_cosine"] = Field(
        "cosine", description="constant, cosine (start to end) or relative_cosine (scaled to the run length)"
    )
    teacher_momentum_ref_steps: int = Field(
        95_046,
        ge=1,
        description="relative_cosine: the run length at which teacher_momentum applies: 35 epochs (the paper's "
        "Table 4: 7.1 h at 730 s/epoch, 10.2 h at 1,045 s/epoch) of 1,390,395 clips at batch 512; a run of T steps "
        "starts at 1-(1-teacher_momentum)*ref/T, so the teacher lags by the same fraction of the run",
    )
    # losses
    lambda_rec: float = Field(1.0, ge=0.0, description="weight of the MAE reconstruction loss")
    lambda_dis: float = Field(0.0, ge=0.0, description="weight of the teacher distillation loss (Eq. 6); 0 = off")
    lambda_contra: float = Field(0.01, ge=0.0, description="weight of the contrastive loss")
    dis_reduction: Literal["sum", "mean"] = Field(
        "mean", description="sum = Eq. 6 (squared L2 norm over dims); mean = also averaged over dims (= sum / D)"
    )
    dis_target: Literal["raw", "l2norm"] = Field(
        "raw", description="l2norm: distil the L2-normalised tokens (sum: 2-2cos per sample), scale-free"
    )
    contrastive_temperature: float = Field(0.05, gt=0.0, description="InfoNCE temperature tau")
    contrastive_symmetric: bool = Field(
        False, description="both directions (V->A and A->V) instead of the paper's single V->A"
    )
    contrastive_gather: bool = Field(
        False, description="negatives from the global batch (all-gather across ranks) instead of the rank's"
    )
    # efficiency
    grad_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")

    @property
    def use_teacher(self) -> bool:
        """An EMA teacher exists iff the dual pass is on and something consumes it (guided masking or Ldis)."""
        return self.dual_pass and (self.masking != "random" or self.lambda_dis > 0)

    @property
    def audio_grid(self) -> tuple[int, int]:
        """(freq, time) patch grid, e.g. (8, 26) for 128 bins × 416 frames."""
        return self.num_mel_bins // self.patch_size, self.audio_length // self.patch_size

    @property
    def visual_grid(self) -> tuple[int, int]:
        return self.img_size // self.patch_size, self.img_size // self.patch_size

    @property
    def num_patches_a(self) -> int:
        return self.audio_grid[0] * self.audio_grid[1]

    @property
    def num_patches_v(self) -> int:
        return self.visual_grid[0] * self.visual_grid[1]

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        errors = []
        for name, dim, heads in (
            ("embed_dim", self.embed_dim, self.num_heads),
            ("decoder_embed_dim", self.decoder_embed_dim, self.decoder_num_heads),
        ):
            if dim % heads:
                errors.append(f"{name}={dim} is not divisible by its heads ({heads})")
            if dim % 4:
                errors.append(f"{name}={dim} must be a multiple of 4 (2-D sin-cos positions)")
        for name, size in (
            ("img_size", self.img_size),
            ("num_mel_bins", self.num_mel_bins),
            ("audio_length", self.audio_length),
        ):
            if size % self.patch_size:
                errors.append(f"{name}={size} is not a multiple of patch_size={self.patch_size}")
        if not errors:
            for name, n, ratio in (
                ("mask_ratio_a", self.num_patches_a, self.mask_ratio_a),
                ("mask_ratio_v", self.num_patches_v, self.mask_ratio_v),
                ("contrastive_mask_ratio", self.num_patches_a, self.contrastive_mask_ratio),
                ("contrastive_mask_ratio", self.num_patches_v, self.contrastive_mask_ratio),
            ):
                k = keep_count(n, ratio, self.keep_rounding)
                if k < 1 or (name.startswith("mask_ratio") and k >= n):
                    errors.append(f"{name}={ratio} keeps {k} of {n} patches")
        if not self.dual_pass and (self.masking != "random" or self.lambda_dis > 0):
            errors.append(
                f"masking={self.masking!r} / lambda_dis={self.lambda_dis} need dual_pass=true (the single-pass "
                "CAV-MAE Sync model has no teacher); set masking=random and lambda_dis=0"
            )
        if self.teacher_momentum_schedule != "constant" and self.teacher_momentum_end < self.teacher_momentum:
            errors.append("teacher_momentum_end must be >= teacher_momentum for the cosine schedule")
        if errors:
            raise ValueError("; ".join(errors))
        return self
