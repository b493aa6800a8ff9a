"""The reproduction study's statistics and report: 95 % t-intervals, paired (same seed) deltas, the gate, one verdict
per claim of the paper, and the markdown tables of OUT/results.md."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from tgdp.experiments.reproduce.configs import (
    BASELINE,
    CONFIGS,
    CONTROL,
    EVAL_PROTOCOL,
    PAPER_TABLES,
    REFERENCE,
    TABLES,
    Study,
    fingerprint,
)
from tgdp.experiments.reproduce.multiplicity import holm

__all__ = [
    "ALPHA",
    "CLAIMS",
    "GATE_NCE_RATIO",
    "aggregate",
    "gain_over_control",
    "gate",
    "holm_cells",
    "metric_names",
    "paired",
    "paper_numbers",
    "per_seed_metrics",
    "render_tables",
    "stats",
    "t975",
    "verdict",
    "verdicts",
]


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


# The gate: before any comparison is read, the baseline must have learnt what a family of claims measures.
# v2 (one gate on the class-level linear probe) failed on the coupled corpus: training learns the instance latent that
# sound and picture share and discards class detail. v3, fixed before its study ran, gates each family of claims on
# what that family measures (REPRODUCTION.md, "Gate"):
# - retrieval: held-out InfoNCE/ln(B) well below 1, and the instance latent (or, without one, R@1) better decoded
#   than by the untrained control;
# - classification: the class-level linear probe (av) better than the untrained control.
GATE_NCE_RATIO = 0.85  # held-out InfoNCE (V→A) / ln(B): the upper 95 % bound over seeds must be at most this
CLASS_METRICS = ("attn probe", "linear a", "linear v", "linear av")  # claims on these belong to "classification"


def gain_over_control(trained: dict[int, float], control: dict[int, float]) -> dict[str, Any]:
    """The paired (same seed) gain trained − control; ok iff its 95 % interval lies above 0 and its mean exceeds
    the seed noise (the larger sample std over seeds of the two rows)."""
    gain = paired(trained, control)
    noise = max(stats(list(trained.values()))["std"], stats(list(control.values()))["std"])
    ok = bool(gain is not None and gain["n"] >= 2 and gain["lo"] > 0 and gain["mean"] > noise)
    return {"ok": ok, "gain": gain, "seed_noise": noise}


def gate(
    nce_ratio: dict[int, float],
    instance: tuple[str, dict[int, float], dict[int, float]],
    klass: tuple[str, dict[int, float], dict[int, float]],
) -> dict[str, Any]:
    """Per family: "retrieval" passes iff the upper 95 % t-bound of the baseline's held-out InfoNCE/ln(B) over seeds
    is ≤ GATE_NCE_RATIO and its instance metric beats the control (`gain_over_control`); "classification" passes
    iff its class metric beats the control. instance / klass: (metric name, baseline per seed, control per seed)."""
    nce = stats(list(nce_ratio.values()))
    nce_ok = bool(nce["n"] >= 2 and nce["hi"] <= GATE_NCE_RATIO)
    inst = {"metric": instance[0], **gain_over_control(instance[1], instance[2])}
    cls = {"metric": klass[0], **gain_over_control(klass[1], klass[2])}
    families = {
        "retrieval": {"passed": nce_ok and inst["ok"], "nce_ok": nce_ok, "instance": inst},
        "classification": {"passed": cls["ok"], "class": cls},
    }
    return {
        "passed": all(f["passed"] for f in families.values()),
        "families": families,
        "nce_ratio": nce,
        "threshold_nce_ratio": GATE_NCE_RATIO,
    }


def claim_family(metric: str) -> str:
    return "classification" if metric in CLASS_METRICS else "retrieval"


# per-run scalar metrics: key → function of result.json
def _metric_fns() -> dict[str, Any]:
    fns: dict[str, Any] = {}
    for d in ("v2a", "a2v"):
        for k in ("R@1", "R@5", "R@10"):
            fns[f"{d} {k}"] = lambda r, d=d, k=k: r["retrieval"][d][k]
            fns[f"class {d} {k}"] = lambda r, d=d, k=k: (r.get("class_retrieval") or {}).get(d, {}).get(k)
    fns["R@1 mean"] = lambda r: 0.5 * (r["retrieval"]["v2a"]["R@1"] + r["retrieval"]["a2v"]["R@1"])
    fns["R@10 mean"] = lambda r: 0.5 * (r["retrieval"]["v2a"]["R@10"] + r["retrieval"]["a2v"]["R@10"])
    fns["nce v2a"] = lambda r: r["heldout"]["nce_v2a"]
    fns["nce a2v"] = lambda r: r["heldout"]["nce_a2v"]
    fns["nce ratio"] = lambda r: r["heldout"]["nce_ratio_v2a"]
    for m in ("a", "v", "av"):
        fns[f"linear {m}"] = lambda r, m=m: r["linear"][m]
    fns["attn probe"] = lambda r: r["probe"]["metric"]
    for m in ("a", "v", "av"):
        fns[f"latent {m}"] = lambda r, m=m: (r.get("latent") or {}).get(m)
    for h in ("a_std_iso", "v_std_iso", "a_cos", "v_cos", "a_erank", "v_erank"):
        fns[h] = lambda r, h=h: r["health"].get(h)
    fns["train nce tail"] = lambda r: (r.get("train") or {}).get("contrastive_tail")
    fns["train_s"] = lambda r: r["train_s"]
    fns["eval_s"] = lambda r: r["eval_s"]
    return fns


DELTA_KEYS = ("v2a R@1", "a2v R@1", "v2a R@10", "a2v R@10", "class v2a R@1", "nce v2a", "latent av", "linear av",
              "attn probe")  # fmt: skip


def metric_names() -> tuple[str, ...]:
    """The per-run scalar metrics a study reports (and a design may name)."""
    return tuple(_metric_fns())


def per_seed_metrics(results: list[dict[str, Any]], study: Study) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """(row → metric → {seed: value}, row → its runs) for the study's rows, matched by fingerprint."""
    by_fp: dict[str, dict[int, dict[str, Any]]] = {}
    for r in results:
        by_fp.setdefault(r["fingerprint"], {})[r["seed"]] = r
    fns = _metric_fns()
    per_seed: dict[str, dict[str, dict[int, float]]] = {}
    runs_of: dict[str, list[dict]] = {}
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
        per_seed[name], runs_of[name] = vals, runs
    return per_seed, runs_of


