"""Held-out health: chunked InfoNCE against a naive loop, teacher loading, a constant encoder at chance and flagged."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.eval.test_eval_embed import FakeStore
from tgdp.eval.embed import load_teacher_state
from tgdp.eval.health import heldout_grad_shares, heldout_infonce, store_health


def test_heldout_infonce_matches_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    a, v = torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)
    loss, chunk = heldout_infonce(a, v, 4, 0.1, symmetric=False)
    assert chunk == 4
    naive = []
    for s in (0, 4):  # rows 8-9 are the dropped remainder
        an = [x / x.norm() for x in a[s : s + 4]]
        vn = [x / x.norm() for x in v[s : s + 4]]
        for i in range(4):  # V→A: video i against every audio of its chunk
            logits = [float(vn[i] @ an[j]) / 0.1 for j in range(4)]
            naive.append(-(logits[i] - math.log(sum(math.exp(x) for x in logits))))
    assert loss == pytest.approx(sum(naive) / len(naive), rel=1e-5)
    assert heldout_infonce(a[:3], v[:3], 64, 0.1, False)[1] == 3  # fewer clips than B: one chunk of all


class ConstantEncoder(nn.Module):
    """Global tokens that ignore the input: the collapsed model."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg, self.teacher = cfg, None
        self.g = torch.randn(1, 16)

    def encode(self, audio: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = audio.shape[0]
        return self.g.expand(b, -1), torch.randn(b, 16)


def test_constant_encoder_is_at_chance_and_flagged() -> None:
    from tgdp.model import PRESETS

    cfg = PRESETS["tiny_cavmae_sync"]
    res = store_health(ConstantEncoder(cfg), FakeStore(n=6), batch_size=6)
    assert res["heldout_nce"] == pytest.approx(math.log(6), rel=1e-5)  # every audio scores the same
    assert res["nce_ratio"] == pytest.approx(1.0, rel=1e-5) and res["clips"] == 6
    assert any(w.startswith("audio a_cos") for w in res["collapse_warnings"])
    assert not any(w.startswith("visual") for w in res["collapse_warnings"])


def test_tiny_tgdp_checkpoint_with_teacher(tmp_path) -> None:
    from tgdp.model import build_model

    torch.manual_seed(0)
    model = build_model("tiny_tgdp")
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": model.student.state_dict(), "teacher": model.teacher.state_dict()}, ckpt)
    fresh = build_model("tiny_tgdp")
    assert load_teacher_state(fresh, torch.load(ckpt, map_location="cpu", weights_only=True))
    for name, t in model.teacher.state_dict().items():
        torch.testing.assert_close(fresh.teacher.state_dict()[name], t)
    fresh.student.load_state_dict(model.student.state_dict())
    res = store_health(fresh, FakeStore(n=5), batch_size=4, with_teacher=True, grad_shares=True)
    assert all(p.grad is None for p in fresh.parameters())
    audio, frames = torch.randn(4, 128, 64), torch.randn(4, 3, 96, 96)
    rng = torch.get_rng_state()
    once = heldout_grad_shares(fresh, audio, frames, seed=3)
    assert torch.equal(torch.get_rng_state(), rng) and heldout_grad_shares(fresh, audio, frames, seed=3) == once
    assert res["nce_batch"] == 4 and 0 < res["a_ts_cos"] < 1 and 0 < res["v_ts_cos"] < 1
    # the held-out gradient shares are term_grad_norms of the first chunk of 4 clips
    assert sum(res[f"gshare_{t}"] for t in ("rec", "contra", "dis")) == pytest.approx(1.0)
    assert res["gnorm_dis"] > 0 and res["gnorm_contra"] > 0 and res["gnorm_rec"] > 0
    assert "gnorm_rec" not in store_health(fresh, FakeStore(n=5), batch_size=4)
    assert res["contrastive"] == "v2a"
    with pytest.raises(ValueError, match="frame_index"):
        store_health(fresh, FakeStore(n=5), frame_index=16)
