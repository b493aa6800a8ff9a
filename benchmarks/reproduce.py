"""Controlled reproduction of the TG-DP claims: CAV-MAE Sync vs TG-DP and the ablations of Tables 5–8.

Every config trains with the same budget (steps × batch), over several seeds, then is evaluated by zero-shot
retrieval (R@1/5/10 both directions, `diagonal_mean`, on the held-out `eval` split) and an attention probe
(trained on the `train`-split embeddings, tested on the `eval`-split embeddings; multiclass top-1 when every clip
has one label, else multilabel mAP). A random-init encoder of the TG-DP model is evaluated too, as a floor.

Without `--store`, a synthetic benchmark is built first (`tgdp.pipeline.synth`: more classes, more clips and more
semantic noise than the demo) and taken through manifest → fetch events → validate → shard. With `--store STORE`
(a prebuilt store holding `train/` and `eval/`) nothing is synthesised and the same training and evaluation run.

Results are cached per run in OUT/runs/<config>-<fingerprint>/seed<k>/result.json (a config whose resolved run
config equals another's, e.g. `ratio_0.5` and `tgdp`, shares its runs), so a rerun resumes; a run killed during
training resumes from its last checkpoint. OUT/results.json and OUT/results.md hold the tables (mean ± sample std
over seeds).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONFIGS",
    "PAPER",
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
    """One row: a train preset plus overrides; `tables` names the result tables the row appears in."""

    preset: str
    label: str
    tables: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    tiny_preset: str | None = None  # at tiny scale: this preset replaces `preset` (the base recipe's tiny twin)


_TINY_TGDP = ("model_preset=tiny_tgdp",)
CONFIGS: dict[str, ConfigSpec] = {
    "random_init": ConfigSpec("tgdp_base", "TG-DP model, random init (no training)", ("main",), (), "tiny_tgdp"),
    "cavmae_sync": ConfigSpec("cavmae_sync_base", "CAV-MAE Sync", ("main", "t5"), (), "tiny_cavmae_sync"),
    "tgdp": ConfigSpec("tgdp_base", "TG-DP (dual pass, ρ_c 0.5, distinct, L_dis)", ("main", "t5"), (), "tiny_tgdp"),
    "dual_pass_off": ConfigSpec("abl_dual_pass_off", "dual pass off (single pass, symmetric InfoNCE)", ("t5",)),
    "ratio_0": ConfigSpec("abl_ratio_0", "ρ_c 0 (contrastive pass sees every token)", ("t6",)),
    "ratio_0.2": ConfigSpec("abl_ratio_0.2", "ρ_c 0.2", ("t6",)),
    "ratio_0.5": ConfigSpec("abl_ratio_0.5", "ρ_c 0.5 (= TG-DP)", ("t6",)),
    "ratio_0.65": ConfigSpec("abl_ratio_0.65", "ρ_c 0.65", ("t6",)),
    "ratio_0.75": ConfigSpec("abl_ratio_0.75", "ρ_c 0.75", ("t6",)),
    "distill_on": ConfigSpec("tgdp_base", "with L_dis (= TG-DP)", ("t7",), (), "tiny_tgdp"),
    "distill_off": ConfigSpec("abl_distill_off", "without L_dis (teacher still selects)", ("t7",)),
    "mask_random": ConfigSpec("abl_mask_random", "random selection", ("t8",)),
    "mask_distinct": ConfigSpec("abl_mask_distinct", "distinct (teacher top-k, = TG-DP)", ("t8",)),
    "mask_probabilistic": ConfigSpec("abl_mask_probabilistic", "probabilistic (Gumbel top-k, τ 1)", ("t8",)),
}
SHORT_CONFIGS = ("random_init", "cavmae_sync", "tgdp")
TABLES = {
    "main": "CAV-MAE Sync vs TG-DP",
    "t5": "Table 5 — dual pass",
    "t6": "Table 6 — contrastive-pass mask ratio ρ_c",
    "t7": "Table 7 — distillation",
    "t8": "Table 8 — token selection",
}
# The paper's headline numbers (ViT-B, AudioSet-2M pretraining); its ablation-table numbers could not be read.
PAPER = {
    "AudioSet R@1 V→A": (35.2, 37.4),
    "AudioSet R@1 A→V": (27.9, 37.1),
    "VGGSound R@1 V→A": (27.9, 31.3),
    "VGGSound R@1 A→V": (23.2, 30.3),
    "AS20K linear-probe mAP (TG-DP)": (None, 32.0),
    "VGGSound linear-probe top-1 (TG-DP)": (None, 52.7),
}


@dataclass(frozen=True)
class Corpus:
    """The synthetic benchmark (fixed before any result was looked at; see REPRODUCTION.md)."""

    num_clips: int = 600
    num_classes: int = 12
    difficulty: float = 0.6
    seed: int = 2024
    eval_fraction: float = 0.2
    segment_s: float = 2.56  # 256 fbank frames = the tiny store's target_length


@dataclass(frozen=True)
class Budget:
    """The per-run compute budget, identical for every config."""

    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    probe_epochs: int = 25
    probe_lr: float = 1e-3
    probe_max_train: int = 20000


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
            overrides += list(_TINY_TGDP)
    loop = [
        "train.epochs=null",
        f"train.steps={max(b.steps, 1)}",
        f"train.batch_size={b.batch_size}",
        f"optim.lr={b.lr}",
        f"train.seed={seed}",
        "train.num_workers=0",
        f"train.log_every={max(1, b.steps // 20)}",
        f"train.ckpt_every={max(50, b.steps // 4)}",
        "train.keep_last=1",
        "train.progress=false",
        "train.tensorboard=false",
    ]
    return preset, loop + overrides + list(study.sets)


def fingerprint(study: Study, name: str) -> str:
    """Digest of the resolved run config without the seed: equal digests are the same experiment."""
    from tgdp.train.config import load_run_config

    preset, overrides = run_overrides(study, name, seed=0)
    cfg = load_run_config(preset, overrides)
    body = cfg.model_dump(mode="json", exclude={"model", "model_preset"})
    body["model"] = cfg.model_cfg().model_dump(mode="json")
    body["trained"] = name != "random_init"
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]


def _probe_heads(dim: int) -> int:
    # the paper's probe has 12 heads (ViT-B: 2·768 divisible); tiny tokens are 128-d
    return next(h for h in (12, 8, 4, 2, 1) if dim % h == 0)


def _probe_task(labels: list[list[str]]) -> str:
    return "multiclass" if all(len(x) == 1 for x in labels) else "multilabel"


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) one (config, seed), embed both splits, run retrieval and the probe; cache result.json."""
    import torch

    from tgdp.eval.embed import embed_store, load_encoder
    from tgdp.eval.probe import ProbeConfig, train_probe
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
    summary: dict[str, Any] = {}
    if job["trained"]:
        resume = any((run_dir / "train" / "checkpoints").glob("step_*.pt"))
        summary = fit(cfg, job["store"], run_dir / "train", resume=resume)
        model, _ = load_encoder(summary["checkpoint"])
    else:
        torch.manual_seed(job["seed"])
        model = build_model(cfg.model_cfg()).eval()
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    train_store, eval_store = Store.open(job["store"], split="train"), Store.open(job["store"], split="eval")
    rows = None
    if len(train_store) > job["probe_max_train"]:  # a real store: a fixed random subset trains the probe
        rows = sorted(np.random.default_rng(0).choice(len(train_store), job["probe_max_train"], replace=False))
    with torch.no_grad():
        emb_train = embed_store(model, train_store, rows=rows, batch_size=16)
        emb_eval = embed_store(model, eval_store, batch_size=16)
    ret = run_retrieval(emb_eval, model=job["name"], dataset="eval")
    task = _probe_task(list(emb_train.labels) + list(emb_eval.labels))
    pcfg = ProbeConfig(
        task=task,
        modality="av",
        num_heads=_probe_heads(2 * emb_train.dim),
        epochs=job["probe_epochs"],
        lr=job["probe_lr"],
        seed=job["seed"],
    )
    probe = train_probe(emb_train, emb_eval, pcfg)
    history = summary.get("history") or []
    result = {
        "config": job["name"],
        "fingerprint": job["fingerprint"],
        "seed": job["seed"],
        "preset": job["preset"],
        "overrides": job["overrides"],
        "steps": summary.get("step", 0),
        "batch_size": cfg.train.batch_size,
        "final_losses": {k: v for k, v in (history[-1] if history else {}).items() if k.endswith("loss")},
        "samples_per_s": summary.get("samples_per_s"),
        "train_s": train_s,
        "eval_s": time.perf_counter() - t1,
        "n_eval": len(emb_eval),
        "n_probe_train": len(emb_train),
        "retrieval": ret.metrics,
        "probe": {
            "task": task,
            "metric_name": probe.metric_name,
            "metric": probe.metric,
            "n_classes": len(probe.classes),
        },
    }
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(result_path)
    return result


