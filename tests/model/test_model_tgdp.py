"""TgdpModel on tiny configs: loss dict, CAV-MAE Sync equivalence, teacher guidance, EMA and gradient isolation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tgdp.model.cavmae_sync import take_tokens
from tgdp.model.layers import audio_to_image, patchify
from tgdp.model.presets import PRESETS
from tgdp.model.tgdp import TgdpModel, build_model, momentum_at

KEYS = {"loss", "rec_loss", "mae_a_loss", "mae_v_loss", "contrastive_loss", "dis_loss"}


def _inputs(cfg, b: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(b, cfg.audio_length, cfg.num_mel_bins, generator=g)
    frames = torch.randn(b, 3, cfg.img_size, cfg.img_size, generator=g)
    return audio, frames


def _tiny(name: str, **overrides) -> TgdpModel:
    torch.manual_seed(0)
    return build_model(PRESETS[name].model_copy(update=overrides) if overrides else PRESETS[name])


@pytest.mark.parametrize("name", ["tiny_cavmae_sync", "tiny_tgdp"])
def test_forward_backward_loss_dict(name: str) -> None:
    model = _tiny(name)
    audio, frames = _inputs(model.cfg)
    out = model(audio, frames, step=3)
    assert set(out) == KEYS and all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    cfg = model.cfg
    total = cfg.lambda_rec * out["rec_loss"] + cfg.lambda_contra * out["contrastive_loss"]
    total = total + cfg.lambda_dis * out["dis_loss"]
    assert torch.allclose(out["loss"], total, atol=1e-6)
    assert torch.allclose(out["rec_loss"], out["mae_a_loss"] + out["mae_v_loss"])
    assert (out["dis_loss"] > 0) == (model.teacher is not None)
    out["loss"].backward()
    trainable = [n for n, p in model.student.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in model.student.named_parameters() if p.requires_grad and p.grad is None]
    assert trainable and not no_grad  # every trainable student tensor is used (DDP without unused params)
    g_a, g_v = model.encode(audio, frames)
    assert g_a.shape == g_v.shape == (4, cfg.embed_dim)


def _reference_sync_loss(model: TgdpModel, audio: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Independent CAV-MAE Sync step written from docs/MODEL.md using the student's layers (noise: audio, visual)."""
    s, cfg = model.student, model.cfg
    b, r = audio.shape[0], cfg.num_register_tokens

    def mask(x, ratio):
        n = x.shape[1]
        keep = int(n * (1 - ratio))
        ids_shuffle = torch.argsort(torch.rand(b, n), dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        vis = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, x.shape[2]))
        m = torch.ones(b, n)
        m[:, :keep] = 0
        return vis, torch.gather(m, 1, ids_restore), ids_restore

    xa = s.patch_embed_a(audio.unsqueeze(1).transpose(2, 3)) + s.pos_embed_a + s.modality_a
    xv = s.patch_embed_v(frames) + s.pos_embed_v + s.modality_v
    xa, ma, ra = mask(xa, cfg.mask_ratio_a)
    xv, mv, rv = mask(xv, cfg.mask_ratio_v)
    ua = torch.cat([s.cls_token_a.expand(b, -1, -1), xa, s.register_tokens[:r].expand(b, -1, -1)], 1)
    uv = torch.cat([s.cls_token_v.expand(b, -1, -1), xv, s.register_tokens[r:].expand(b, -1, -1)], 1)
    for blk in s.blocks_a:
        ua = blk(ua)
    for blk in s.blocks_v:
        uv = blk(uv)
    ua, uv = ua[:, :-r], uv[:, :-r]
    x = torch.cat([ua[:, 1:], uv[:, 1:]], 1)
    for blk in s.blocks_u:
        x = blk(x)
    x = s.decoder_embed(s.norm(x))
    na, nv, ka = ra.shape[1], rv.shape[1], xa.shape[1]
    da = torch.cat([x[:, :ka], s.mask_token.expand(b, na - ka, -1)], 1)
    dv = torch.cat([x[:, ka:], s.mask_token.expand(b, nv - xv.shape[1], -1)], 1)
    da = torch.gather(da, 1, ra[..., None].expand(-1, -1, da.shape[2])) + s.decoder_pos_embed_a + s.decoder_modality_a
    dv = torch.gather(dv, 1, rv[..., None].expand(-1, -1, dv.shape[2])) + s.decoder_pos_embed_v + s.decoder_modality_v
    x = torch.cat([da, dv], 1)
    for blk in s.decoder_blocks:
        x = blk(x)
    x = s.decoder_norm(x)

    def mse(pred, target, m):
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
        return (((pred - target) ** 2).mean(-1) * m).sum() / m.sum()

    loss_a = mse(s.decoder_pred_a(x[:, :na]), patchify(audio_to_image(audio), 16), ma)
    loss_v = mse(s.decoder_pred_v(x[:, na:]), patchify(frames, 16), mv)
    ca, cv = ua, uv
    for blk in s.blocks_u:
        ca, cv = blk(ca, "a"), blk(cv, "v")
    cls_a = F.normalize(s.norm_a(ca[:, 0]), dim=-1)
    cls_v = F.normalize(s.norm_v(cv[:, 0]), dim=-1)
    nce = -torch.diagonal(torch.log_softmax(cls_a @ cls_v.t() / 0.05, dim=0)).mean()
    return 1.0 * (loss_a + loss_v) + cfg.lambda_contra * nce


