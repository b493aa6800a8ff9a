"""RunConfig: presets, strict validation with key-naming errors, derived values, LR schedule, saved config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from tgdp.config import ConfigError
from tgdp.train.config import list_presets, load_run_config, save_run_config
from tgdp.train.optim import lr_at

ABLATIONS = {
    "abl_dual_pass_off": {"dual_pass": False},
    "abl_ratio_0": {"contrastive_mask_ratio": 0.0},
    "abl_ratio_0.2": {"contrastive_mask_ratio": 0.2},
    "abl_ratio_0.5": {"contrastive_mask_ratio": 0.5},
    "abl_ratio_0.65": {"contrastive_mask_ratio": 0.65},
    "abl_ratio_0.75": {"contrastive_mask_ratio": 0.75},
    "abl_distill_off": {"lambda_dis": 0.0},
    "abl_mask_random": {"masking": "random"},
    "abl_mask_distinct": {"masking": "distinct"},
    "abl_mask_probabilistic": {"masking": "probabilistic"},
}


def test_presets_load_and_ablations_differ_from_tgdp_base_only_as_named() -> None:
    names = set(list_presets())
    assert {"cavmae_sync_base", "tgdp_base", "tiny_cavmae_sync", "tiny_tgdp", *ABLATIONS} <= names
    base = load_run_config("tgdp_base")
    base_model = base.model_cfg().model_dump()
    assert base.optim.name == "adam" and base.optim.betas == (0.95, 0.999) and base.optim.weight_decay == 5e-7
    for name, expected in ABLATIONS.items():
        cfg = load_run_config(name)
        model = cfg.model_cfg().model_dump()
        changed = {k for k in model if model[k] != base_model[k]}
        assert {k: model[k] for k in expected} == expected, name
        assert changed <= set(expected) | {"masking", "lambda_dis"}, (name, changed)
        assert cfg.optim == base.optim and cfg.train == base.train
    # A tiny variant of any ablation is one override.
    tiny = load_run_config("abl_ratio_0.2", ["model_preset=tiny_tgdp"]).model_cfg()
    assert tiny.embed_dim == 64 and tiny.contrastive_mask_ratio == 0.2


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("trian.steps=3", "unknown key 'trian'"),
        ("train.bogus=1", "unknown key 'train.bogus'"),
        ("model.bogus=1", "unknown key 'model.bogus'"),
        ("optim.lr=-1e-4", "optim.lr"),
        ("optim.lr=0", "optim.lr"),
        ("train.batch_size=eight", "train.batch_size"),
        ("model.mask_ratio_v=1.0", "model.mask_ratio_v"),
        ("model.contrastive_mask_ratio=1.5", "model.contrastive_mask_ratio"),
        ("model_preset=huge", "model_preset 'huge' is unknown"),
        ("optim.betas=[0.9,1.5]", "betas"),
        ("train.precision=fp8", "train.precision"),
    ],
)
def test_bad_config_errors_name_the_key(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match.replace("[", r"\[").replace(".", r"\.")):
        load_run_config("tiny_tgdp", [override])


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ConfigError, match="tiny_tgdp"):
        load_run_config("no_such_preset")


def test_resolve_derived_values() -> None:
    cfg = load_run_config("tiny_tgdp", ["train.steps=null", "train.epochs=2", "train.batch_size=8", "train.accum=2"])
    r = cfg.resolve(num_clips=50, world_size=2)
    assert r.micro_batch == 2 and r.batch_size == 8
    assert r.batches_per_epoch == 12 and r.steps_per_epoch == 6 and r.total_steps == 12
    assert r.warmup_steps == 1
    steps = load_run_config("tiny_tgdp", ["train.steps=7", "train.epochs=3"]).resolve(100)
    assert steps.total_steps == 7  # steps wins over epochs
    with pytest.raises(ConfigError, match="not divisible"):
        load_run_config("tiny_tgdp", ["train.batch_size=6", "train.accum=4"]).resolve(100)
    with pytest.raises(ConfigError, match="too few"):
        load_run_config("tiny_tgdp", ["train.batch_size=16"]).resolve(10)
    with pytest.raises(ConfigError, match="train.steps or train.epochs"):
        load_run_config("tiny_tgdp", ["train.steps=null"])


def test_lr_schedule_warmup_cosine_floor() -> None:
    total, warm, lr = 100, 10, 1e-3
    values = [lr_at(s, total, warm, lr, 0.1) for s in range(total)]
    assert values[0] == pytest.approx(lr / 10) and values[9] == pytest.approx(lr)
    assert all(a <= b for a, b in zip(values[:10], values[1:10], strict=False))
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))
    assert values[55] == pytest.approx(0.1 * lr + 0.9 * lr * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lr_at(total, total, warm, lr, 0.1) == pytest.approx(0.1 * lr)
    assert lr_at(0, 10, 0, lr, 0.1) == pytest.approx(lr)


def test_saved_config_reloads_to_the_same_run(tmp_path: Path) -> None:
    cfg = load_run_config("tiny_tgdp", ["model.lambda_dis=0.5", "optim.lr=3e-4"])
    path = tmp_path / "config.yaml"
    text = save_run_config(cfg, path, cfg.resolve(64))
    assert text.startswith("# derived world_size: 1")
    data = yaml.safe_load(path.read_text())
    assert data["model"]["embed_dim"] == 64 and data["model"]["lambda_dis"] == 0.5  # model section fully resolved
    again = load_run_config(path)
    assert again.model_cfg() == cfg.model_cfg() and again.optim == cfg.optim and again.train == cfg.train
