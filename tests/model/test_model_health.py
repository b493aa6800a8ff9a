"""Representation-health figures against naive computations, the collapse rules, Eq. 6 and the teacher schedule."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tgdp.model.health import collapse_warnings, effective_rank, health_metrics, pairwise_cosine
from tgdp.model.losses import distillation_loss
from tgdp.model.presets import PRESETS
from tgdp.model.tgdp import build_model, momentum_at


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_health_figures_match_naive_loops() -> None:
    rng = np.random.default_rng(0)
    g_a, g_v = rng.normal(size=(9, 5)), rng.normal(size=(9, 5)) + 2.0
    t_a = g_a + 0.3 * rng.normal(size=g_a.shape)
    h = health_metrics(torch.tensor(g_a), torch.tensor(g_v), torch.tensor(t_a), None, nce=1.5, batch=9)
    for m, g in (("a", g_a), ("v", g_v)):
        u = _unit(g)
        stds = [math.sqrt(sum((u[i, d] - u[:, d].mean()) ** 2 for i in range(9)) / 9) for d in range(5)]
        assert h[f"{m}_std"] == pytest.approx(sum(stds) / 5, rel=1e-5)
        assert h[f"{m}_std_iso"] == pytest.approx(sum(stds) / 5 * math.sqrt(5), rel=1e-5)
        cos = [float(u[i] @ u[j]) for i, j in itertools.permutations(range(9), 2)]
        assert h[f"{m}_cos"] == pytest.approx(sum(cos) / len(cos), rel=1e-5, abs=1e-7)
        s = np.linalg.svd(u, compute_uv=False)
        p = s / s.sum()
        assert h[f"{m}_erank"] == pytest.approx(math.exp(-sum(x * math.log(x) for x in p)), rel=1e-5)
    ts = [float(_unit(g_a)[i] @ _unit(t_a)[i]) for i in range(9)]
    assert h["a_ts_cos"] == pytest.approx(sum(ts) / 9, rel=1e-5)
    assert "v_ts_cos" not in h
    assert h["nce_ratio"] == pytest.approx(1.5 / math.log(9))


def test_effective_rank_and_cosine_extremes() -> None:
    eye = torch.eye(6)
    assert effective_rank(eye) == pytest.approx(6.0, rel=1e-6)
    assert pairwise_cosine(eye) == pytest.approx(0.0, abs=1e-7)
    same = torch.ones(6, 4)
    assert effective_rank(same) == pytest.approx(1.0, rel=1e-6)
    assert pairwise_cosine(same) == pytest.approx(1.0, rel=1e-6)


def test_constant_encoder_trips_every_collapse_rule_and_a_healthy_one_none() -> None:
    const = torch.randn(1, 32).expand(16, 32) + 1e-4 * torch.randn(16, 32)  # output does not depend on the input
    healthy = torch.randn(16, 32)
    fired = collapse_warnings(health_metrics(const, healthy))
    assert {w.split("=")[0] for w in fired} == {"audio a_cos", "audio a_std_iso", "audio a_erank"}
    assert collapse_warnings(health_metrics(healthy, torch.randn(16, 32))) == []


def test_constant_encoder_is_flagged_by_the_training_loop_health_path() -> None:
    """A real tiny model whose audio global token is forced constant: the figures the loop logs fire the rule."""
    torch.manual_seed(0)
    model = build_model(PRESETS["tiny_tgdp"])
    with torch.no_grad():  # zero the final norm's gain: every audio global token equals the norm's bias
        model.student.norm_a.weight.zero_()
        model.student.norm_a.bias.copy_(torch.randn(model.cfg.embed_dim))
    audio = torch.randn(8, model.cfg.audio_length, model.cfg.num_mel_bins)
    frames = torch.randn(8, 3, model.cfg.img_size, model.cfg.img_size)
    out = model(audio, frames, with_globals=True)
    assert {"g_a", "g_v", "t_a", "t_v"} <= set(out)
    fired = collapse_warnings(health_metrics(out["g_a"], out["g_v"]))
    assert any(w.startswith("audio a_cos") for w in fired)
    assert not any(w.startswith("visual") for w in fired)


def test_eq6_sum_reduction_on_a_hand_made_example() -> None:
    g_v = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    t_v = torch.tensor([[0.0, 2.0, 2.0], [1.0, 1.0, 1.0]])
    g_a = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0]])
    t_a = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # Eq. 6 per sample, ‖g_v − ĝ_v‖² + ‖g_a − ĝ_a‖²: sample 0 = (1 + 0 + 4) + 0, sample 1 = (1 + 1 + 4) + 1
    assert distillation_loss(g_a, g_v, t_a, t_v, "sum", "raw").item() == pytest.approx((5 + 7) / 2)
    assert distillation_loss(g_a, g_v, t_a, t_v, "mean", "raw").item() == pytest.approx((5 + 7) / 2 / 3)
    # l2norm: 2 − 2cos per sample and modality; the audio pairs are parallel (cos 1)
    cos_v = [4 / math.sqrt(5 * 8), 3 / (3 * math.sqrt(3))]
    want = sum(2 - 2 * c for c in cos_v) / 2
    assert distillation_loss(g_a, g_v, t_a, t_v, "sum", "l2norm").item() == pytest.approx(want, rel=1e-6)
    assert distillation_loss(g_a, g_v, t_a, t_v, "mean", "l2norm").item() == pytest.approx(want / 3, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        distillation_loss(g_a, g_v, t_a, t_v, "max", "raw")


def test_relative_momentum_gives_every_run_length_the_same_teacher_lag() -> None:
    ref, base = 68_000, 0.996
    for total in (300, 1_500, 68_000):
        m0 = momentum_at(0, total, base, 1.0, "relative_cosine", ref)
        assert (1 - m0) * total == pytest.approx((1 - base) * ref)  # time constant / run length is constant
        update = sum(1 - momentum_at(s, total, base, 1.0, "relative_cosine", ref) for s in range(total))
        assert update == pytest.approx((1 - base) * ref / 2, rel=0.01)  # Σ(1−m) ≈ (1 − m0)·T/2
        assert momentum_at(total, total, base, 1.0, "relative_cosine", ref) == pytest.approx(1.0)
    assert momentum_at(0, 100, base, 1.0, "relative_cosine", ref) == 0.0  # clamped: the teacher follows the student
    # the absolute schedule leaves a short run's teacher mostly at its initial weights
    short = sum(1 - momentum_at(s, 300, base, 1.0, "cosine") for s in range(300))
    assert short == pytest.approx(0.6, rel=0.01)