def aggregate(results: list[dict[str, Any]], study: Study) -> dict[str, Any]:
    """Per config: stats over seeds of every metric; paired (same seed) deltas against TG-DP; the gate; verdicts."""
    per_seed, runs_of = per_seed_metrics(results, study)
    rows: dict[str, Any] = {}
    for name, runs in runs_of.items():
        row: dict[str, Any] = {"label": study.specs[name].label, "fingerprint": runs[0]["fingerprint"],
                               "seeds": [r["seed"] for r in runs]}  # fmt: skip
        row.update({key: stats(list(v.values())) for key, v in per_seed[name].items()})
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
        base, ctrl = per_seed[BASELINE], per_seed[CONTROL]
        inst = "latent av" if "latent av" in base and "latent av" in ctrl else "R@1 mean"
        g = gate(base["nce ratio"], (inst, base[inst], ctrl[inst]), ("linear av", base["linear av"], ctrl["linear av"]))
    return {
        "configs": rows,
        "gate": g,
        "verdicts": verdicts(per_seed, g) if study.claims else [],
        "seeds": study.seeds,
        "budget": asdict(study.budget),
        "corpus": None if study.store is not None else asdict(study.corpus),
        "scale": study.scale,
        "sets": study.sets,
        "eval_protocol": EVAL_PROTOCOL,
    }


# --- the paper's claims -----------------------------------------------------------------------------------------