# --- the study --------------------------------------------------------------------------------------------------


def _jobs(study: Study, store: Path) -> list[dict[str, Any]]:
    jobs, seen = [], {}
    for name in study.configs:
        fp = fingerprint(study, name)
        owner = seen.setdefault(fp, name)
        for seed in study.seeds:
            if owner != name:
                continue
            preset, overrides = run_overrides(study, name, seed)
            jobs.append(
                {
                    "name": name,
                    "fingerprint": fp,
                    "seed": seed,
                    "preset": preset,
                    "overrides": overrides,
                    "trained": name != "random_init",
                    "store": str(store),
                    "run_dir": str(study.out / "runs" / f"{name}-{fp}" / f"seed{seed}"),
                    "threads": study.threads,
                    "probe_epochs": study.budget.probe_epochs,
                    "probe_lr": study.budget.probe_lr,
                    "probe_max_train": study.budget.probe_max_train,
                }
            )
    return jobs


def _log(out: Path, msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    with open(out / "progress.log", "a") as fh:
        fh.write(line + "\n")


def run_study(study: Study) -> dict[str, Any]:
    """Build the store (synth mode), run every missing (config, seed), aggregate, write results.json/.md."""
    study.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if study.store is None:
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
    if study.jobs <= 1:
        for job in jobs:
            results.append(run_one(job))
            _log(study.out, _brief(results[-1]))
    else:
        # spawn: fresh interpreters, no forked torch thread pools
        with cf.ProcessPoolExecutor(study.jobs, mp_context=mp.get_context("spawn")) as pool:
            for fut in cf.as_completed([pool.submit(run_one, j) for j in jobs]):
                results.append(fut.result())
                _log(study.out, _brief(results[-1]))
    agg = aggregate(results, study)
    agg["wall_s"] = {"build_store": build_s, "total": time.perf_counter() - t0}
    agg["machine"] = _machine()
    agg["store"] = str(store)
    (study.out / "results.json").write_text(json.dumps(agg, indent=1))
    (study.out / "results.md").write_text(render_tables(agg))
    _log(study.out, f"done in {agg['wall_s']['total']:.0f} s → {study.out / 'results.md'}")
    return agg


def _brief(r: dict[str, Any]) -> str:
    m = r["retrieval"]
    return (
        f"{r['config']} seed {r['seed']}: V→A R@1 {m['v2a']['R@1']:.1f} A→V R@1 {m['a2v']['R@1']:.1f} "
        f"probe {r['probe']['metric']:.1f} (train {r['train_s']:.0f} s, eval {r['eval_s']:.0f} s)"
    )


METRICS = [("v2a", "R@1"), ("v2a", "R@5"), ("v2a", "R@10"), ("a2v", "R@1"), ("a2v", "R@5"), ("a2v", "R@10")]


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else float("nan")
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size), "values": [float(v) for v in arr]}


