"""The reproduction study's rows, budget and settings: which run config each row trains, and the digest that names
its cached runs (`fingerprint`: rows whose resolved run config is equal share their runs)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from tgdp.config import ConfigError, StrictConfig
from tgdp.experiments.reproduce.store import Corpus
from tgdp.train.config import load_run_config

__all__ = [
    "BASELINE",
    "CONFIGS",
    "CONTROL",
    "EVAL_PROTOCOL",
    "FIRST",
    "PAPER_TABLES",
    "REFERENCE",
    "SHORT_CONFIGS",
    "TABLES",
    "V3_PINS",
    "Budget",
    "ConfigSpec",
    "ReproduceConfig",
    "Study",
    "fingerprint",
    "make_study",
    "run_overrides",
]


@dataclass(frozen=True)
class ConfigSpec:
    """One row: a train preset plus overrides; `tables` names the result tables the row appears in.

    At tiny scale `tiny_preset` replaces `preset` (the base recipe's tiny twin); otherwise `tiny_model` is set as
    the model preset (an ablation of tgdp_base runs on tiny_tgdp, one of cavmae_sync_base on tiny_cavmae_sync)."""

    preset: str
    label: str
    tables: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    tiny_preset: str | None = None
    tiny_model: str = "tiny_tgdp"
    trained: bool = True


CONFIGS: dict[str, ConfigSpec] = {
    "random_init": ConfigSpec(
        "tgdp_base", "untrained control (TG-DP model, random init)", ("main",), (), "tiny_tgdp", trained=False
    ),
    "cavmae_sync": ConfigSpec("cavmae_sync_base", "CAV-MAE Sync", ("main", "t5"), (), "tiny_cavmae_sync"),
    "tgdp": ConfigSpec("tgdp_base", "TG-DP (issue-13 defaults)", ("main",), (), "tiny_tgdp"),
    "tgdp_legacy": ConfigSpec(
        "tgdp_base_legacy",
        "TG-DP legacy (λ_dis : λ_contra 100 : 1, mean MSE, EMA 0.996→1)",
        ("main",),
        (),
        "tiny_tgdp_legacy",
    ),
    "dual_pass_75": ConfigSpec(
        "abl_dual_pass_75", "w/ dual pass (75/75 random, no teacher)", ("t5",), tiny_model="tiny_cavmae_sync"
    ),
    "ratio_0": ConfigSpec("abl_ratio_0", "ρ_c 0", ("t6",)),
    "ratio_0.2": ConfigSpec("abl_ratio_0.2", "ρ_c 0.2", ("t6",)),
    "ratio_0.5": ConfigSpec("abl_ratio_0.5", "ρ_c 0.5 (= TG-DP)", ("t6",)),
    "ratio_0.65": ConfigSpec("abl_ratio_0.65", "ρ_c 0.65", ("t6",)),
    "ratio_0.75": ConfigSpec("abl_ratio_0.75", "ρ_c 0.75", ("t6",)),
    "distill_off": ConfigSpec("abl_distill_off", "w/o L_dis (teacher still selects)", ("t7",)),
    "distill_on": ConfigSpec("tgdp_base", "w/ L_dis (= TG-DP)", ("t7",), (), "tiny_tgdp"),
    "mask_random": ConfigSpec("abl_mask_random", "Random Mask", ("t8",)),
    "mask_distinct": ConfigSpec("abl_mask_distinct", "Distinct Guided Mask (= TG-DP)", ("t8",)),
    "mask_probabilistic": ConfigSpec("abl_mask_probabilistic", "Probabilistic Guided Mask (Gumbel, τ 1)", ("t8",)),
}
SHORT_CONFIGS = ("random_init", "cavmae_sync", "tgdp")
REFERENCE = "tgdp"  # paired deltas are taken against this row
BASELINE = "cavmae_sync"  # the gate is evaluated on this row
CONTROL = "random_init"
TABLES = {
    "main": "CAV-MAE Sync vs TG-DP",
    "t5": "Table 5 — dual pass",
    "t6": "Table 6 — contrastive-pass mask ratio ρ_c",
    "t7": "Table 7 — distillation",
    "t8": "Table 8 — token selection",
}
# The paper's numbers (ViT-B, AudioSet-2M pretraining; Tables 5–8 report VGGSound retrieval R@1/5/10 V→A and A→V,
# and AS20K mAP). Key: our row → (paper table, paper row, [V→A R@1, R@5, R@10, A→V R@1, R@5, R@10, AS20K mAP]).
PAPER_TABLES: dict[str, tuple[str, str, tuple[float, ...]]] = {
    "cavmae_sync": ("5", "w/o (= CAV-MAE Sync)", (27.9, 51.7, 61.8, 23.2, 46.2, 58.1, 30.5)),
    "dual_pass_75": ("5", "w/", (27.1, 51.8, 61.2, 27.4, 50.7, 60.1, 30.4)),
    "ratio_0": ("6", "0.00", (30.4, 56.0, 64.2, 29.8, 55.6, 64.5, 29.6)),
    "ratio_0.2": ("6", "0.20", (32.5, 55.7, 64.1, 31.7, 54.5, 64.8, 30.4)),
    "ratio_0.5": ("6", "0.50", (31.3, 54.4, 63.9, 30.3, 53.1, 64.3, 32.0)),
    "ratio_0.65": ("6", "0.65", (26.4, 48.1, 57.0, 25.1, 47.0, 58.4, 30.5)),
    "ratio_0.75": ("6", "0.75", (27.1, 50.4, 60.1, 26.2, 49.4, 60.8, 30.7)),
    "distill_off": ("7", "w/o", (29.5, 54.7, 63.9, 29.1, 53.1, 63.5, 30.5)),
    "distill_on": ("7", "w/", (31.3, 54.4, 63.9, 30.3, 53.1, 64.3, 32.0)),
    "mask_random": ("8", "Random Mask", (31.2, 54.3, 64.8, 30.3, 54.5, 65.7, 30.2)),
    "mask_distinct": ("8", "Distinct Guided Mask", (31.3, 54.4, 63.9, 30.3, 53.1, 64.3, 32.0)),
    "mask_probabilistic": ("8", "Probabilistic Guided Mask", (29.6, 56.1, 65.4, 30.5, 54.9, 65.0, 29.8)),
    "tgdp": ("1", "Ours (VGGSound)", (31.3, 54.4, 63.9, 30.3, 53.1, 64.2, 32.0)),
}


@dataclass(frozen=True)
class Budget:
    """The per-run compute budget, identical for every config."""

    # chosen on the baseline (tiny Sync, seed 0) before any other row ran: see REPRODUCTION.md, "Budget"
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    lambda_contra: float | None = 0.1  # None: the presets' (0.01)
    probe_epochs: int = 25
    probe_lr: float = 1e-3
    linear_epochs: int = 50
    linear_lr: float = 1e-2
    probe_max_train: int = 20000
    eval_frame_stride: int = 2  # embed every 2nd of the clip's frames (8 of 16): half the evaluation cost


@dataclass
class Study:
    out: Path
    store: Path | None
    configs: list[str]
    seeds: list[int]
    corpus: Corpus = field(default_factory=Corpus)
    budget: Budget = field(default_factory=Budget)
    scale: str = "tiny"
    sets: list[str] = field(default_factory=list)
    jobs: int = 1
    threads: int = 1
    report_only: bool = False  # aggregate the cached results; train and evaluate nothing
    specs: dict[str, ConfigSpec] = field(default_factory=lambda: dict(CONFIGS))  # the rows this study can run
    pins: tuple[str, ...] = ()  # overrides every row gets before the rows' own (a study's fixed settings)
    claims: bool = True  # the paper's claims (report.CLAIMS) get verdicts; a pre-registered design has its own rule


# the evaluation's version: bump it when a metric's definition changes, so cached results are not mixed
EVAL_PROTOCOL = 3  # 3: the instance-latent probe

# v1–v3 ran with the teacher's reference run length at 25 epochs (67,890 steps). The default is now the paper's
# 35 epochs (Table 4; docs/MODEL.md, "Teacher schedule"); `make reproduce` pins the old value so it still runs v3
# exactly (same run configs, same fingerprints, same numbers).
V3_PINS = ("model.teacher_momentum_ref_steps=67890",)

FIRST = (CONTROL, BASELINE, REFERENCE)  # the gate's rows and TG-DP run every seed before any ablation


def run_overrides(study: Study, name: str, seed: int) -> tuple[str, list[str]]:
    """(preset, overrides) of one (config, seed); every config gets the same loop settings (the fixed budget)."""
    spec = study.specs[name]
    b = study.budget
    preset, overrides = spec.preset, [*study.pins, *spec.overrides]
    if study.scale == "tiny":
        if spec.tiny_preset:
            preset = spec.tiny_preset
        else:
            overrides.append(f"model_preset={spec.tiny_model}")
    loop = [
        "train.epochs=null",
        f"train.steps={max(b.steps, 1)}",
        f"train.batch_size={b.batch_size}",
        f"optim.lr={b.lr}",
        f"train.seed={seed}",
        "train.num_workers=0",
        f"train.log_every={max(1, b.steps // 20)}",
        f"train.ckpt_every={max(50, b.steps // 2)}",
        "train.keep_last=1",
        "train.progress=false",
        "train.tensorboard=false",
    ]
    if b.lambda_contra is not None:
        # the budget's λ_contra for every row; a row with distillation keeps its preset's λ_dis : λ_contra ratio,
        # so "distillation stays auxiliary" means the same at any contrastive weight
        m = load_run_config(preset, overrides).model_cfg()
        loop.append(f"model.lambda_contra={b.lambda_contra}")
        if m.lambda_dis > 0:
            loop.append(f"model.lambda_dis={m.lambda_dis * b.lambda_contra / m.lambda_contra:.6g}")
    # the row's own overrides first: the budget's loop settings and λ scaling win over them
    return preset, overrides + loop + list(study.sets)


def fingerprint(study: Study, name: str) -> str:
    """Digest of the resolved run config without the seed: equal digests are the same experiment."""
    preset, overrides = run_overrides(study, name, seed=0)
    cfg = load_run_config(preset, overrides)
    body = cfg.model_dump(mode="json", exclude={"model", "model_preset"})
    body["model"] = cfg.model_cfg().model_dump(mode="json")
    body["trained"] = study.specs[name].trained
    b = study.budget
    body["eval"] = [EVAL_PROTOCOL, b.eval_frame_stride, b.probe_epochs, b.probe_lr, b.linear_epochs, b.linear_lr]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]


class ReproduceConfig(StrictConfig):
    """The `reproduce` command's settings (`--config FILE`, `--set key=value`); None keeps the budget's or corpus's
    default (with `--short`, the CI-sized ones)."""

    seeds: list[int] | None = Field(None, description="training seeds, e.g. [0, 1] or 0,1 (None: 0..4; short: 0)")
    steps: int | None = Field(None, ge=0, description="optimiser steps per run, the same for every row")
    batch_size: int | None = Field(None, gt=0, description="global training batch (None: the budget's)")
    lr: float | None = Field(None, gt=0, description="peak learning rate (None: the budget's)")
    lambda_contra: float | None = Field(None, ge=0, description="λ_contra for every row (None: the budget's)")
    configs: list[str] | None = Field(
        None, description="rows to run, e.g. [tgdp, cavmae_sync] or tgdp,cavmae_sync (None: all; short: 3)"
    )
    num_clips: int | None = Field(None, gt=0, description="clips of the synthetic corpus")
    num_classes: int | None = Field(None, gt=0, description="classes of the synthetic corpus")
    difficulty: float | None = Field(None, ge=0, le=1, description="corpus difficulty 0-1 (synth.difficulty)")
    probe_epochs: int | None = Field(None, gt=0, description="attention-probe training epochs")
    scale: Literal["tiny", "base"] = Field("tiny", description="tiny presets or the ViT-B ones")
    overrides: list[str] = Field(
        [], description="run-config overrides applied to every run, e.g. [model.num_mel_bins=128]"
    )

    @field_validator("seeds", "configs", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        # `--set seeds=0,1` reads as the string "0,1" and `--set seeds=3` as the int 3: both mean a list
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return [v] if isinstance(v, int) else v


def make_study(
    out: Path,
    cfg: ReproduceConfig | None = None,
    short: bool = False,
    store: Path | None = None,
    jobs: int = 2,
    threads: int = 1,
    report: bool = False,
) -> Study:
    """The study `cfg` describes (None: the defaults; `short`: the CI-sized defaults), with the run-level choices:
    output directory, a prebuilt store, parallel jobs and threads, and report-only. An unknown row is a ConfigError."""
    cfg = cfg if cfg is not None else ReproduceConfig()
    corpus, budget = Corpus(), Budget()
    if short:
        corpus = Corpus(num_clips=40, num_classes=4)
        budget = replace(budget, steps=4, batch_size=8, probe_epochs=2, linear_epochs=2)
    corpus = replace(
        corpus,
        num_clips=cfg.num_clips or corpus.num_clips,
        num_classes=cfg.num_classes or corpus.num_classes,
        difficulty=corpus.difficulty if cfg.difficulty is None else cfg.difficulty,
    )
    budget = replace(
        budget,
        steps=budget.steps if cfg.steps is None else cfg.steps,
        batch_size=cfg.batch_size or budget.batch_size,
        lr=cfg.lr or budget.lr,
        lambda_contra=budget.lambda_contra if cfg.lambda_contra is None else cfg.lambda_contra,
        probe_epochs=cfg.probe_epochs or budget.probe_epochs,
    )
    names = list(cfg.configs) if cfg.configs else list(SHORT_CONFIGS if short else CONFIGS)
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        raise ConfigError(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    seed_list = list(cfg.seeds) if cfg.seeds else ([0] if short else [0, 1, 2, 3, 4])
    return Study(
        out=Path(out),
        store=store,
        configs=names,
        seeds=seed_list,
        corpus=corpus,
        budget=budget,
        scale=cfg.scale,
        sets=list(cfg.overrides),
        jobs=jobs,
        threads=threads,
        report_only=report,
        pins=V3_PINS,
    )