# (claim, better row, worse row, metric). Each claim is oriented by the paper's own number for the SAME metric
# (`paper_numbers`): better − worse > 0 in the paper, so "reproduced in direction" means "as the paper's number goes".
CLAIMS: tuple[tuple[str, str, str, str], ...] = (
    ("TG-DP beats CAV-MAE Sync on V→A R@1", "tgdp", "cavmae_sync", "v2a R@1"),
    ("TG-DP beats CAV-MAE Sync on A→V R@1", "tgdp", "cavmae_sync", "a2v R@1"),
    ("TG-DP beats CAV-MAE Sync on the probe", "tgdp", "cavmae_sync", "attn probe"),
    ("dual pass helps A→V (R@1)", "dual_pass_75", "cavmae_sync", "a2v R@1"),
    ("dual pass helps A→V (R@10)", "dual_pass_75", "cavmae_sync", "a2v R@10"),
    ("ρ_c 0.2 retrieves better than 0.5 (R@1)", "ratio_0.2", "ratio_0.5", "R@1 mean"),
    # the paper's Table 6 R@1 is higher at 0.5 (31.3/30.3) than at 0 (30.4/29.8): the claim is oriented that way
    ("ρ_c 0.5 retrieves better than 0 (R@1)", "ratio_0.5", "ratio_0", "R@1 mean"),
    ("ρ_c 0.5 retrieves better than 0.65 (R@1)", "ratio_0.5", "ratio_0.65", "R@1 mean"),
    ("ρ_c 0.5 retrieves better than 0.75 (R@1)", "ratio_0.5", "ratio_0.75", "R@1 mean"),
    ("ρ_c 0.5 classifies better than 0.2", "ratio_0.5", "ratio_0.2", "attn probe"),
    ("ρ_c 0.5 classifies better than 0", "ratio_0.5", "ratio_0", "attn probe"),
    ("ρ_c 0.5 classifies better than 0.75", "ratio_0.5", "ratio_0.75", "attn probe"),
    ("distillation helps A→V (R@1)", "distill_on", "distill_off", "a2v R@1"),
    ("distillation helps classification", "distill_on", "distill_off", "attn probe"),
    ("distinct beats probabilistic (V→A R@1)", "mask_distinct", "mask_probabilistic", "v2a R@1"),
    ("distinct beats probabilistic (probe)", "mask_distinct", "mask_probabilistic", "attn probe"),
    ("distinct beats random (probe)", "mask_distinct", "mask_random", "attn probe"),
)
# PAPER_TABLES' value index per metric ("R@1 mean": the mean of V→A and A→V R@1)
_PAPER_INDEX = {"v2a R@1": (0,), "v2a R@5": (1,), "v2a R@10": (2,), "a2v R@1": (3,), "a2v R@5": (4,),
                "a2v R@10": (5,), "attn probe": (6,), "R@1 mean": (0, 3)}  # fmt: skip
ALPHA = 0.05  # family-wise error rate of each family of verdicts (Holm within the family)


def paper_numbers(better: str, worse: str, metric: str) -> dict[str, Any]:
    """The paper's values of `metric` for the two rows (PAPER_TABLES), their difference and a short citation."""
    vals, cite = [], []
    for row in (better, worse):
        table, name, nums = PAPER_TABLES[row]
        vals.append(float(np.mean([nums[i] for i in _PAPER_INDEX[metric]])))
        cite.append(f"T{table} {name}")
    return {"better": vals[0], "worse": vals[1], "delta": vals[0] - vals[1],
            "text": f"{vals[0]:.1f} vs {vals[1]:.1f} ({cite[0]} vs {cite[1]})"}  # fmt: skip


def verdict(delta: dict[str, Any] | None, adjusted: dict[str, Any] | None = None) -> str:
    """'reproduced in direction' (better − worse > 0, as the paper's number) / 'opposite to the paper' when the
    difference is resolved, else 'unresolved at this scale' (also with fewer than 2 paired seeds). Resolved: the
    Holm-adjusted test (`multiplicity.holm`) when `adjusted` is given, else the raw 95 % interval excludes 0."""
    if delta is None or delta["n"] < 2 or not math.isfinite(delta["lo"]):
        return "unresolved at this scale"
    resolved = adjusted["resolved"] if adjusted is not None else (delta["lo"] > 0 or delta["hi"] < 0)
    if not resolved:
        return "unresolved at this scale"
    return "reproduced in direction" if delta["mean"] > 0 else "opposite to the paper"


def _alias(name: str) -> str:
    # rows that are the full method by definition are the TG-DP run
    return REFERENCE if name in ("ratio_0.5", "distill_on", "mask_distinct") else name


def verdicts(per_seed: dict[str, dict[str, dict[int, float]]], g: dict[str, Any] | None = None) -> list[dict]:
    """One verdict per claim, Holm-corrected within its family (retrieval / classification; `multiplicity.holm`,
    family-wise α = ALPHA). A claim whose family's gate did not pass is 'unresolved at this scale (gate)'; its
    corrected direction is kept in `exploratory` and the uncorrected one in `raw`."""
    out = []
    for claim, better, worse, metric in CLAIMS:
        a, b = per_seed.get(better) or per_seed.get(_alias(better)), per_seed.get(worse) or per_seed.get(_alias(worse))
        d = paired(a[metric], b[metric]) if a and b and metric in a and metric in b else None
        family = claim_family(metric)
        gated = bool(g and g["families"][family]["passed"])
        out.append({"claim": claim, "paper": paper_numbers(better, worse, metric), "rows": [better, worse],
                    "metric": metric, "delta": d, "family": family, "gate_passed": gated})  # fmt: skip
    for family in ("retrieval", "classification"):
        members = [v for v in out if v["family"] == family]
        for v, adj in zip(members, holm([v["delta"] for v in members], ALPHA), strict=True):
            v["holm"] = adj
            v["raw"] = verdict(v["delta"])
            v["exploratory"] = verdict(v["delta"], adj) if adj else verdict(None)
            v["verdict"] = v["exploratory"] if v["gate_passed"] else "unresolved at this scale (gate)"
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


