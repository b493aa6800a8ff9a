"""Controlled reproduction of the TG-DP claims: CAV-MAE Sync vs TG-DP and the ablations of Tables 5–8.

Every row trains with the same budget (steps × batch, lr, λ_contra), over 5 seeds, then is evaluated on the
held-out `eval` split:
- held-out InfoNCE (V→A, Eq. 4, and A→V) over chunks of B clips, against ln(B);
- zero-shot retrieval R@1/5/10 both directions, instance level (`diagonal_mean`, the clip's own pair) and class
  level (any clip of the query's class);
- standardised linear probes (mean token → BatchNorm without affine → Linear) on audio only, vision only and both;
- the paper's attention probe on `[g_v, g_a]`;
- the health figures of the global tokens (`tgdp.model.health`).
An untrained TG-DP model is the control. A gate (`gate`) decides whether the baseline learnt anything before any
comparison is read; paired (same seed) deltas against TG-DP carry 95 % t-intervals, and each of the paper's claims
(`CLAIMS`) gets a verdict from its interval.

Without `--store`, a synthetic benchmark is built first (`tgdp.pipeline.synth`, profile `coupled`: an instance latent
shared by the object's hue and the note pitch, silent decoys, off-screen notes, silences, clutter) and taken through
manifest → fetch events → validate → shard. With `--store STORE` (a prebuilt store holding `train/` and `eval/`)
nothing is synthesised and the same protocol runs.

Results are cached per run in OUT/runs/<config>-<fingerprint>/seed<k>/result.json (a row whose resolved run config
equals another's, e.g. `ratio_0.5` and `tgdp`, shares its runs), so a rerun resumes; a run killed during training
resumes from its last checkpoint. Runs go seed-major, and OUT/results.json and OUT/results.md are rewritten after
every run, so a study cut short leaves whole seeds of every row.

    python benchmarks/reproduce.py --out runs/reproduce             # `make reproduce`
    python benchmarks/reproduce.py --out runs/reproduce-short --short
    python benchmarks/reproduce.py --out runs/real --store STORE --set model.num_mel_bins=128
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONFIGS",
    "PAPER_TABLES",
    "Budget",
    "Corpus",
    "Study",
    "aggregate",
    "build_synth_store",
    "main",
    "parse_args",
    "render_tables",
    "run_one",
    "run_study",
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
class Corpus:
    """The synthetic benchmark (fixed before any result was looked at; see REPRODUCTION.md)."""

    num_clips: int = 720
    num_classes: int = 12
    difficulty: float = 0.3  # at 0.6 the Sync baseline did not leave ln(B) in 500 steps (REPRODUCTION.md, budget)
    seed: int = 2024
    eval_fraction: float = 0.25
    segment_s: float = 2.56  # 256 fbank frames = the tiny store's target_length
    profile: str = "coupled"  # tgdp.pipeline.synth: an instance latent shared by hue and pitch, decoys


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


# --- the synthetic store ----------------------------------------------------------------------------------------

SHARD_TINY = {"frame_size": 96, "num_mel_bins": 64, "target_length": 256}


def build_synth_store(out: Path, corpus: Corpus, workers: int = 2) -> Path:
    """synth → manifest → fetch events → validate → shard, each step skipped when already done. Returns STORE."""
    from tgdp.pipeline.features import FeatureParams
    from tgdp.pipeline.manifest import ManifestConfig, build_manifest
    from tgdp.pipeline.shard import ShardConfig, run_shard
    from tgdp.pipeline.synth import LABELS_FILE, SEGMENT_FILES, SynthConfig, generate
    from tgdp.pipeline.validate import ValidateConfig, run_validate

    out.mkdir(parents=True, exist_ok=True)
    spec = out / "corpus.json"
    if spec.exists() and json.loads(spec.read_text()) != asdict(corpus):
        raise SystemExit(f"{out} holds a corpus built with other settings ({spec}); use a fresh --out")
    spec.write_text(json.dumps(asdict(corpus), indent=1))
    cdir, root, store = out / "corpus", out / "root", out / "store"
    if (store / "train" / "index.json").exists() and (store / "eval" / "index.json").exists():
        return store
    if not (cdir / "ground_truth.csv").exists() or not (cdir / LABELS_FILE).exists():
        cfg = SynthConfig(
            num_clips=corpus.num_clips,
            num_classes=corpus.num_classes,
            seed=corpus.seed,
            eval_fraction=corpus.eval_fraction,
            fault_fraction=0.0,  # faults are the pipeline tests' business; here every clip should train
            difficulty=corpus.difficulty,
            profile=corpus.profile,
            sizes=[(128, 96), (160, 120)],
            fps=[12, 15, 24, 25],
            segment_s=corpus.segment_s,
            start_s=(1, 2),
            tail_s=(0.5, 1.0),
            webm_fraction=0.0,
            workers=workers,
        )
        shutil.rmtree(cdir, ignore_errors=True)
        generate(cfg, cdir)
    if not (root / "manifest" / "source.parquet").exists():
        csvs = [str(cdir / name) for name in SEGMENT_FILES.values()]
        labels = str(cdir / LABELS_FILE)
        build_manifest(root, ManifestConfig(dataset="audioset", csv=csvs, labels=labels))
    _register_synth(root, cdir)
    params = FeatureParams(**SHARD_TINY)
    run_validate(root, ValidateConfig(features=params), backend="serial")
    run_shard(root, store, ShardConfig(**SHARD_TINY), backend="serial")
    return store


def _register_synth(root: Path, cdir: Path) -> None:
    """Record each synth video as fetched. A synth file is the whole video (the segment starts 1–2 s in), so the
    event says `section_start_s=0` — `import_clips` would record the segment start there, which is the rule for
    trimmed `<ytid>.mp4` files and would shift the window."""
    import csv

    from tgdp.pipeline.fetch import EVENT_COLUMNS, file_sha256
    from tgdp.pipeline.layout import raw_path_for
    from tgdp.pipeline.ledger import append_events, latest

    if latest(root, "fetch"):
        return
    events = []
    with open(cdir / "ground_truth.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            src = cdir / row["file"]
            final = raw_path_for(root, row["clip_id"], src.suffix)
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, final)
            event = {
                "clip_id": row["clip_id"],
                "status": "ok",
                "reason": None,
                "transient": False,
                "attempt": 1,
                "source": "synth",
                "session_id": "reproduce",
                "raw_path": final.relative_to(root).as_posix(),
                "file_bytes": final.stat().st_size,
                "sha256": file_sha256(final),
                "section_mode": "whole_file",
                "section_start_s": 0.0,
            }
            events.append({k: event.get(k) for k in EVENT_COLUMNS})
    append_events(root, "fetch", events)


# --- one run ----------------------------------------------------------------------------------------------------


def run_overrides(study: Study, name: str, seed: int) -> tuple[str, list[str]]:
    """(preset, overrides) of one (config, seed); every config gets the same loop settings (the fixed budget)."""
    spec = CONFIGS[name]
    b = study.budget
    preset, overrides = spec.preset, list(spec.overrides)
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
        from tgdp.train.config import load_run_config

        m = load_run_config(preset, overrides).model_cfg()
        loop.append(f"model.lambda_contra={b.lambda_contra}")
        if m.lambda_dis > 0:
            loop.append(f"model.lambda_dis={m.lambda_dis * b.lambda_contra / m.lambda_contra:.6g}")
    return preset, loop + overrides + list(study.sets)


def fingerprint(study: Study, name: str) -> str:
    """Digest of the resolved run config without the seed: equal digests are the same experiment."""
    from tgdp.train.config import load_run_config

    preset, overrides = run_overrides(study, name, seed=0)
    cfg = load_run_config(preset, overrides)
    body = cfg.model_dump(mode="json", exclude={"model", "model_preset"})
    body["model"] = cfg.model_cfg().model_dump(mode="json")
    body["trained"] = CONFIGS[name].trained
    b = study.budget
    body["eval"] = [EVAL_PROTOCOL, b.eval_frame_stride, b.probe_epochs, b.probe_lr, b.linear_epochs, b.linear_lr]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]


def _probe_heads(dim: int) -> int:
    # the paper's probe has 12 heads (ViT-B: 2·768 divisible); tiny tokens are 128-d
    return next(h for h in (12, 8, 4, 2, 1) if dim % h == 0)


def _probe_task(labels: list[list[str]]) -> str:
    return "multiclass" if all(len(x) == 1 for x in labels) else "multilabel"


# the evaluation's version: bump it when a metric's definition changes, so cached results are not mixed
EVAL_PROTOCOL = 2


def heldout_infonce(emb_a: np.ndarray, emb_v: np.ndarray, batch: int, temperature: float) -> dict[str, float]:
    """InfoNCE of held-out clips, as training scores it: per frame t, consecutive chunks of `batch` clips (the last,
    shorter chunk dropped), each (frame t, segment t) pair against the chunk's other clips; mean over chunks and
    frames. emb_*: [N, T, D]. Returns V→A (Eq. 4, the trained direction of Sync and TG-DP), A→V, and / ln(batch)."""
    import torch

    from tgdp.model.losses import contrastive_loss

    n, t, _ = emb_a.shape
    b = min(batch, n)
    if b < 2:
        raise ValueError(f"held-out InfoNCE needs at least 2 clips per chunk, got {n} clips")
    a, v = torch.from_numpy(np.asarray(emb_a, np.float32)), torch.from_numpy(np.asarray(emb_v, np.float32))
    v2a, a2v = [], []
    for s in range(0, n - b + 1, b):
        for k in range(t):
            ga, gv = a[s : s + b, k], v[s : s + b, k]
            v2a.append(float(contrastive_loss(ga, gv, temperature)))  # CE over audios for each video
            a2v.append(float(contrastive_loss(gv, ga, temperature)))
    out = {"nce_v2a": float(np.mean(v2a)), "nce_a2v": float(np.mean(a2v)), "nce_batch": b, "ln_batch": math.log(b)}
    out["nce_ratio_v2a"] = out["nce_v2a"] / out["ln_batch"]
    out["nce_ratio_a2v"] = out["nce_a2v"] / out["ln_batch"]
    return out


def class_recall(sim: np.ndarray, labels: list[str], ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Class-level R@K (percent): a query hits when one of its K most similar candidates has its class.

    sim [N, N]: query rows × candidate columns (the query's own pair counts: it has the query's class). The rank
    of the best same-class candidate is 1 + #{other-class candidates scoring ≥ it} (pessimistic on ties)."""
    lab = np.asarray(labels)
    same = lab[:, None] == lab[None, :]
    best = np.where(same, sim, -np.inf).max(axis=1, keepdims=True)
    rank = (sim >= best).sum(axis=1) - (np.where(same, sim, -np.inf) >= best).sum(axis=1) + 1
    return {f"R@{k}": 100.0 * float(np.mean(rank <= k)) for k in ks}