def test_tgdp_without_dual_pass_is_cavmae_sync() -> None:
    sync = _tiny("tiny_cavmae_sync")
    tg = _tiny(
        "tiny_tgdp",
        dual_pass=False,
        lambda_dis=0.0,
        masking="random",
        contrastive_symmetric=False,
        contrastive_gather=False,
    )
    assert tg.teacher is None
    tg.student.load_state_dict(sync.student.state_dict())
    audio, frames = _inputs(sync.cfg)
    torch.manual_seed(123)
    ref = _reference_sync_loss(sync, audio, frames)
    torch.manual_seed(123)
    out_sync = sync(audio, frames)
    torch.manual_seed(123)
    out_tg = tg(audio, frames)
    assert torch.allclose(out_sync["loss"], ref, atol=1e-5), (out_sync["loss"], ref)
    assert torch.equal(out_tg["loss"], out_sync["loss"])
    assert out_tg["dis_loss"].item() == 0.0


def test_contrastive_pass_keeps_teacher_topk_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny("tiny_tgdp")
    cfg = model.cfg
    audio, frames = _inputs(cfg)
    captured = {}
    real = model.student.forward_global

    def spy(a, f, ids_a=None, ids_v=None):
        captured["ids"] = (ids_a, ids_v)
        return real(a, f, ids_a, ids_v)

    monkeypatch.setattr(model.student, "forward_global", spy)
    with torch.no_grad():
        _, _, p_a, p_v = model.teacher(audio, frames, cfg.priority_direction)
        model(audio, frames)
    ids_a, ids_v = captured["ids"]
    ka, kv = int(cfg.num_patches_a * 0.5), int(cfg.num_patches_v * 0.5)
    assert ids_a.shape == (4, ka) and ids_v.shape == (4, kv)
    assert torch.equal(ids_a.sort(1).values, p_a.topk(ka, 1).indices.sort(1).values)
    assert torch.equal(ids_v.sort(1).values, p_v.topk(kv, 1).indices.sort(1).values)
    # the selected tokens are the embedded patches at those original positions
    emb = model.student.embed_a(audio)
    assert torch.equal(take_tokens(emb, ids_a)[:, 0], emb[torch.arange(4), ids_a[:, 0]])


def test_teacher_priority_original_order_and_shuffle_bug() -> None:
    model = _tiny("tiny_tgdp")
    audio, frames = _inputs(model.cfg)
    with torch.no_grad():
        t_a, _, p_a, p_v = model.teacher(audio, frames, "patch_to_global")
        _, _, q_a, _ = model.teacher(audio, frames, "global_to_patch")
    assert torch.allclose(p_a.sum(1), torch.ones(4)) and torch.allclose(q_a.sum(1), torch.ones(4))
    assert not torch.allclose(p_a, q_a)
    # teacher ĝ and its joint block match the student's unmasked encode (teacher = student at init)
    g_a, _ = model.encode(audio, frames)
    assert torch.allclose(t_a, g_a, atol=1e-5)
    # the priority belongs to the patch: a position-wise feature of the input, not of a shuffled sequence
    bug = _tiny("tiny_tgdp", teacher_shuffle_bug=True)
    bug.teacher.load_state_dict(model.teacher.state_dict())
    with torch.no_grad():
        _, _, b_a, _ = bug.teacher_outputs(audio, frames)
        _, _, c_a, _ = model.teacher_outputs(audio, frames)
    assert torch.allclose(c_a, p_a)
    assert torch.allclose(b_a.sort(1).values, p_a.sort(1).values) and not torch.allclose(b_a, p_a)


