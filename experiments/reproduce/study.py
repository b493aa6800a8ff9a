"""Running the reproduction study: one job per distinct (run config, seed), each trained (or resumed) and evaluated
in its own process and cached as OUT/runs/<config>-<fingerprint>/seed<k>/result.json; the aggregate tables are
rewritten after every run."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tgdp.eval.embed import load_encoder
from tgdp.experiments.reproduce.configs import FIRST, Study, fingerprint, run_overrides
from tgdp.experiments.reproduce.evaluate import embed_splits, evaluate
from tgdp.experiments.reproduce.report import aggregate, render_tables
from tgdp.experiments.reproduce.store import build_synth_store
from tgdp.model import build_model
from tgdp.train.checkpoint import list_checkpoints
from tgdp.train.config import RunConfig, load_run_config
from tgdp.train.loop import FitSummary, fit

__all__ = ["git_rev", "plan_jobs", "run_one", "run_reproduce", "run_study"]


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


def _trained_model(job: dict[str, Any], cfg: RunConfig, run_dir: Path) -> tuple[torch.nn.Module, FitSummary | None]:
    """The run's model and its training summary: trained (or resumed from its last checkpoint) for a trained row,
    seeded random init for the control."""
    if not job["trained"]:
        torch.manual_seed(job["seed"])
        return build_model(cfg.model_cfg()).eval(), None
    resume = bool(list_checkpoints(run_dir / "train"))
    summary = fit(cfg, job["store"], run_dir / "train", resume=resume)
    model, _ = load_encoder(summary.checkpoint)
    return model, summary


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) one (config, seed), embed both splits, evaluate every metric; cache result.json."""
    torch.set_num_threads(job["threads"])
    run_dir, result_path = Path(job["run_dir"]), Path(job["run_dir"]) / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_run_config(job["preset"], job["overrides"])
    t0 = time.perf_counter()
    model, summary = _trained_model(job, cfg, run_dir)
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    emb_train, emb_eval = embed_splits(model, job)
    embed_s = time.perf_counter() - t1
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
    }
    temperature = cfg.model_cfg().contrastive_temperature
    result.update(evaluate(emb_train, emb_eval, job, cfg.train.batch_size, temperature))
    result["train_s"], result["embed_s"] = train_s, embed_s
    result["eval_s"] = time.perf_counter() - t1
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(result_path)
    return result


def plan_jobs(study: Study, store: Path) -> list[dict[str, Any]]:
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
                "trained": study.specs[name].trained,
                "store": str(store),
                "run_dir": str(study.out / "runs" / f"{name}-{fp}" / f"seed{seed}"),
                "threads": study.threads,
                "probe_epochs": study.budget.probe_epochs,
                "probe_lr": study.budget.probe_lr,
                "linear_epochs": study.budget.linear_epochs,
                "linear_lr": study.budget.linear_lr,
                "probe_max_train": study.budget.probe_max_train,
                "eval_frame_stride": study.budget.eval_frame_stride,
                "ground_truth": str(study.out / "data" / "corpus" / "ground_truth.csv")
                if study.store is None
                else None,
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
                raise FileNotFoundError(f"--store {store} has no {split}/ split (need STORE/train and STORE/eval)")
    build_s = time.perf_counter() - t0
    jobs = plan_jobs(study, store)
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


def run_reproduce(study: Study) -> str:
    """The `reproduce` command: run `study` (from `make_study`) and return its Markdown tables."""
    return render_tables(run_study(study))


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


@functools.cache  # asked after every run; the machine does not change during a study
def _machine() -> dict[str, Any]:
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
        "git_rev": git_rev(),
    }


def git_rev() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
