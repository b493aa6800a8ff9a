"""Multiplicity: Student-t p-values of paired differences and Holm's step-down correction within a family of tests,
with the adjusted interval each test's Holm level gives.

Method (REPRODUCTION.md, "Multiplicity"): in a family of m tests, sort the two-sided t-test p-values p_(1) ≤ … ≤ p_(m);
the Holm-adjusted p-value is p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)) and a test is resolved iff p̃ < α. The
adjusted interval of the i-th ranked test is the paired t-interval at level 1 − α_i, with α_i = α / (m − min(i, r) + 1)
and r the rank of the first test Holm does not resolve: so an adjusted interval excludes 0 exactly when Holm resolves
the test (for ranks ≥ r the level stops growing, which keeps later intervals, whose p-values are larger, over 0).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["holm", "holm_adjust", "t_cdf", "t_interval", "t_pvalue", "t_quantile"]


def t_cdf(x: float, df: int) -> float:
    """P(T ≤ x) for Student's t with integer df ≥ 1, in closed form (Abramowitz & Stegun 26.7.3–26.7.4)."""
    if df < 1 or int(df) != df:
        raise ValueError(f"t_cdf needs an integer df >= 1, got {df}")
    theta = math.atan(x / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    c2, term, total = c * c, 1.0, 1.0
    if df % 2:  # odd: A = (2/π)(θ + sinθ·cosθ·(1 + 2/3 c² + 2·4/(3·5) c⁴ + … up to c^(df−3)))
        for k in range(1, (df - 3) // 2 + 1):
            term *= 2 * k / (2 * k + 1) * c2
            total += term
        a = 2 / math.pi * (theta + (s * c * total if df > 1 else 0.0))
    else:  # even: A = sinθ·(1 + 1/2 c² + 1·3/(2·4) c⁴ + … up to c^(df−2))
        for k in range(1, (df - 2) // 2 + 1):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        a = s * total
    return min(max(0.5 + 0.5 * a, 0.0), 1.0)  # A = P(|T| < |x|)·sign(x)


def t_quantile(p: float, df: int) -> float:
    """The x with t_cdf(x, df) = p, 0 < p < 1 (bisection to 1e-10)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile needs 0 < p < 1, got {p}")
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-10:
            break
    return 0.5 * (lo + hi)


def _se(d: dict[str, Any]) -> float:
    return d["std"] / math.sqrt(d["n"])


def t_pvalue(d: dict[str, Any]) -> float:
    """Two-sided one-sample t-test p-value of a paired difference's mean against 0 (d: `report.stats` output,
    n ≥ 2). A zero spread gives 0 for a non-zero mean and 1 for a zero mean."""
    se = _se(d)
    if se == 0 or not math.isfinite(se):
        return 0.0 if d["mean"] != 0 and se == 0 else 1.0
    return min(1.0, 2.0 * (1.0 - t_cdf(abs(d["mean"]) / se, d["n"] - 1)))


def t_interval(d: dict[str, Any], alpha: float) -> tuple[float, float]:
    """The two-sided (1 − alpha) t-interval of the mean of `d` (n ≥ 2)."""
    half = t_quantile(1.0 - alpha / 2.0, d["n"] - 1) * _se(d)
    return d["mean"] - half, d["mean"] + half


def holm_adjust(pvalues: list[float], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Holm's step-down over one family: per test (input order) its p, adjusted p, rank (1 = smallest p), the level
    α_i of its adjusted interval, and whether it is resolved (adjusted p < alpha)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out: list[dict[str, Any]] = [{} for _ in range(m)]
    running, first_kept = 0.0, None
    for rank, i in enumerate(order, start=1):
        running = max(running, min(1.0, (m - rank + 1) * pvalues[i]))
        resolved = running < alpha
        if not resolved and first_kept is None:
            first_kept = rank
        level_rank = rank if first_kept is None else first_kept
        out[i] = {"p": pvalues[i], "p_holm": running, "rank": rank, "resolved": resolved,
                  "alpha_i": alpha / (m - level_rank + 1)}  # fmt: skip
    return out


def holm(deltas: list[dict[str, Any] | None], alpha: float = 0.05) -> list[dict[str, Any] | None]:
    """Holm over a family of paired differences (`report.stats` outputs; None or n < 2 = not testable, left out of
    the family). Per test: `holm_adjust`'s figures plus the adjusted interval `lo_holm`, `hi_holm`, and `m`."""
    testable = [(i, d) for i, d in enumerate(deltas) if d is not None and d["n"] >= 2 and math.isfinite(d["std"])]
    adj = holm_adjust([t_pvalue(d) for _, d in testable], alpha)
    out: list[dict[str, Any] | None] = [None] * len(deltas)
    for (i, d), a in zip(testable, adj, strict=True):
        if _se(d) == 0:
            lo = hi = d["mean"]
        else:
            lo, hi = t_interval(d, a["alpha_i"])
        out[i] = {**a, "lo_holm": lo, "hi_holm": hi, "m": len(testable)}
    return out
