"""One run's evaluation on the held-out split: held-out InfoNCE, instance- and class-level retrieval, standardised
linear probes, the attention probe, instance-latent ridge probes and the health of the global tokens."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tgdp.eval.embed import embed_store
from tgdp.eval.health import heldout_infonce as chunked_infonce
from tgdp.eval.probe import ProbeConfig, train_probe
from tgdp.eval.retrieval import run_retrieval, similarity_matrix
from tgdp.model.health import health_metrics
from tgdp.store import Store

__all__ = ["RIDGE_ALPHAS", "class_recall", "embed_splits", "evaluate", "heldout_infonce", "latent_r2", "read_latents"]


def _probe_task(labels: list[list[str]]) -> str:
    return "multiclass" if all(len(x) == 1 for x in labels) else "multilabel"


def heldout_infonce(emb_a: np.ndarray, emb_v: np.ndarray, batch: int, temperature: float) -> dict[str, float]:
    """InfoNCE of held-out clips, as training scores it: per frame t, consecutive chunks of `batch` clips (the last,
    shorter chunk dropped), each (frame t, segment t) pair against the chunk's other clips (`tgdp.eval.health`'s
    chunked InfoNCE); mean over frames. emb_*: [N, T, D]. Returns V→A (Eq. 4, the trained direction of Sync and
    TG-DP), A→V, and / ln(batch)."""
    a, v = torch.from_numpy(np.asarray(emb_a, np.float32)), torch.from_numpy(np.asarray(emb_v, np.float32))
    per_frame = [
        (chunked_infonce(a[:, k], v[:, k], batch, temperature, False),  # CE over audios for each video
         chunked_infonce(v[:, k], a[:, k], batch, temperature, False))
        for k in range(a.shape[1])
    ]  # fmt: skip
    b = per_frame[0][0][1]
    out = {
        "nce_v2a": float(np.mean([v2a for (v2a, _), _ in per_frame])),
        "nce_a2v": float(np.mean([a2v for _, (a2v, _) in per_frame])),
        "nce_batch": b,
        "ln_batch": math.log(b),
    }
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
    sim = similarity_matrix(emb.emb_a, emb.emb_v)  # [audio i, video j]
    return {"v2a": class_recall(sim.T, labels), "a2v": class_recall(sim, labels)}


def _health(emb) -> dict[str, float]:
    """Health figures (tgdp.model.health) of the held-out global tokens at the middle frame, all eval clips."""
    t = emb.emb_a.shape[1] // 2
    h = health_metrics(torch.from_numpy(np.ascontiguousarray(emb.emb_a[:, t])), torch.from_numpy(emb.emb_v[:, t]))
    return {k: float(v) for k, v in h.items()}


def _probe(job: dict[str, Any], emb_train, emb_eval, task: str, modality: str, linear: bool) -> float:
    if linear:  # mean over frames → BatchNorm(affine=False) → Linear: a standardised linear probe
        pcfg = ProbeConfig(
            task=task,
            modality=modality,
            linear=True,
            epochs=job["linear_epochs"],
            lr=job["linear_lr"],
            seed=job["seed"],
        )
    else:  # the paper's attention probe on [g_v, g_a]; heads derived from the width (`eval.probe.probe_heads`)
        pcfg = ProbeConfig(
            task=task,
            modality=modality,
            epochs=job["probe_epochs"],
            lr=job["probe_lr"],
            seed=job["seed"],
        )
    return float(train_probe(emb_train, emb_eval, pcfg).metric)


RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def latent_r2(x_train: np.ndarray, u_train: np.ndarray, x_eval: np.ndarray, u_eval: np.ndarray) -> float:
    """Held-out R² of a ridge probe of a scalar per-clip latent. x_*: [N, D] features, standardised with the train
    split's mean/std; u_*: [N]. The ridge weight is chosen from RIDGE_ALPHAS by 5-fold CV on the train split only;
    R² = 1 − SSE/SST on the eval split (0 = predicting the eval mean, < 0 = worse)."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    xt, xe = (x_train - mu) / sd, (x_eval - mu) / sd

    def fit(x: np.ndarray, u: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
        um = float(u.mean())
        w = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (u - um))
        return w, um

    folds = np.arange(len(u_train)) % 5
    cv = []
    for alpha in RIDGE_ALPHAS:
        sse = 0.0
        for k in range(5):
            w, um = fit(xt[folds != k], u_train[folds != k], alpha)
            sse += float(((xt[folds == k] @ w + um - u_train[folds == k]) ** 2).sum())
        cv.append(sse)
    w, um = fit(xt, u_train, RIDGE_ALPHAS[int(np.argmin(cv))])
    sst = float(((u_eval - u_eval.mean()) ** 2).sum())
    return 1.0 - float(((xe @ w + um - u_eval) ** 2).sum()) / max(sst, 1e-12)