def aggregate(results: list[dict[str, Any]], study: Study) -> dict[str, Any]:
    """Per config: mean ± std over seeds of every metric; paired (same seed) differences against TG-DP."""
    by_fp: dict[str, dict[int, dict[str, Any]]] = {}
    for r in results:
        by_fp.setdefault(r["fingerprint"], {})[r["seed"]] = r
    rows: dict[str, Any] = {}
    for name in study.configs:
        fp = fingerprint(study, name)
        runs = [by_fp[fp][s] for s in study.seeds if s in by_fp.get(fp, {})]
        if not runs:
            continue
        row: dict[str, Any] = {"label": CONFIGS[name].label, "fingerprint": fp, "seeds": [r["seed"] for r in runs]}
        for d, k in METRICS:
            row[f"{d} {k}"] = _stats([r["retrieval"][d][k] for r in runs])
        row["probe"] = _stats([r["probe"]["metric"] for r in runs])
        row["probe_metric"] = runs[0]["probe"]["metric_name"]
        row["train_s"] = _stats([r["train_s"] for r in runs])
        rows[name] = row
    ref = rows.get("tgdp")
    if ref is not None:
        for row in rows.values():
            for key in ("v2a R@1", "a2v R@1", "probe"):
                pairs = [
                    (v, ref[key]["values"][ref["seeds"].index(s)])
                    for s, v in zip(row["seeds"], row[key]["values"], strict=True)
                    if s in ref["seeds"]
                ]
                row[f"delta {key}"] = _stats([a - b for a, b in pairs]) if pairs else None
    return {
        "configs": rows,
        "seeds": study.seeds,
        "budget": asdict(study.budget),
        "corpus": None if study.store is not None else asdict(study.corpus),
        "scale": study.scale,
        "sets": study.sets,
    }