def _class_level(emb, labels: list[str]) -> dict[str, dict[str, float]]:
    from tgdp.eval.retrieval import similarity_matrix

    sim = similarity_matrix(emb.emb_a, emb.emb_v)  # [audio i, video j]
    return {"v2a": class_recall(sim.T, labels), "a2v": class_recall(sim, labels)}


def _health(emb) -> dict[str, float]:
    """Health figures (tgdp.model.health) of the held-out global tokens at the middle frame, all eval clips."""
    import torch

    try:
        from tgdp.model.health import health_metrics
    except ImportError:  # a tree without the issue-13 health module
        return {}
    t = emb.emb_a.shape[1] // 2
    h = health_metrics(torch.from_numpy(np.ascontiguousarray(emb.emb_a[:, t])), torch.from_numpy(emb.emb_v[:, t]))
    return {k: float(v) for k, v in h.items()}


def _probe(job: dict[str, Any], emb_train, emb_eval, task: str, modality: str, linear: bool) -> float:
    from tgdp.eval.probe import ProbeConfig, train_probe

    if linear:  # mean over frames → BatchNorm(affine=False) → Linear: a standardised linear probe
        pcfg = ProbeConfig(
            task=task,
            modality=modality,
            linear=True,
            epochs=job["linear_epochs"],
            lr=job["linear_lr"],
            seed=job["seed"],
        )
    else:  # the paper's attention probe on [g_v, g_a]
        dim = emb_train.dim * (2 if modality == "av" else 1)
        pcfg = ProbeConfig(
            task=task,
            modality=modality,
            num_heads=_probe_heads(dim),
            epochs=job["probe_epochs"],
            lr=job["probe_lr"],
            seed=job["seed"],
        )
    return float(train_probe(emb_train, emb_eval, pcfg).metric)


