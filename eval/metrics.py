"""Evaluation metrics in numpy: tie-safe retrieval ranks → recall@K / median rank, average precision, top-1.

Ranks are 1-based. Average precision follows the definition of `sklearn.metrics.average_precision_score` (the one
the CAV-MAE family reports): AP = Σ_n (R_n − R_{n−1}) P_n over the distinct score thresholds, so tied scores form
one step, and mAP averages over the classes that have at least one positive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "average_precision",
    "mean_average_precision",
    "median_rank",
    "recall_at_k",
    "recall_curve",
    "top1_accuracy",
]


def recall_at_k(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Percentage of queries whose 1-based rank is ≤ K, for each K. ranks: [N] ints ≥ 1."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("recall_at_k: no ranks")
    return {int(k): float(np.mean(ranks <= k) * 100.0) for k in ks}


def recall_curve(ranks: np.ndarray, max_k: int | None = None) -> np.ndarray:
    """R@K in percent for K = 1..max_k (default: the number of queries). Returns [max_k] float64."""
    ranks = np.asarray(ranks, dtype=np.int64)
    max_k = int(max_k or ranks.size)
    counts = np.bincount(np.clip(ranks, 1, max_k + 1), minlength=max_k + 2)[1 : max_k + 1]
    return np.cumsum(counts) / ranks.size * 100.0


def median_rank(ranks: np.ndarray) -> float:
    """Median of the 1-based ranks (the released `MR` = median of 0-based ranks + 1 is the same number)."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("median_rank: no ranks")
    return float(np.median(ranks))


def average_precision(scores: np.ndarray, target: np.ndarray) -> float:
    """AP of one class. scores: [N] float, target: [N] {0,1}. NaN when the class has no positive.

    Tied scores are one threshold step (sklearn semantics), so the result does not depend on the input order.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    target = np.asarray(target).ravel() > 0
    if scores.shape != target.shape:
        raise ValueError(f"average_precision: scores {scores.shape} vs target {target.shape}")
    n_pos = int(target.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], target[order]
    tp = np.cumsum(t)
    # last index of each run of equal scores = the points where the threshold can be placed
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp_at = tp[last].astype(np.float64)
    precision = tp_at / (last + 1)
    recall = tp_at / n_pos
    d_recall = np.diff(np.r_[0.0, recall])
    return float(np.sum(d_recall * precision))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """mAP over classes with ≥ 1 positive. scores, targets: [N, C]. Returns (mAP, per-class AP [C], NaN if no pos)."""
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"mean_average_precision: scores {scores.shape} vs targets {targets.shape}; want [N, C]")
    ap = np.array([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])
    valid = ~np.isnan(ap)
    if not valid.any():
        raise ValueError("mean_average_precision: no class has a positive example")
    return float(ap[valid].mean()), ap


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Percentage of rows whose arg-max equals the label. logits: [N, C], labels: [N] int."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"top1_accuracy: logits {logits.shape} vs labels {labels.shape}")
    return float(np.mean(logits.argmax(axis=1) == labels) * 100.0)
