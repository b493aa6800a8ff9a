"""Positions, patch grids, patchify and the two explicit-attention block paths."""

from __future__ import annotations

import math

import pytest
import torch

from tgdp.model.config import ModelConfig
from tgdp.model.layers import Block, audio_to_image, patchify, sincos_pos_embed_2d
from tgdp.model.presets import PRESETS


def test_sincos_layout_time_first_half_freq_second_half() -> None:
    dim, fh, tw = 32, 8, 26
    pe = sincos_pos_embed_2d(dim, fh, tw)
    assert pe.shape == (fh * tw, dim)
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    for f, t in [(0, 0), (2, 5), (7, 25), (3, 0)]:
        k = f * tw + t  # freq-major token index
        row = pe[k].double()
        assert torch.allclose(row[: dim // 4], torch.sin(t * omega).float().double(), atol=1e-6)
        assert torch.allclose(row[dim // 4 : dim // 2], torch.cos(t * omega).float().double(), atol=1e-6)
        assert torch.allclose(row[dim // 2 : 3 * dim // 4], torch.sin(f * omega).float().double(), atol=1e-6)
        assert torch.allclose(row[3 * dim // 4 :], torch.cos(f * omega).float().double(), atol=1e-6)


def test_base_grids_and_patch_counts() -> None:
    cfg = PRESETS["cavmae_sync_base"]
    assert cfg.audio_grid == (8, 26) and cfg.num_patches_a == 208
    assert cfg.visual_grid == (14, 14) and cfg.num_patches_v == 196
    tiny = PRESETS["tiny_tgdp"]
    assert tiny.audio_grid == (4, 8) and tiny.visual_grid == (6, 6)


def test_audio_patch_order_is_freq_major() -> None:
    from timm.layers import PatchEmbed

    pe = PatchEmbed((128, 416), 16, in_chans=1, embed_dim=4)
    audio = torch.zeros(1, 416, 128)  # [B, T, F]
    base = pe(audio_to_image(audio))
    assert base.shape == (1, 208, 4)
    t_frame, f_bin = 16 * 5 + 3, 16 * 2 + 1
    audio[0, t_frame, f_bin] = 10.0
    changed = (pe(audio_to_image(audio)) - base).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert changed == [2 * 26 + 5]
    # patchify (MAE loss target) uses the same token order and (p_row=freq, p_col=time) pixel order
    target = patchify(audio_to_image(audio), 16)
    assert target.shape == (1, 208, 256)
    assert target[0, 2 * 26 + 5].nonzero().flatten().tolist() == [1 * 16 + 3]


def test_patchify_rgb_pixel_order() -> None:
    img = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(1, 3, 32, 32)
    x = patchify(img, 16)
    assert x.shape == (1, 4, 768)
    # patch 1 = row 0, col 1; pixel (r=2, c=3, ch=1)
    assert x[0, 1, (2 * 16 + 3) * 3 + 1] == img[0, 1, 2, 16 + 3]


@pytest.mark.parametrize("modality", [None, "a", "v"])
def test_global_paths_match_full_block(modality: str | None) -> None:
    torch.manual_seed(0)
    blk = Block(32, 4)
    for p in blk.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 11, 32)
    full = blk(x, modality)
    g, attn = blk.forward_global_with_attn(x, modality)
    assert torch.allclose(g, full[:, 0], atol=1e-5)
    assert attn.dtype == torch.float32 and attn.shape == (3, 4, 11, 11)
    assert torch.allclose(attn.sum(-1), torch.ones(3, 4, 11), atol=1e-5)
    # explicit reference softmax for one head
    n1 = {None: blk.norm1, "a": blk.norm1_a, "v": blk.norm1_v}[modality]
    q, k, _ = blk.attn.qkv(n1(x)).reshape(3, 11, 3, 4, 8).permute(2, 0, 3, 1, 4)
    ref = torch.softmax(q[:, 2] @ k[:, 2].transpose(-1, -2) / math.sqrt(8), dim=-1)
    assert torch.allclose(attn[:, 2], ref, atol=1e-5)
    if modality is not None:
        assert torch.allclose(blk.forward_global(x, modality), full[:, 0], atol=1e-5)


def test_global_attention_is_fp32_under_bf16_autocast() -> None:
    blk = Block(32, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g, attn = blk.forward_global_with_attn(torch.randn(2, 5, 32), "a")
    assert attn.dtype == torch.float32 and g.shape == (2, 32)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown_key|extra"):
        ModelConfig(unknown_key=1)
    with pytest.raises(ValueError):
        ModelConfig(mask_ratio_a=1.0)
    with pytest.raises(ValueError):
        ModelConfig(contrastive_temperature=0.0)
    with pytest.raises(ValueError):
        ModelConfig(teacher_momentum=1.5)
    with pytest.raises(ValueError, match="dual_pass"):
        ModelConfig(masking="distinct")
    with pytest.raises(ValueError, match="patch_size"):
        ModelConfig(audio_length=410)
    assert not ModelConfig(dual_pass=True).use_teacher
    assert ModelConfig(dual_pass=True, lambda_dis=0.5).use_teacher
    assert ModelConfig(dual_pass=True, masking="probabilistic").use_teacher
    assert PRESETS["tgdp_base"].use_teacher and not PRESETS["cavmae_sync_base"].use_teacher
    assert ModelConfig(dual_pass=True, contrastive_mask_ratio=0.0).contrastive_mask_ratio == 0.0