def _train_summary(history: list[dict[str, float]]) -> dict[str, Any]:
    """Last logged losses and health figures, and the training InfoNCE averaged over the last 20 % of logged rows."""
    if not history:
        return {}
    last = history[-1]
    tail = history[-max(1, len(history) // 5) :]
    contra = [r["contrastive_loss"] for r in tail if "contrastive_loss" in r]
    return {
        "final": {k: float(v) for k, v in last.items() if isinstance(v, int | float)},
        "contrastive_tail": float(np.mean(contra)) if contra else None,
    }


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) one (config, seed), embed both splits, evaluate every metric; cache result.json."""
    import torch

    from tgdp.eval.embed import embed_store, load_encoder
    from tgdp.eval.retrieval import run_retrieval
    from tgdp.model import build_model
    from tgdp.pipeline.store import Store
    from tgdp.train.config import load_run_config
    from tgdp.train.loop import fit

    torch.set_num_threads(job["threads"])
    run_dir, result_path = Path(job["run_dir"]), Path(job["run_dir"]) / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_run_config(job["preset"], job["overrides"])
    t0 = time.perf_counter()
    summary = None
    if job["trained"]:
        resume = any((run_dir / "train" / "checkpoints").glob("step_*.pt"))
        summary = fit(cfg, job["store"], run_dir / "train", resume=resume)
        model, _ = load_encoder(summary.checkpoint)
    else:
        torch.manual_seed(job["seed"])
        model = build_model(cfg.model_cfg()).eval()
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    train_store, eval_store = Store.open(job["store"], split="train"), Store.open(job["store"], split="eval")
    rows = None
    if len(train_store) > job["probe_max_train"]:  # a real store: a fixed random subset trains the probes
        rows = sorted(np.random.default_rng(0).choice(len(train_store), job["probe_max_train"], replace=False))
    frames = range(0, int(eval_store.meta["frames"]["n"]), job["eval_frame_stride"])
    with torch.no_grad():
        emb_train = embed_store(model, train_store, rows=rows, batch_size=16, frames=frames)
        emb_eval = embed_store(model, eval_store, batch_size=16, frames=frames)
    embed_s = time.perf_counter() - t1
    mcfg = cfg.model_cfg()
    ret = run_retrieval(emb_eval, model=job["name"], dataset="eval")
    eval_labels = list(emb_eval.labels)
    task = _probe_task(list(emb_train.labels) + eval_labels)
    result = {
        "config": job["name"],
        "fingerprint": job["fingerprint"],
        "seed": job["seed"],
        "preset": job["preset"],
        "overrides": job["overrides"],
        "steps": summary.step if summary else 0,
        "batch_size": cfg.train.batch_size,
        "train": _train_summary(summary.history if summary else []),
        "samples_per_s": summary.samples_per_s if summary else None,
        "n_eval": len(emb_eval),
        "n_probe_train": len(emb_train),
        "retrieval": ret.metrics,
        "heldout": heldout_infonce(emb_eval.emb_a, emb_eval.emb_v, cfg.train.batch_size, mcfg.contrastive_temperature),
        "health": _health(emb_eval),
        "probe_task": task,
    }
    if task == "multiclass":
        result["class_retrieval"] = _class_level(emb_eval, [lab[0] for lab in eval_labels])
    result["linear"] = {m: _probe(job, emb_train, emb_eval, task, m, True) for m in ("a", "v", "av")}
    result["probe"] = {
        "metric_name": "top1" if task == "multiclass" else "mAP",
        "metric": _probe(job, emb_train, emb_eval, task, "av", False),
    }
    result["train_s"], result["embed_s"] = train_s, embed_s
    result["eval_s"] = time.perf_counter() - t1
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(result_path)
    return result


# --- the study --------------------------------------------------------------------------------------------------


FIRST = (CONTROL, BASELINE, REFERENCE)  # the gate's rows and TG-DP run every seed before any ablation


def _jobs(study: Study, store: Path) -> list[dict[str, Any]]:
    """One job per distinct (run config, seed). Order: the gate's rows and TG-DP for every seed first (the gate
    needs all of them before any comparison is read), then the other rows seed-major, so a study cut short has
    whole seeds of every row it reached."""
    owners: dict[str, str] = {}
    names = []
    for name in study.configs:
        fp = fingerprint(study, name)
        if owners.setdefault(fp, name) == name:
            names.append((name, fp))
    first = [(n, fp) for n, fp in names if n in FIRST]
    order = [(s, n, fp) for s in study.seeds for n, fp in first]
    order += [(s, n, fp) for s in study.seeds for n, fp in names if n not in FIRST]
    jobs = []
    for seed, name, fp in order:
        preset, overrides = run_overrides(study, name, seed)
        jobs.append(
            {
                "name": name,
                "fingerprint": fp,
                "seed": seed,
                "preset": preset,
                "overrides": overrides,
                "trained": CONFIGS[name].trained,
                "store": str(store),
                "run_dir": str(study.out / "runs" / f"{name}-{fp}" / f"seed{seed}"),
                "threads": study.threads,
                "probe_epochs": study.budget.probe_epochs,
                "probe_lr": study.budget.probe_lr,
                "linear_epochs": study.budget.linear_epochs,
                "linear_lr": study.budget.linear_lr,
                "probe_max_train": study.budget.probe_max_train,
                "eval_frame_stride": study.budget.eval_frame_stride,
            }
        )
    return jobs


def _log(out: Path, msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg} (load {os.getloadavg()[0]:.1f})"
    print(line, flush=True)
    with open(out / "progress.log", "a") as fh:
        fh.write(line + "\n")


def run_study(study: Study) -> dict[str, Any]:
    """Build the store (synth mode), run every missing (config, seed), aggregate, write results.json/.md."""
    study.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    loads = [os.getloadavg()[0]]
    if study.store is None and study.report_only:
        store = study.out / "data" / "store"
    elif study.store is None:
        _log(study.out, f"building the synthetic store: {asdict(study.corpus)}")
        store = build_synth_store(study.out / "data", study.corpus)
    else:
        store = study.store
        for split in ("train", "eval"):
            if not (store / split).is_dir():
                raise SystemExit(f"--store {store} has no {split}/ split (need STORE/train and STORE/eval)")
    build_s = time.perf_counter() - t0
    jobs = _jobs(study, store)
    _log(study.out, f"{len(jobs)} runs ({len(study.configs)} configs × {len(study.seeds)} seeds, shared runs once)")
    results: list[dict[str, Any]] = []

    def done(r: dict[str, Any]) -> None:
        results.append(r)
        loads.append(os.getloadavg()[0])
        _log(study.out, f"[{len(results)}/{len(jobs)}] " + _brief(r))
        # partial tables after every run: a study cut short still leaves its numbers
        _write(study, results, store, build_s, t0, loads)

    if study.report_only:
        results = [json.loads(p.read_text()) for j in jobs if (p := Path(j["run_dir"]) / "result.json").exists()]
        _log(study.out, f"report only: {len(results)} of {len(jobs)} runs have results")
    elif study.jobs <= 1:
        for job in jobs:
            done(run_one(job))
    else:
        # spawn: fresh interpreters, no forked torch thread pools
        with cf.ProcessPoolExecutor(study.jobs, mp_context=mp.get_context("spawn")) as pool:
            for fut in cf.as_completed([pool.submit(run_one, j) for j in jobs]):
                done(fut.result())
    agg = _write(study, results, store, build_s, t0, loads)
    _log(study.out, f"done in {agg['wall_s']['total']:.0f} s → {study.out / 'results.md'}")
    return agg


def _write(study: Study, results, store: Path, build_s: float, t0: float, loads: list[float]) -> dict[str, Any]:
    agg = aggregate(results, study)
    agg["wall_s"] = {"build_store": build_s, "total": time.perf_counter() - t0}
    agg["load_avg_1min"] = {"mean": float(np.mean(loads)), "max": float(np.max(loads)), "samples": len(loads)}
    prev = study.out / "results.json"
    if study.report_only and prev.exists():  # the timing is the study's, not this re-aggregation's
        old = json.loads(prev.read_text())
        agg["wall_s"], agg["load_avg_1min"] = old.get("wall_s"), old.get("load_avg_1min")
    agg["machine"] = _machine()
    agg["store"] = str(store)
    (study.out / "results.json").write_text(json.dumps(agg, indent=1))
    (study.out / "results.md").write_text(render_tables(agg))
    return agg


def _brief(r: dict[str, Any]) -> str:
    m, h = r["retrieval"], r["heldout"]
    return (
        f"{r['config']} seed {r['seed']}: held-out NCE/lnB {h['nce_ratio_v2a']:.2f}, R@1 V→A {m['v2a']['R@1']:.1f} "
        f"A→V {m['a2v']['R@1']:.1f}, linear av {r['linear']['av']:.1f}, attn {r['probe']['metric']:.1f} "
        f"(train {r['train_s']:.0f} s, eval {r['eval_s']:.0f} s)"
    )


# --- statistics -------------------------------------------------------------------------------------------------

# two-sided 95 % Student-t quantiles t_{0.975, df}
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
_T975.update({11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042})


def t975(df: int) -> float:
    """Two-sided 95 % Student-t quantile for df ≥ 1 (tabulated; the nearest smaller tabulated df beyond 15)."""
    if df < 1:
        raise ValueError("a t-interval needs at least 2 values")
    if df > 30:
        return 1.96
    return _T975[max(k for k in _T975 if k <= df)]


def stats(values: list[float]) -> dict[str, Any]:
    """mean, sample std, n, values, and the 95 % t-interval of the mean (nan bounds for n < 2)."""
    arr = np.asarray(values, dtype=np.float64)
    n = int(arr.size)
    mean = float(arr.mean()) if n else float("nan")
    std = float(arr.std(ddof=1)) if n > 1 else float("nan")
    half = t975(n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "n": n, "lo": mean - half, "hi": mean + half, "values": [float(v) for v in arr]}


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
    """stats() of a[s] − b[s] over the seeds s both rows have (the paired difference), or None."""
    seeds = sorted(set(a) & set(b))
    return stats([a[s] - b[s] for s in seeds]) if seeds else None


# the gate: the baseline must learn the correspondence and beat the untrained control before any comparison
GATE_NCE_RATIO = 0.85  # held-out InfoNCE (V→A) / ln(B): the upper 95 % bound over seeds must be at most this


def gate(nce_ratio: dict[int, float], probe_trained: dict[int, float], probe_control: dict[int, float]) -> dict:
    """Pass iff (1) the upper 95 % t-bound of the baseline's held-out InfoNCE/ln(B) over seeds ≤ GATE_NCE_RATIO,
    and (2) the paired gain of its probe over the untrained control (same seed) has a 95 % interval above 0 and a
    mean above the seed noise (the larger sample std over seeds of the two rows' probes)."""
    nce = stats(list(nce_ratio.values()))
    gain = paired(probe_trained, probe_control)
    noise = max(stats(list(probe_trained.values()))["std"], stats(list(probe_control.values()))["std"])
    nce_ok = bool(nce["n"] >= 2 and nce["hi"] <= GATE_NCE_RATIO)
    probe_ok = bool(gain is not None and gain["n"] >= 2 and gain["lo"] > 0 and gain["mean"] > noise)
    return {
        "passed": nce_ok and probe_ok,
        "nce_ok": nce_ok,
        "probe_ok": probe_ok,
        "nce_ratio": nce,
        "probe_gain": gain,
        "seed_noise": noise,
        "threshold_nce_ratio": GATE_NCE_RATIO,
    }


# per-run scalar metrics: key → function of result.json
def _metric_fns() -> dict[str, Any]:
    fns: dict[str, Any] = {}
    for d in ("v2a", "a2v"):
        for k in ("R@1", "R@5", "R@10"):
            fns[f"{d} {k}"] = lambda r, d=d, k=k: r["retrieval"][d][k]
            fns[f"class {d} {k}"] = lambda r, d=d, k=k: (r.get("class_retrieval") or {}).get(d, {}).get(k)
    fns["R@1 mean"] = lambda r: 0.5 * (r["retrieval"]["v2a"]["R@1"] + r["retrieval"]["a2v"]["R@1"])
    fns["nce v2a"] = lambda r: r["heldout"]["nce_v2a"]
    fns["nce a2v"] = lambda r: r["heldout"]["nce_a2v"]
    fns["nce ratio"] = lambda r: r["heldout"]["nce_ratio_v2a"]
    for m in ("a", "v", "av"):
        fns[f"linear {m}"] = lambda r, m=m: r["linear"][m]
    fns["attn probe"] = lambda r: r["probe"]["metric"]
    for h in ("a_std_iso", "v_std_iso", "a_cos", "v_cos", "a_erank", "v_erank"):
        fns[h] = lambda r, h=h: r["health"].get(h)
    fns["train nce tail"] = lambda r: (r.get("train") or {}).get("contrastive_tail")
    fns["train_s"] = lambda r: r["train_s"]
    fns["eval_s"] = lambda r: r["eval_s"]
    return fns


DELTA_KEYS = ("v2a R@1", "a2v R@1", "v2a R@10", "a2v R@10", "class v2a R@1", "nce v2a", "linear av", "attn probe")


def aggregate(results: list[dict[str, Any]], study: Study) -> dict[str, Any]:
    """Per config: stats over seeds of every metric; paired (same seed) deltas against TG-DP; the gate; verdicts."""
    by_fp: dict[str, dict[int, dict[str, Any]]] = {}
    for r in results:
        by_fp.setdefault(r["fingerprint"], {})[r["seed"]] = r
    fns = _metric_fns()
    per_seed: dict[str, dict[str, dict[int, float]]] = {}
    rows: dict[str, Any] = {}
    for name in study.configs:
        fp = fingerprint(study, name)
        runs = [by_fp[fp][s] for s in study.seeds if s in by_fp.get(fp, {})]
        if not runs:
            continue
        vals = {}
        for key, fn in fns.items():
            got = {r["seed"]: fn(r) for r in runs}
            got = {s: float(v) for s, v in got.items() if v is not None}
            if got:
                vals[key] = got
        per_seed[name] = vals
        row: dict[str, Any] = {"label": CONFIGS[name].label, "fingerprint": fp, "seeds": [r["seed"] for r in runs]}
        row.update({key: stats(list(v.values())) for key, v in vals.items()})
        row["probe_metric"] = runs[0]["probe"]["metric_name"]
        row["nce_batch"] = runs[0]["heldout"]["nce_batch"]
        rows[name] = row
    if REFERENCE in per_seed:
        for name, row in rows.items():
            row["delta"] = {
                k: paired(per_seed[name][k], per_seed[REFERENCE][k])
                for k in DELTA_KEYS
                if k in per_seed[name] and k in per_seed[REFERENCE]
            }
    g = None
    if BASELINE in per_seed and CONTROL in per_seed:
        g = gate(per_seed[BASELINE]["nce ratio"], per_seed[BASELINE]["linear av"], per_seed[CONTROL]["linear av"])
    return {
        "configs": rows,
        "gate": g,
        "verdicts": verdicts(per_seed),
        "seeds": study.seeds,
        "budget": asdict(study.budget),
        "corpus": None if study.store is not None else asdict(study.corpus),
        "scale": study.scale,
        "sets": study.sets,
        "eval_protocol": EVAL_PROTOCOL,
    }


# --- the paper's claims -----------------------------------------------------------------------------------------

# (claim, paper evidence, better row, worse row, metric): the claim holds in direction when better − worse > 0
CLAIMS: tuple[tuple[str, str, str, str, str], ...] = (
    ("TG-DP beats CAV-MAE Sync on V→A R@1", "Table 1: VGGSound 27.9 → 31.3", "tgdp", "cavmae_sync", "v2a R@1"),
    ("TG-DP beats CAV-MAE Sync on A→V R@1", "Table 1: VGGSound 23.2 → 30.3", "tgdp", "cavmae_sync", "a2v R@1"),
    (
        "TG-DP beats CAV-MAE Sync on the probe",
        "Table 5 w/o 30.5 vs Table 6 0.50 32.0 (AS20K mAP)",
        "tgdp",
        "cavmae_sync",
        "attn probe",
    ),
    ("dual pass helps A→V (R@1)", "Table 5: 23.2 → 27.4", "dual_pass_75", "cavmae_sync", "a2v R@1"),
    ("dual pass helps A→V (R@10)", "Table 5: 58.1 → 60.1", "dual_pass_75", "cavmae_sync", "a2v R@10"),
    ("ρ_c 0.2 retrieves better than 0.5", "Table 6: R@1 32.5/31.7 vs 31.3/30.3", "ratio_0.2", "ratio_0.5", "R@1 mean"),
    (
        "ρ_c 0 retrieves better than 0.5",
        "Table 6: R@1 30.4/29.8 vs 31.3/30.3 (V→A/A→V; mixed)",
        "ratio_0",
        "ratio_0.5",
        "R@1 mean",
    ),
    ("ρ_c 0.5 retrieves better than 0.65", "Table 6: 31.3/30.3 vs 26.4/25.1", "ratio_0.5", "ratio_0.65", "R@1 mean"),
    ("ρ_c 0.5 retrieves better than 0.75", "Table 6: 31.3/30.3 vs 27.1/26.2", "ratio_0.5", "ratio_0.75", "R@1 mean"),
    ("ρ_c 0.5 classifies better than 0.2", "Table 6: 32.0 vs 30.4 mAP", "ratio_0.5", "ratio_0.2", "attn probe"),
    ("ρ_c 0.5 classifies better than 0", "Table 6: 32.0 vs 29.6 mAP", "ratio_0.5", "ratio_0", "attn probe"),
    ("ρ_c 0.5 classifies better than 0.75", "Table 6: 32.0 vs 30.7 mAP", "ratio_0.5", "ratio_0.75", "attn probe"),
    ("distillation helps A→V (R@1)", "Table 7: 29.1 → 30.3", "distill_on", "distill_off", "a2v R@1"),
    ("distillation helps classification", "Table 7: 30.5 → 32.0 mAP", "distill_on", "distill_off", "attn probe"),
    (
        "distinct beats probabilistic (V→A R@1)",
        "Table 8: 31.3 vs 29.6",
        "mask_distinct",
        "mask_probabilistic",
        "v2a R@1",
    ),
    (
        "distinct beats probabilistic (probe)",
        "Table 8: 32.0 vs 29.8 mAP",
        "mask_distinct",
        "mask_probabilistic",
        "attn probe",
    ),
    ("distinct beats random (probe)", "Table 8: 32.0 vs 30.2 mAP", "mask_distinct", "mask_random", "attn probe"),
)


def verdict(delta: dict[str, Any] | None) -> str:
    """'reproduced in direction' / 'opposite' when the 95 % interval of better − worse excludes 0, else
    'unresolved at this scale' (also with fewer than 2 paired seeds)."""
    if delta is None or delta["n"] < 2 or not math.isfinite(delta["lo"]):
        return "unresolved at this scale"
    if delta["lo"] > 0:
        return "reproduced in direction"
    if delta["hi"] < 0:
        return "opposite"
    return "unresolved at this scale"


def _alias(name: str) -> str:
    # rows that are the full method by definition are the TG-DP run
    return REFERENCE if name in ("ratio_0.5", "distill_on", "mask_distinct") else name


def verdicts(per_seed: dict[str, dict[str, dict[int, float]]]) -> list[dict[str, Any]]:
    out = []
    for claim, evidence, better, worse, metric in CLAIMS:
        a, b = per_seed.get(better) or per_seed.get(_alias(better)), per_seed.get(worse) or per_seed.get(_alias(worse))
        d = paired(a[metric], b[metric]) if a and b and metric in a and metric in b else None
        out.append({"claim": claim, "paper": evidence, "rows": [better, worse], "metric": metric, "delta": d,
                    "verdict": verdict(d)})  # fmt: skip
    return out


# --- tables -----------------------------------------------------------------------------------------------------


def _ms(s: dict[str, Any] | None, digits: int = 1) -> str:
    if not s:
        return "–"
    f = f"{{:.{digits}f}}"
    return f.format(s["mean"]) if math.isnan(s["std"]) else f"{f.format(s['mean'])} ± {f.format(s['std'])}"


def _ci(s: dict[str, Any] | None, digits: int = 1) -> str:
    if not s:
        return "–"
    f = f"{{:+.{digits}f}}"
    if not math.isfinite(s["lo"]):
        return f.format(s["mean"])
    return f"{f.format(s['mean'])} [{f.format(s['lo'])}, {f.format(s['hi'])}]"


def render_tables(agg: dict[str, Any]) -> str:
    """Markdown: the gate, one table per paper table (ours beside the paper's), paired deltas, health, verdicts."""
    rows = agg["configs"]
    out = [
        f"Seeds {agg['seeds']}; budget {agg['budget']}; scale {agg['scale']}; extra overrides {agg['sets']}.",
        "Cells: mean ± sample std over seeds. Δ: paired (same seed) difference, mean [95 % t-interval].",
        "",
    ]
    g = agg.get("gate")
    if g:
        out += [
            "### Gate (baseline = CAV-MAE Sync, control = untrained)",
            "",
            f"- held-out InfoNCE V→A / ln(B): {_ms(g['nce_ratio'], 3)}, 95 % upper bound {g['nce_ratio']['hi']:.3f} "
            f"(must be ≤ {g['threshold_nce_ratio']}): **{'pass' if g['nce_ok'] else 'FAIL'}**",
            f"- linear probe (av) gain over the untrained control: {_ci(g['probe_gain'])} vs seed noise "
            f"{g['seed_noise']:.1f} (interval above 0 and mean above the noise): "
            f"**{'pass' if g['probe_ok'] else 'FAIL'}**",
            f"- gate: **{'PASSED' if g['passed'] else 'FAILED'}**",
            "",
        ]
    metric_cols = [("v2a R@1", "V→A R@1"), ("v2a R@5", "R@5"), ("v2a R@10", "R@10"), ("a2v R@1", "A→V R@1"),
                   ("a2v R@5", "R@5"), ("a2v R@10", "R@10"), ("attn probe", "attn probe")]  # fmt: skip
    for key, title in TABLES.items():
        names = [n for n, spec in CONFIGS.items() if key in spec.tables and (n in rows or _alias(n) in rows)]
        if not names:
            continue
        head = ["row", "n", *[c for _, c in metric_cols], "paper (V→A R@1/5/10, A→V R@1/5/10, mAP)"]
        out += [f"### {title}: retrieval (instance level) and attention probe", ""]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n in names:
            r = rows.get(n) or rows[_alias(n)]
            paper = PAPER_TABLES.get(n)
            ptxt = f"T{paper[0]} {paper[1]}: " + " / ".join(f"{v:.1f}" for v in paper[2]) if paper else "–"
            cells = [f"`{n}` {CONFIGS[n].label}", str(len(r["seeds"]))]
            cells += [_ms(r.get(k)) for k, _ in metric_cols] + [ptxt]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    order = [n for n in CONFIGS if n in rows]
    out += ["### Every row: held-out InfoNCE, class-level retrieval, linear probes", ""]
    head = ["row", "NCE V→A", "NCE A→V", "NCE/lnB", "train NCE (last 20 %)", "class V→A R@1", "class A→V R@1",
            "class V→A R@5", "linear a", "linear v", "linear av"]  # fmt: skip
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in order:
        r = rows[n]
        cells = [f"`{n}`", _ms(r.get("nce v2a"), 3), _ms(r.get("nce a2v"), 3), _ms(r.get("nce ratio"), 3)]
        cells += [_ms(r.get("train nce tail"), 3), _ms(r.get("class v2a R@1")), _ms(r.get("class a2v R@1"))]
        cells += [_ms(r.get("class v2a R@5")), _ms(r.get("linear a")), _ms(r.get("linear v")), _ms(r.get("linear av"))]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "### Health of the held-out global tokens (middle frame, all eval clips)", ""]
    head = ["row", "a std·√D", "v std·√D", "a cos", "v cos", "a erank", "v erank", "train s", "eval s"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in order:
        r = rows[n]
        cells = [f"`{n}`"] + [_ms(r.get(k), 3) for k in ("a_std_iso", "v_std_iso", "a_cos", "v_cos")]
        cells += [_ms(r.get(k), 1) for k in ("a_erank", "v_erank", "train_s", "eval_s")]
        out.append("| " + " | ".join(cells) + " |")
    if any(r.get("delta") for r in rows.values()):
        out += ["", f"### Paired Δ against `{REFERENCE}` (row − TG-DP, same seed; mean [95 % t-interval])", ""]
        head = ["row", *DELTA_KEYS]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n in order:
            if n == REFERENCE or not rows[n].get("delta"):
                continue
            d = rows[n]["delta"]
            out.append(
                "| " + " | ".join([f"`{n}`", *[_ci(d.get(k), 2 if "nce" in k else 1) for k in DELTA_KEYS]]) + " |"
            )
    if agg.get("verdicts"):
        out += ["", "### Verdicts (better − worse, paired over seeds, 95 % t-interval)", ""]
        if not (g and g["passed"]):
            out += ["The gate did not pass: these verdicts are exploratory, not a test of the paper's claims.", ""]
        out += ["| claim | paper | rows | metric | Δ | verdict |", "|---|---|---|---|---|---|"]
        for v in agg["verdicts"]:
            rws = " − ".join(f"`{x}`" for x in v["rows"])
            out.append(f"| {v['claim']} | {v['paper']} | {rws} | {v['metric']} | {_ci(v['delta'])} | {v['verdict']} |")
    wall, load = agg.get("wall_s"), agg.get("load_avg_1min")
    if wall and load:
        out += ["", f"Wall time {wall['total']:.0f} s (store build {wall['build_store']:.0f} s); 1-min load average "
                    f"mean {load['mean']:.1f}, max {load['max']:.1f} over {load['samples']} samples."]  # fmt: skip
    return "\n".join(out) + "\n"


def _machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        model = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        cpu = model[0].split(":", 1)[1].strip() if model else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "git_rev": _git_rev(),
    }


