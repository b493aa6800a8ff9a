"""Gradient shares: per-term gradient norms on the shared encoder match a naive computation on cloned models, and
measuring them leaves training unchanged (same losses, same weights, same RNG)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from tests.train.test_train_step import CPU, _batches, _params, _state
from tests.train.train_support import fake_open, tiny_config, write_fake_store
from tgdp.model import build_model
from tgdp.model.health import GRAD_TERMS, encoder_parameters, term_grad_norms
from tgdp.train.loop import fit
from tgdp.train.step import train_step


def _naive_norm(model: torch.nn.Module, term: str, audio: torch.Tensor, frames: torch.Tensor, seed: int) -> float:
    """A clone, the same masks (same seed), one backward of that weighted term alone into .grad."""
    clone = copy.deepcopy(model)
    clone.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    cfg = clone.cfg
    out = clone(audio, frames, with_terms=True)
    weight = {"rec": cfg.lambda_rec, "contra": cfg.lambda_contra, "dis": cfg.lambda_dis}[term]
    raw = {"rec": "rec_loss", "contra": "contrastive_loss", "dis": "dis_loss"}[term]
    assert float(out[f"term_{term}"].detach()) == pytest.approx(weight * float(out[raw]), rel=1e-6)
    if weight == 0:
        return 0.0
    out[f"term_{term}"].backward()
    sq = sum(float(p.grad.pow(2).sum()) for p in encoder_parameters(clone.student) if p.grad is not None)
    return math.sqrt(sq)


@pytest.mark.parametrize("preset", ["tiny_tgdp", "tiny_cavmae_sync"])
def test_grad_shares_match_separate_backward_passes_on_clones(preset: str) -> None:
    cfg = tiny_config("model.lambda_dis=0.1" if preset == "tiny_tgdp" else "train.seed=0", preset=preset)
    torch.manual_seed(0)
    model = build_model(cfg.model_cfg())
    g = torch.Generator().manual_seed(3)
    audio, frames = torch.randn(4, 128, 64, generator=g), torch.randn(4, 3, 96, 96, generator=g)
    torch.manual_seed(7)
    out = model(audio, frames, with_terms=True)
    figures = term_grad_norms(
        {k: v for k, v in out.items() if k.startswith("term_")}, encoder_parameters(model.student)
    )
    naive = {t: _naive_norm(model, t, audio, frames, seed=7) for t in GRAD_TERMS}
    for t in GRAD_TERMS:
        assert figures[f"gnorm_{t}"] == pytest.approx(naive[t], rel=1e-4, abs=1e-12), t
    total = sum(naive.values())
    for t in GRAD_TERMS:
        assert figures[f"gshare_{t}"] == pytest.approx(naive[t] / total, rel=1e-4), t
    assert naive["rec"] > 0 and naive["contra"] > 0
    assert (naive["dis"] > 0) == (preset == "tiny_tgdp")  # Sync has no teacher: no distillation gradient
    assert all(p.grad is None for p in model.parameters())  # measuring touched no .grad


def test_scale_only_guards_precision() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config().model_cfg())
    g = torch.Generator().manual_seed(3)
    audio, frames = torch.randn(4, 128, 64, generator=g), torch.randn(4, 3, 96, 96, generator=g)
    torch.manual_seed(1)
    terms = {k: v for k, v in model(audio, frames, with_terms=True).items() if k.startswith("term_")}
    params = encoder_parameters(model.student)
    a, b = term_grad_norms(terms, params), term_grad_norms(terms, params, scale=1024.0)
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5)


def test_train_step_with_grad_shares_leaves_the_step_unchanged() -> None:
    (s1, p1), (s2, p2) = _state(), _state()
    for _ in range(2):
        a = train_step(s1, _batches(), p1, with_globals=True)
        rng_a = torch.get_rng_state()
        b = train_step(s2, _batches(), p2, with_globals=True, grad_shares=True)
        assert torch.equal(torch.get_rng_state(), rng_a)  # no extra draws
        assert a.losses == b.losses and not a.grads
        assert set(b.grads) == {f"g{k}_{t}" for k in ("norm", "share") for t in GRAD_TERMS}
        assert sum(b.grads[f"gshare_{t}"] for t in GRAD_TERMS) == pytest.approx(1.0)
        assert {f"gnorm_{t}" for t in GRAD_TERMS} <= set(b.row())
    w1, w2 = _params(s1.model), _params(s2.model)
    assert all(torch.equal(w1[n], w2[n]) for n in w1)  # student and EMA teacher bit-identical
    assert CPU.world_size == 1


def test_fit_history_is_the_same_with_and_without_grad_shares(tmp_path) -> None:
    store = write_fake_store(tmp_path / "store", n=16)
    runs = {}
    for flag in ("true", "false"):
        cfg = tiny_config("train.steps=3", "train.log_every=2", f"train.grad_shares={flag}")
        losses: list[dict[str, float]] = []
        summary = fit(
            cfg, store, tmp_path / flag, store_opener=fake_open, on_step=lambda s, row, out=losses: out.append(row)
        )
        runs[flag] = (losses, summary)
    on, off = runs["true"][0], runs["false"][0]
    keys = ("loss", "rec_loss", "contrastive_loss", "dis_loss", "lr")
    assert [[r[k] for k in keys] for r in on] == [[r[k] for k in keys] for r in off]  # every step, bit for bit
    logged = [json.loads(line) for line in (tmp_path / "true" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [2, 3]
    assert all(r["gnorm_contra"] > 0 and 0 < r["gshare_rec"] < 1 for r in logged)
    assert all("a_ts_cos" in r and "v_ts_cos" in r for r in logged)
    assert not any("gnorm_rec" in r for r in runs["false"][1].history)
