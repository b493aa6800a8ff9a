"""Checkpoints: strict released-key loading, key reports, the ImageNet-MAE adapter, and the base (ViT-B) layout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from tgdp.model.checkpoint import (
    CheckpointError,
    adapt_mae_imagenet,
    compare_keys,
    load_mae_imagenet,
    load_released,
)
from tgdp.model.presets import PRESETS
from tgdp.model.tgdp import TgdpModel, build_model


def _tiny(name: str = "tiny_tgdp", seed: int = 0) -> TgdpModel:
    torch.manual_seed(seed)
    return build_model(name)


def test_strict_round_trip_with_module_prefix(tmp_path: Path) -> None:
    src, dst = _tiny(seed=1), _tiny(seed=2)
    path = tmp_path / "released.pth"
    torch.save({f"module.{k}": v for k, v in src.student.state_dict().items()}, path)
    report = load_released(dst, path)
    assert report.ok and report.loaded == len(src.student.state_dict())
    for k, v in src.student.state_dict().items():
        assert torch.equal(v, dst.student.state_dict()[k]), k
    # the teacher is reset to the loaded student
    for k, v in dst.teacher.state_dict().items():
        assert torch.equal(v, src.student.state_dict()[k]), k
    # a trainer checkpoint ({"model": sd}) opens the same way, without prefix
    torch.save({"model": src.student.state_dict(), "step": 3}, tmp_path / "train.pth")
    assert load_released(_tiny(seed=3), tmp_path / "train.pth").ok


def test_partial_load_is_refused_and_reported() -> None:
    src, dst = _tiny(seed=1), _tiny(seed=2)
    sd = {f"module.{k}": v for k, v in src.student.state_dict().items()}
    del sd["module.norm_a.weight"]
    sd["module.extra_head.weight"] = torch.zeros(3)
    sd["module.cls_token_v"] = torch.zeros(1, 1, 7)
    before = dst.student.blocks_a[0].attn.qkv.weight.clone()
    with pytest.raises(CheckpointError) as err:
        load_released(dst, sd)
    msg = str(err.value)
    assert "norm_a.weight" in msg and "extra_head.weight" in msg and "cls_token_v" in msg
    assert torch.equal(dst.student.blocks_a[0].attn.qkv.weight, before)  # nothing was loaded
    report = load_released(dst, sd, strict=False)
    assert report.missing == ["norm_a.weight"] and report.unexpected == ["extra_head.weight"]
    assert [k for k, _, _ in report.shape_mismatch] == ["cls_token_v"] and not report.ok
    assert torch.equal(dst.student.blocks_a[0].attn.qkv.weight, src.student.blocks_a[0].attn.qkv.weight)


def _synthetic_mae(dim: int = 64, depth: int = 3, dec_dim: int = 64, dec_depth: int = 1) -> dict[str, torch.Tensor]:
    """An ImageNet-MAE-shaped state dict (timm ViT encoder names + MAE decoder names)."""
    torch.manual_seed(5)
    enc = VisionTransformer(img_size=96, patch_size=16, embed_dim=dim, depth=depth, num_heads=2, num_classes=0)
    dec = VisionTransformer(img_size=96, patch_size=16, embed_dim=dec_dim, depth=dec_depth, num_heads=2, num_classes=0)
    sd = {k: v.normal_() if v.dim() else v for k, v in enc.state_dict().items()}
    for k, v in dec.state_dict().items():
        if k.startswith("blocks."):
            sd[f"decoder_{k}"] = torch.randn_like(v)
    sd["mask_token"] = torch.randn(1, 1, dec_dim)
    sd["decoder_pos_embed"] = torch.randn(1, 37, dec_dim)
    sd["decoder_embed.weight"], sd["decoder_embed.bias"] = torch.randn(dec_dim, dim), torch.randn(dec_dim)
    sd["decoder_norm.weight"], sd["decoder_norm.bias"] = torch.randn(dec_dim), torch.randn(dec_dim)
    sd["decoder_pred.weight"], sd["decoder_pred.bias"] = torch.randn(768, dec_dim), torch.randn(768)
    return sd


def test_mae_imagenet_adapter_mapping() -> None:
    mae = _synthetic_mae()
    out = adapt_mae_imagenet({"model": mae})
    assert torch.equal(out["blocks_a.1.attn.qkv.weight"], mae["blocks.1.attn.qkv.weight"])
    assert torch.equal(out["blocks_v.1.mlp.fc2.bias"], mae["blocks.1.mlp.fc2.bias"])
    for suffix in ("", "_a", "_v"):
        assert torch.equal(out[f"blocks_u.0.norm1{suffix}.weight"], mae["blocks.2.norm1.weight"])
        assert torch.equal(out[f"blocks_u.0.norm2{suffix}.bias"], mae["blocks.2.norm2.bias"])
    assert "blocks_a.2.attn.qkv.weight" not in out
    for name in ("norm", "norm_a", "norm_v"):
        assert torch.equal(out[f"{name}.weight"], mae["norm.weight"])
    w = mae["patch_embed.proj.weight"]
    assert out["patch_embed_a.proj.weight"].shape == (64, 1, 16, 16)
    assert torch.allclose(out["patch_embed_a.proj.weight"][:, 0], w[:, 0] + w[:, 1] + w[:, 2])
    assert torch.equal(out["decoder_pred_a.weight"], mae["decoder_pred.weight"][:256])
    assert torch.equal(out["decoder_pred_v.bias"], mae["decoder_pred.bias"])
    assert torch.equal(out["cls_token_a"], mae["cls_token"]) and torch.equal(out["cls_token_v"], mae["cls_token"])
    assert not any("pos_embed" in k for k in out)
    # loading into the tiny model: only the documented tensors stay at their init
    model = _tiny()
    report = load_mae_imagenet(model, mae)
    assert report.ok and report.allowed_missing
    assert all(re.search(r"pos_embed|modality|register|norm[12]_[av]", k) for k in report.allowed_missing)
    assert torch.equal(model.student.decoder_blocks[0].attn.qkv.weight, mae["decoder_blocks.0.attn.qkv.weight"])
    assert torch.equal(model.teacher.blocks_u[0].norm1_a.weight, mae["blocks.2.norm1.weight"])
    # a checkpoint lacking a required tensor is refused
    broken = dict(mae)
    del broken["decoder_norm.weight"]
    with pytest.raises(CheckpointError, match="decoder_norm.weight"):
        load_mae_imagenet(_tiny(), broken)


# ------------------------------------------------------------------ ViT-B (built once)
@pytest.fixture(scope="module")
def base_model() -> TgdpModel:
    torch.manual_seed(0)
    return build_model(PRESETS["cavmae_sync_base"])


def test_base_layout_and_one_forward(base_model: TgdpModel) -> None:
    s = base_model.student
    assert s.patch_embed_a.grid_size == (8, 26) and s.patch_embed_v.grid_size == (14, 14)
    assert len(s.blocks_a) == len(s.blocks_v) == 11 and len(s.blocks_u) == 1 and len(s.decoder_blocks) == 8
    assert s.register_tokens.shape == (16, 768)
    assert not s.pos_embed_a.requires_grad and not s.decoder_pos_embed_v.requires_grad
    with torch.no_grad():
        g_a, g_v = base_model.encode(torch.randn(1, 416, 128), torch.randn(1, 3, 224, 224))
    assert g_a.shape == g_v.shape == (1, 768) and torch.isfinite(g_a).all() and torch.isfinite(g_v).all()


@pytest.mark.shared
def test_base_keys_equal_released_tsv(base_model: TgdpModel, shared_dir: Path) -> None:
    tsv = shared_dir / "reference" / "released-state-dict.tsv"
    if not tsv.is_file():
        pytest.skip("released-state-dict.tsv not present")
    lines = tsv.read_text().splitlines()
    total = int(re.search(r"([\d,]+) parameters", lines[0]).group(1).replace(",", ""))
    ref = []
    for line in lines[1:]:
        key, shape, _ = line.split("\t")
        ref.append((key, tuple(int(x) for x in shape.strip("[]").split(","))))
    sd = base_model.student.state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == ref
    assert sum(v.numel() for v in sd.values()) == total == 190_660_864
    # a released-style dict with the `module.` prefix passes the strict key check
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    assert compare_keys(base_model.student, {k[7:]: v for k, v in prefixed.items()}).ok
    assert load_released(base_model, prefixed).ok