def _git_rev() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# --- CLI --------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Study:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/reproduce"))
    p.add_argument("--short", action="store_true", help="CI mode: 1 seed, a few steps, 3 configs, a tiny corpus")
    p.add_argument("--store", type=Path, default=None, help="a prebuilt store (STORE/train, STORE/eval): no synth")
    p.add_argument("--seeds", default=None, help="comma-separated training seeds (default 0..4; short: 0)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per run (same for every config)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lambda-contra", type=float, default=None, help="λ_contra for every row (default: the budget's)")
    p.add_argument("--configs", default=None, help=f"comma-separated, from: {', '.join(CONFIGS)} (default all)")
    p.add_argument("--num-clips", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--difficulty", type=float, default=None)
    p.add_argument("--probe-epochs", type=int, default=None)
    p.add_argument("--scale", choices=("tiny", "base"), default="tiny", help="tiny presets or the ViT-B ones")
    p.add_argument("--set", dest="sets", action="append", default=[], help="extra run-config override, repeatable")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument(
        "--report", action="store_true", help="only aggregate the cached results (e.g. of a study cut short)"
    )
    a = p.parse_args(argv)
    corpus, budget = Corpus(), Budget()
    if a.short:
        corpus = Corpus(num_clips=40, num_classes=4)
        budget = replace(budget, steps=4, batch_size=8, probe_epochs=2, linear_epochs=2)
    corpus = replace(
        corpus,
        num_clips=a.num_clips or corpus.num_clips,
        num_classes=a.num_classes or corpus.num_classes,
        difficulty=corpus.difficulty if a.difficulty is None else a.difficulty,
    )
    budget = replace(
        budget,
        steps=budget.steps if a.steps is None else a.steps,
        batch_size=a.batch_size or budget.batch_size,
        lr=a.lr or budget.lr,
        lambda_contra=budget.lambda_contra if a.lambda_contra is None else a.lambda_contra,
        probe_epochs=a.probe_epochs or budget.probe_epochs,
    )
    configs = a.configs.split(",") if a.configs else list(SHORT_CONFIGS if a.short else CONFIGS)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else ([0] if a.short else [0, 1, 2, 3, 4])
    return Study(
        out=a.out,
        store=a.store,
        configs=configs,
        seeds=seeds,
        corpus=corpus,
        budget=budget,
        scale=a.scale,
        sets=a.sets,
        jobs=a.jobs,
        threads=a.threads,
        report_only=a.report,
    )


def main(argv: list[str] | None = None) -> int:
    study = parse_args(argv)
    agg = run_study(study)
    print(render_tables(agg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