def test_contrastive_ratio_zero_sees_all_tokens() -> None:
    model = _tiny("tiny_tgdp", contrastive_mask_ratio=0.0, lambda_rec=0.0, lambda_contra=0.0)
    audio, frames = _inputs(model.cfg)
    out = model(audio, frames)
    # teacher == student at init and the student sees the full input: the distillation gap vanishes
    assert out["dis_loss"].item() < 1e-9


def test_teacher_gets_no_gradient_and_student_does() -> None:
    model = _tiny("tiny_tgdp", lambda_rec=0.0, lambda_contra=0.0, lambda_dis=1.0)
    audio, frames = _inputs(model.cfg)
    out = model(audio, frames)
    out["loss"].backward()
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    assert model.student.cls_token_a.grad is not None and model.student.cls_token_a.grad.abs().sum() > 0
    dec = model.student.decoder_pred_a.weight.grad  # only Ldis is weighted: the decoder gets no signal
    assert dec is None or not dec.any()


def test_ema_update_math_and_schedule() -> None:
    model = _tiny("tiny_tgdp", teacher_momentum=0.9, teacher_momentum_end=1.0, teacher_momentum_schedule="cosine")
    with torch.no_grad():
        for p in model.student.parameters():
            p.fill_(1.0)
        for p in model.teacher.parameters():
            p.fill_(3.0)
    assert model.update_teacher(0, 10) == pytest.approx(0.9)
    assert all(torch.allclose(p, torch.full_like(p, 0.9 * 3 + 0.1 * 1)) for p in model.teacher.parameters())
    assert model.update_teacher(5, 10) == pytest.approx(0.95)
    assert all(torch.allclose(p, torch.full_like(p, 0.95 * 2.8 + 0.05)) for p in model.teacher.parameters())
    before = [p.clone() for p in model.teacher.parameters()]
    assert model.update_teacher(10, 10) == pytest.approx(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.teacher.parameters(), strict=True))
    assert momentum_at(3, 10, 0.99, 1.0, "constant") == 0.99
    assert momentum_at(2, 10, 0.9, 1.0, "cosine") == pytest.approx(1.0 - 0.1 * (1 + math.cos(math.pi * 0.2)) / 2)
    assert _tiny("tiny_cavmae_sync").update_teacher(1, 10) is None


def test_teacher_state_matches_student_names_without_decoder() -> None:
    model = _tiny("tiny_tgdp")
    t_keys, s_keys = set(model.teacher.state_dict()), set(model.student.state_dict())
    assert t_keys < s_keys
    assert not any(k.startswith(("decoder", "mask_token", "norm.")) for k in t_keys)
    assert {"blocks_u.0.attn.qkv.weight", "norm_a.weight", "register_tokens", "cls_token_v"} <= t_keys


def test_grad_checkpointing_same_loss_and_grads() -> None:
    a = _tiny("tiny_tgdp")
    b = _tiny("tiny_tgdp")
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    audio, frames = _inputs(a.cfg)
    outs = []
    for m in (a, b):
        torch.manual_seed(7)
        out = m(audio, frames)
        out["loss"].backward()
        outs.append(out["loss"])
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    ga, gb = a.student.blocks_a[0].attn.qkv.weight.grad, b.student.blocks_a[0].attn.qkv.weight.grad
    assert torch.allclose(ga, gb, atol=1e-6)


def test_bf16_autocast_forward() -> None:
    model = _tiny("tiny_tgdp")
    audio, frames = _inputs(model.cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(audio, frames)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()


def test_no_weight_decay_and_flops() -> None:
    model = _tiny("tiny_tgdp")
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(names) and "student.cls_token_a" in model.no_weight_decay()
    f_tg = model.flops_per_step(8)
    f_sync = _tiny("tiny_cavmae_sync").flops_per_step(8)
    assert f_sync["teacher_fwd"] == 0 and f_tg["teacher_fwd"] > 0
    assert f_tg["total"] == pytest.approx(3 * f_tg["student_fwd"] + f_tg["teacher_fwd"])
    assert f_tg["total"] > f_sync["total"]


def test_build_model_by_name_and_unknown() -> None:
    assert isinstance(build_model("tiny_cavmae_sync"), TgdpModel)
    with pytest.raises(KeyError, match="presets"):
        build_model("nope")