def _word(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def _table(head: list[str]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _gate_lines(g: dict[str, Any]) -> list[str]:
    ret, cls = g["families"]["retrieval"], g["families"]["classification"]
    inst, klass = ret["instance"], cls["class"]
    return [
        "### Gate (baseline = CAV-MAE Sync, control = untrained; per family of claims)",
        "",
        f"- retrieval, held-out InfoNCE V→A / ln(B): {_ms(g['nce_ratio'], 3)}, 95 % upper bound "
        f"{g['nce_ratio']['hi']:.3f} (must be ≤ {g['threshold_nce_ratio']}): **{_word(ret['nce_ok'])}**",
        f"- retrieval, `{inst['metric']}` gain over the control: {_ci(inst['gain'], 3)} vs seed noise "
        f"{inst['seed_noise']:.3f} (interval above 0 and mean above the noise): **{_word(inst['ok'])}**",
        f"- classification, `{klass['metric']}` gain over the control: {_ci(klass['gain'])} vs seed noise "
        f"{klass['seed_noise']:.1f}: **{_word(klass['ok'])}**",
        f"- retrieval claims: **{'TESTED' if ret['passed'] else 'NOT TESTED'}**; classification claims: "
        f"**{'TESTED' if cls['passed'] else 'NOT TESTED'}**",
        "",
    ]


def _paper_tables(rows: dict[str, Any]) -> list[str]:
    """One table per paper table: instance-level retrieval and the attention probe, ours beside the paper's."""
    metric_cols = [("v2a R@1", "V→A R@1"), ("v2a R@5", "R@5"), ("v2a R@10", "R@10"), ("a2v R@1", "A→V R@1"),
                   ("a2v R@5", "R@5"), ("a2v R@10", "R@10"), ("attn probe", "attn probe")]  # fmt: skip
    out: list[str] = []
    for key, title in TABLES.items():
        names = [n for n, spec in CONFIGS.items() if key in spec.tables and (n in rows or _alias(n) in rows)]
        if not names:
            continue
        out += [f"### {title}: retrieval (instance level) and attention probe", ""]
        out += _table(["row", "n", *[c for _, c in metric_cols], "paper (V→A R@1/5/10, A→V R@1/5/10, mAP)"])
        for n in names:
            r = rows.get(n) or rows[_alias(n)]
            paper = PAPER_TABLES.get(n)
            ptxt = f"T{paper[0]} {paper[1]}: " + " / ".join(f"{v:.1f}" for v in paper[2]) if paper else "–"
            cells = [f"`{n}` {CONFIGS[n].label}", str(len(r["seeds"]))]
            out.append(_row(cells + [_ms(r.get(k)) for k, _ in metric_cols] + [ptxt]))
        out.append("")
    return out


def _every_row_table(rows: dict[str, Any], order: list[str]) -> list[str]:
    out = ["### Every row: held-out InfoNCE, class-level retrieval, linear probes, instance-latent probes", ""]
    out += _table(["row", "NCE V→A", "NCE A→V", "NCE/lnB", "train NCE (last 20 %)", "class V→A R@1", "class A→V R@1",
                   "class V→A R@5", "linear a", "linear v", "linear av", "latent R² a", "latent R² v",
                   "latent R² av"])  # fmt: skip
    for n in order:
        r = rows[n]
        cells = [f"`{n}`", _ms(r.get("nce v2a"), 3), _ms(r.get("nce a2v"), 3), _ms(r.get("nce ratio"), 3)]
        cells += [_ms(r.get("train nce tail"), 3), _ms(r.get("class v2a R@1")), _ms(r.get("class a2v R@1"))]
        cells += [_ms(r.get("class v2a R@5")), _ms(r.get("linear a")), _ms(r.get("linear v")), _ms(r.get("linear av"))]
        cells += [_ms(r.get(f"latent {m}"), 3) for m in ("a", "v", "av")]
        out.append(_row(cells))
    return out


def _health_table(rows: dict[str, Any], order: list[str]) -> list[str]:
    out = ["", "### Health of the held-out global tokens (middle frame, all eval clips)", ""]
    out += _table(["row", "a std·√D", "v std·√D", "a cos", "v cos", "a erank", "v erank", "train s", "eval s"])
    for n in order:
        r = rows[n]
        cells = [f"`{n}`"] + [_ms(r.get(k), 3) for k in ("a_std_iso", "v_std_iso", "a_cos", "v_cos")]
        cells += [_ms(r.get(k), 1) for k in ("a_erank", "v_erank", "train_s", "eval_s")]
        out.append(_row(cells))
    return out


def _delta_table(rows: dict[str, Any], order: list[str]) -> list[str]:
    out = ["", f"### Paired Δ against `{REFERENCE}` (row − TG-DP, same seed; mean [95 % t-interval]; descriptive)", ""]
    out += _table(["row", *DELTA_KEYS])
    for n in order:
        if n == REFERENCE or not rows[n].get("delta"):
            continue
        d = rows[n]["delta"]
        out.append(_row([f"`{n}`", *[_ci(d.get(k), 2 if "nce" in k or "latent" in k else 1) for k in DELTA_KEYS]]))
    return out


def holm_cells(d: dict[str, Any] | None, adj: dict[str, Any] | None, digits: int = 1) -> list[str]:
    """Table cells of one Holm-corrected test: raw Δ [95 %], p, Holm p, Δ's adjusted interval with its level."""
    if not d or not adj:
        return [_ci(d, digits), "–", "–", "–"]
    f = f"{{:+.{digits}f}}"
    level = f"{100 * (1 - adj['alpha_i']):.2f} %"
    return [_ci(d, digits), f"{adj['p']:.3g}", f"{adj['p_holm']:.3g}",
            f"[{f.format(adj['lo_holm'])}, {f.format(adj['hi_holm'])}] at {level}"]  # fmt: skip


def _verdict_table(vs: list[dict[str, Any]]) -> list[str]:
    out = ["", "### Verdicts (better − worse, paired over seeds; Holm within each family, family-wise α 0.05)", ""]
    out += ["Each claim is oriented by the paper's number for the same metric (paper column: better vs worse). "
            "Families: retrieval (every non-probe metric) and classification (the probes); m = tests in the family. "
            "Holm interval: the paired t-interval at the test's Holm level 1 − α_i (REPRODUCTION.md, "
            "\"Multiplicity\"). A claim whose family failed the gate is not tested: its corrected direction is shown "
            "as exploratory only.", ""]  # fmt: skip
    head = ["claim", "paper", "rows", "metric", "family (m)", "Δ [raw 95 %]", "p", "Holm p", "Δ Holm interval",
            "raw verdict", "verdict (Holm)", "exploratory"]  # fmt: skip
    out += _table(head)
    for v in vs:
        rws = " − ".join(f"`{x}`" for x in v["rows"])
        m = v["holm"]["m"] if v.get("holm") else 0
        expl = "" if v["gate_passed"] else v["exploratory"]
        cells = [v["claim"], v["paper"]["text"], rws, v["metric"], f"{v['family']} ({m})"]
        out.append(_row(cells + holm_cells(v["delta"], v.get("holm")) + [v["raw"], v["verdict"], expl]))
    return out


def render_tables(agg: dict[str, Any]) -> str:
    """Markdown: the gate, one table per paper table (ours beside the paper's), paired deltas, health, verdicts."""
    rows = agg["configs"]
    out = [
        f"Seeds {agg['seeds']}; budget {agg['budget']}; scale {agg['scale']}; extra overrides {agg['sets']}.",
        "Cells: mean ± sample std over seeds. Δ: paired (same seed) difference, mean [95 % t-interval].",
        "",
    ]
    if agg.get("gate"):
        out += _gate_lines(agg["gate"])
    out += _paper_tables(rows) if agg.get("verdicts") else []
    order = [n for n in CONFIGS if n in rows] + [n for n in rows if n not in CONFIGS]
    out += _every_row_table(rows, order) + _health_table(rows, order)
    if any(r.get("delta") for r in rows.values()):
        out += _delta_table(rows, order)
    if agg.get("verdicts"):
        out += _verdict_table(agg["verdicts"])
    wall, load = agg.get("wall_s"), agg.get("load_avg_1min")
    if wall and load:
        out += ["", f"Wall time {wall['total']:.0f} s (store build {wall['build_store']:.0f} s); 1-min load average "
                    f"mean {load['mean']:.1f}, max {load['max']:.1f} over {load['samples']} samples."]  # fmt: skip
    return "\n".join(out) + "\n"
