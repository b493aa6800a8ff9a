"""Representation health in every training run: figures in metrics.jsonl, a warning line on collapse."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.train.train_support import fake_open, tiny_config, write_fake_store
from tgdp.train.config import load_run_config
from tgdp.train.loop import fit

HEALTH = ("a_std", "v_std", "a_cos", "v_cos", "a_erank", "v_erank", "a_ts_cos", "v_ts_cos", "nce_ratio")


def test_every_logged_step_has_the_health_figures(tmp_path: Path) -> None:
    store = write_fake_store(tmp_path / "store", n=24)
    cfg = tiny_config("train.steps=4", "train.batch_size=8", "train.log_every=2")
    summary = fit(cfg, store, tmp_path / "run", store_opener=fake_open)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert all(k in r and math.isfinite(r[k]) for k in HEALTH), sorted(r)
        assert r["nce_ratio"] == r["contrastive_loss"] / math.log(8)
        assert -1.0 <= r["a_cos"] <= 1.0 and 1.0 <= r["a_erank"] <= 8.0
    assert summary.history[-1]["a_erank"] == rows[-1]["a_erank"]


def test_sync_runs_log_health_without_teacher_figures(tmp_path: Path) -> None:
    store = write_fake_store(tmp_path / "store", n=24)
    cfg = tiny_config("train.steps=2", "train.batch_size=4", preset="tiny_cavmae_sync")
    fit(cfg, store, tmp_path / "run", store_opener=fake_open)
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "a_cos" in last and "nce_ratio" in last and "a_ts_cos" not in last


def test_table5_preset_is_the_dual_pass_at_75_75_without_teacher() -> None:
    row = load_run_config("abl_dual_pass_75").model_cfg()
    base = load_run_config("cavmae_sync_base").model_cfg()
    assert row.dual_pass and row.contrastive_mask_ratio == 0.75 == row.mask_ratio_a == row.mask_ratio_v
    assert row.masking == "random" and row.lambda_dis == 0.0 and not row.use_teacher
    changed = {k for k, v in row.model_dump().items() if v != base.model_dump()[k]}
    assert changed == {"dual_pass", "contrastive_mask_ratio"}  # contrastive_mask_ratio: 0.5 → 0.75
    # compared rows share one contrastive direction (Eq. 4, V→A)
    for name in ("cavmae_sync_base", "abl_dual_pass_75", "tgdp_base", "abl_distill_off", "abl_ratio_0"):
        assert load_run_config(name).model_cfg().contrastive_symmetric is False, name


def test_legacy_preset_is_exactly_the_old_setting() -> None:
    old = load_run_config("tgdp_base_legacy").model_cfg()
    assert (old.lambda_dis, old.dis_reduction, old.dis_target) == (1.0, "mean", "raw")
    assert (old.teacher_momentum, old.teacher_momentum_end, old.teacher_momentum_schedule) == (0.996, 1.0, "cosine")
    assert old.contrastive_symmetric and old.contrastive_gather and old.masking == "distinct"
    new = load_run_config("tgdp_base").model_cfg()
    assert (new.dis_reduction, new.dis_target) == ("sum", "l2norm") and new.lambda_dis < new.lambda_contra * 10


def test_exclude_no_decay_puts_the_models_tokens_in_a_zero_decay_group() -> None:
    from tgdp.model import build_model
    from tgdp.train.optim import build_optimizer

    model = build_model("tiny_tgdp")
    params = [p for p in model.parameters() if p.requires_grad]
    names = model.no_weight_decay()
    tokens = [p for n, p in model.named_parameters() if n in names and p.requires_grad]
    assert tokens and "student.cls_token_a" in names
    released = build_optimizer(params, load_run_config("tiny_tgdp").optim, tokens)
    assert len(released.param_groups) == 1  # the recipe: decay on everything
    cfg = load_run_config("tiny_tgdp", ["optim.exclude_no_decay=true"]).optim
    opt = build_optimizer(params, cfg, tokens)
    decay, skip = opt.param_groups
    assert decay["weight_decay"] == cfg.weight_decay > 0 and skip["weight_decay"] == 0.0
    assert {id(p) for p in skip["params"]} == {id(p) for p in tokens}
    assert len(decay["params"]) + len(skip["params"]) == len(params)
