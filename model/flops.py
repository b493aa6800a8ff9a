"""Analytic FLOPs of one training step (matmuls only, 2 FLOPs per multiply-add) for MFU accounting.

Backward is counted as 2× forward for the student and 0× for the teacher (no grad). Token counts follow the
implementation: registers ride through the modality blocks; the last joint block of the audio/visual streams runs
for the global query only; the dual pass skips the unimodal joint passes of the reconstruction pass.
"""

from __future__ import annotations

from tgdp.model.config import ModelConfig, keep_count

__all__ = ["block_flops", "step_flops"]


def block_flops(n: int, dim: int, mlp_ratio: float = 4.0, n_query: int | None = None) -> float:
    """Forward FLOPs of one transformer block on one sequence of `n` tokens (`n_query` queries, default n)."""
    q = n if n_query is None else n_query
    hidden = int(dim * mlp_ratio)
    qkv = 2 * n * dim * 3 * dim if q == n else 2 * dim * dim * (q + 2 * n)
    attn = 2 * 2 * q * n * dim  # q·kᵀ and attn·v
    proj = 2 * q * dim * dim
    mlp = 2 * 2 * q * dim * hidden
    return float(qkv + attn + proj + mlp)


def _encoder_stream(cfg: ModelConfig, n_vis: int, with_global: bool) -> float:
    """Modality blocks on 1 + n_vis + R tokens, plus (optionally) the joint blocks ending in a global-only query."""
    d, r = cfg.embed_dim, cfg.num_register_tokens
    f = cfg.modality_depth * block_flops(1 + n_vis + r, d, cfg.mlp_ratio)
    if with_global:
        f += (cfg.joint_depth - 1) * block_flops(1 + n_vis, d, cfg.mlp_ratio)
        f += block_flops(1 + n_vis, d, cfg.mlp_ratio, n_query=1)
    return f


def _patch_embed(cfg: ModelConfig, n_a: int, n_v: int) -> float:
    p2 = cfg.patch_size**2
    return float(2 * n_a * p2 * 1 * cfg.embed_dim + 2 * n_v * p2 * 3 * cfg.embed_dim)


def step_flops(cfg: ModelConfig, batch_size: int) -> dict[str, float]:
    """FLOPs per training step: {'student_fwd', 'teacher_fwd', 'total'} (total = 3·student_fwd + teacher_fwd)."""
    na, nv, d, dd = cfg.num_patches_a, cfg.num_patches_v, cfg.embed_dim, cfg.decoder_embed_dim
    ka = keep_count(na, cfg.mask_ratio_a, cfg.keep_rounding)
    kv = keep_count(nv, cfg.mask_ratio_v, cfg.keep_rounding)
    single = not cfg.dual_pass
    rec = _patch_embed(cfg, na, nv)
    rec += _encoder_stream(cfg, ka, single) + _encoder_stream(cfg, kv, single)
    rec += cfg.joint_depth * block_flops(ka + kv, d, cfg.mlp_ratio)
    rec += 2 * (ka + kv) * d * dd + cfg.decoder_depth * block_flops(na + nv, dd, cfg.mlp_ratio)
    rec += 2 * dd * cfg.patch_size**2 * (na * 1 + nv * 3)
    student = rec
    teacher = 0.0
    if cfg.dual_pass:
        ca = keep_count(na, cfg.contrastive_mask_ratio, cfg.keep_rounding)
        cv = keep_count(nv, cfg.contrastive_mask_ratio, cfg.keep_rounding)
        student += _patch_embed(cfg, na, nv) + _encoder_stream(cfg, ca, True) + _encoder_stream(cfg, cv, True)
        if cfg.use_teacher:
            teacher = _patch_embed(cfg, na, nv) + _encoder_stream(cfg, na, True) + _encoder_stream(cfg, nv, True)
            # the last joint block's queries and softmax rows are computed for every token (the ranking needs them)
            teacher += 2 * (na + nv) * d * d + 2 * ((na + 1) ** 2 + (nv + 1) ** 2) * d
    return {
        "student_fwd": student * batch_size,
        "teacher_fwd": teacher * batch_size,
        "total": (3 * student + teacher) * batch_size,
    }