def _ms(s: dict[str, float] | None) -> str:
    if s is None:
        return "–"
    return f"{s['mean']:.1f}" if math.isnan(s["std"]) else f"{s['mean']:.1f} ± {s['std']:.1f}"


def render_tables(agg: dict[str, Any]) -> str:
    """Markdown: one table per paper table, rows = configs, cells = mean ± std over seeds."""
    rows = agg["configs"]
    any_row = next(iter(rows.values()), None)
    probe_name = f"probe {any_row['probe_metric']}" if any_row else "probe"
    head = ["config", "V→A R@1", "V→A R@5", "V→A R@10", "A→V R@1", "A→V R@5", "A→V R@10", probe_name]
    head += ["Δ V→A R@1", "Δ A→V R@1", f"Δ {probe_name}"]
    out = [
        f"Seeds {agg['seeds']}; budget {agg['budget']}; scale {agg['scale']}. Cells: mean ± sample std over seeds.",
        "Δ: paired (same seed) difference to TG-DP, mean ± std.",
        "",
    ]
    for key, title in TABLES.items():
        names = [n for n, spec in CONFIGS.items() if key in spec.tables and n in rows]
        if not names:
            continue
        out += [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n in names:
            r = rows[n]
            cells = [f"`{n}` {r['label']}"] + [_ms(r[f"{d} {k}"]) for d, k in METRICS] + [_ms(r["probe"])]
            cells += [_ms(r.get("delta v2a R@1")), _ms(r.get("delta a2v R@1")), _ms(r.get("delta probe"))]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


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
    p.add_argument("--seeds", default=None, help="comma-separated training seeds (default 0,1,2; short: 0)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per run (same for every config)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--configs", default=None, help=f"comma-separated, from: {', '.join(CONFIGS)} (default all)")
    p.add_argument("--num-clips", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--difficulty", type=float, default=None)
    p.add_argument("--probe-epochs", type=int, default=None)
    p.add_argument("--scale", choices=("tiny", "base"), default="tiny", help="tiny presets or the ViT-B ones")
    p.add_argument("--set", dest="sets", action="append", default=[], help="extra run-config override, repeatable")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    a = p.parse_args(argv)
    corpus, budget = Corpus(), Budget()
    if a.short:
        corpus = Corpus(num_clips=40, num_classes=4)
        budget = Budget(steps=4, batch_size=8, probe_epochs=2)
    corpus = Corpus(
        num_clips=a.num_clips or corpus.num_clips,
        num_classes=a.num_classes or corpus.num_classes,
        difficulty=corpus.difficulty if a.difficulty is None else a.difficulty,
    )
    budget = Budget(
        steps=budget.steps if a.steps is None else a.steps,
        batch_size=a.batch_size or budget.batch_size,
        probe_epochs=a.probe_epochs or budget.probe_epochs,
    )
    configs = a.configs.split(",") if a.configs else list(SHORT_CONFIGS if a.short else CONFIGS)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else ([0] if a.short else [0, 1, 2])
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
    )


def main(argv: list[str] | None = None) -> int:
    study = parse_args(argv)
    agg = run_study(study)
    print(render_tables(agg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
