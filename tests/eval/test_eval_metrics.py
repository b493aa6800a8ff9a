"""Average precision / mAP against hand-computed cases and a naive threshold-sweep reference; top-1."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tgdp.eval.metrics import average_precision, mean_average_precision, median_rank, recall_at_k, top1_accuracy


def _naive_ap(scores, target) -> float:
    """Sweep every distinct threshold from high to low: AP = Σ (R_n − R_{n−1}) · P_n."""
    scores = [float(s) for s in scores]
    target = [bool(t) for t in target]
    n_pos = sum(target)
    ap, prev_recall = 0.0, 0.0
    for th in sorted(set(scores), reverse=True):
        picked = [t for s, t in zip(scores, target, strict=True) if s >= th]
        tp = sum(picked)
        precision, recall = tp / len(picked), tp / n_pos
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


@pytest.mark.parametrize(
    ("scores", "target", "expected"),
    [
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 5 / 6),  # the sklearn documentation example
        ([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], 0.5 * 1 + 0.5 * 2 / 3),
        ([0.9, 0.8, 0.7], [1, 1, 1], 1.0),
        ([0.9, 0.8, 0.7], [0, 0, 1], 1 / 3),
        ([0.5, 0.5], [1, 0], 0.5),  # a tie is one threshold step
        ([0.5, 0.5, 0.9], [0, 1, 0], 1 / 3),
    ],
)
def test_ap_hand_computed(scores, target, expected) -> None:
    assert average_precision(np.array(scores), np.array(target)) == pytest.approx(expected)


def test_ap_without_positive_is_nan() -> None:
    assert math.isnan(average_precision(np.array([0.3, 0.2]), np.array([0, 0])))


def test_ap_matches_naive_reference_with_ties() -> None:
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(2, 60))
        # coarse scores produce many ties
        scores = rng.integers(0, 6 if trial % 2 else 1000, n).astype(np.float64)
        target = rng.random(n) < 0.3
        if not target.any():
            target[0] = True
        assert average_precision(scores, target) == pytest.approx(_naive_ap(scores, target), abs=1e-12)
        perm = rng.permutation(n)
        assert average_precision(scores[perm], target[perm]) == pytest.approx(_naive_ap(scores, target))


def test_map_skips_classes_without_positives() -> None:
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.2], [0.1, 0.7, 0.9]])
    targets = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]])
    m, ap = mean_average_precision(scores, targets)
    assert ap[0] == pytest.approx(1.0) and ap[1] == pytest.approx(1 / 2) and math.isnan(ap[2])
    assert m == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no class"):
        mean_average_precision(scores, np.zeros_like(targets))
    with pytest.raises(ValueError, match="want"):
        mean_average_precision(scores, targets[:, :2])


def test_top1_and_recall() -> None:
    assert top1_accuracy(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, 1])) == pytest.approx(200 / 3)
    assert recall_at_k(np.array([1, 2, 6, 11]), (1, 5, 10)) == {1: 25.0, 5: 50.0, 10: 75.0}
    assert median_rank(np.array([1, 2, 6, 11])) == 4.0