def _latent_probes(emb_train, emb_eval, latents: dict[str, float]) -> dict[str, float] | None:
    """Ridge R² of the corpus's instance latent from the mean-over-frames global tokens: audio, vision, both.
    None when the clips carry no latent (a real store, or a synth profile without one)."""
    if not latents or not all(c in latents for c in [*emb_train.clip_ids, *emb_eval.clip_ids]):
        return None
    feats = {}
    for name, emb in (("train", emb_train), ("eval", emb_eval)):
        a, v = emb.emb_a.astype(np.float64).mean(1), emb.emb_v.astype(np.float64).mean(1)
        feats[name] = {"a": a, "v": v, "av": np.concatenate([a, v], axis=1)}
    u_tr = np.array([latents[c] for c in emb_train.clip_ids])
    u_ev = np.array([latents[c] for c in emb_eval.clip_ids])
    return {m: latent_r2(feats["train"][m], u_tr, feats["eval"][m], u_ev) for m in ("a", "v", "av")}


def read_latents(ground_truth: str | None) -> dict[str, float]:
    """clip_id → the instance latent of a synth corpus's ground truth (clips without one are left out)."""
    if not ground_truth or not Path(ground_truth).is_file():
        return {}
    with open(ground_truth, newline="", encoding="utf-8") as fh:
        return {r["clip_id"]: float(r["latent"]) for r in csv.DictReader(fh) if r.get("latent")}


def embed_splits(model: torch.nn.Module, job: dict[str, Any]) -> tuple[Any, Any]:
    """Global tokens of every `eval_frame_stride`-th frame: (train split, a fixed random subset of at most
    `probe_max_train` clips; eval split, every clip), as `tgdp.eval` embedding tables."""
    train_store, eval_store = Store.open(job["store"], split="train"), Store.open(job["store"], split="eval")
    rows = None
    if len(train_store) > job["probe_max_train"]:  # a real store: a fixed random subset trains the probes
        rows = sorted(np.random.default_rng(0).choice(len(train_store), job["probe_max_train"], replace=False))
    frames = range(0, int(eval_store.meta["frames"]["n"]), job["eval_frame_stride"])
    with torch.no_grad():
        emb_train = embed_store(model, train_store, rows=rows, batch_size=16, frames=frames)
        emb_eval = embed_store(model, eval_store, batch_size=16, frames=frames)
    return emb_train, emb_eval


def evaluate(emb_train: Any, emb_eval: Any, job: dict[str, Any], batch_size: int, temperature: float) -> dict[str, Any]:
    """Every metric of one run from its embedded splits (result.json's metric keys, in their order). `batch_size`
    and `temperature`: the run's training batch and contrastive temperature, for the held-out InfoNCE."""
    ret = run_retrieval(emb_eval, model=job["name"], dataset="eval")
    eval_labels = list(emb_eval.labels)
    task = _probe_task(list(emb_train.labels) + eval_labels)
    result: dict[str, Any] = {
        "n_eval": len(emb_eval),
        "n_probe_train": len(emb_train),
        "retrieval": ret.metrics,
        "heldout": heldout_infonce(emb_eval.emb_a, emb_eval.emb_v, batch_size, temperature),
        "health": _health(emb_eval),
        "probe_task": task,
    }
    if task == "multiclass":
        result["class_retrieval"] = _class_level(emb_eval, [lab[0] for lab in eval_labels])
    result["linear"] = {m: _probe(job, emb_train, emb_eval, task, m, True) for m in ("a", "v", "av")}
    result["latent"] = _latent_probes(emb_train, emb_eval, read_latents(job.get("ground_truth")))
    result["probe"] = {
        "metric_name": "top1" if task == "multiclass" else "mAP",
        "metric": _probe(job, emb_train, emb_eval, task, "av", False),
    }
    return result
