"""Result tables laid out like the papers' Tables 1–3 (Markdown + JSON) and PNG plots (matplotlib, Agg backend).

- Retrieval: rows = models, per dataset the columns V→A R@1/5/10 then A→V R@1/5/10 (percent).
- Probing: rows = models, one column per (dataset, metric, modality, probe kind), e.g. "AS20K mAP".
Each table ends with a chance row, the seed-noise row (the reproduction study's per-figure seed SD) and one sentence
per figure saying which model did better, by how much, and whether the difference is inside the seed noise.
Inputs are the JSON files written by `tgdp-eval retrieval` / `tgdp-eval probe` (`"kind": "retrieval" | "probe"`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - after selecting the backend
import numpy as np  # noqa: E402

from tgdp.eval.metrics import recall_curve  # noqa: E402

__all__ = [
    "STUDY_SEED_SD",
    "compare",
    "load_results",
    "plot_recall_curves",
    "plot_similarity",
    "probe_table",
    "recall_chance",
    "retrieval_table",
    "seed_noise_from_study",
    "write_report",
]

_DIR_NAMES = {"v2a": "V→A", "a2v": "A→V"}


def load_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Result dicts from JSON files, or from every `*.json` with a `kind` key inside the given directories."""
    out = []
    for p in paths:
        p = Path(p)
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for f in files:
            data = json.loads(f.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("kind") in ("retrieval", "probe"):
                data.setdefault("source", str(f))
                out.append(data)
            elif not p.is_dir():
                raise ValueError(f"{f}: not a tgdp-eval result (no kind retrieval/probe)")
    return out


# Seed-to-seed noise of each figure, measured by the reproduction study (REPRODUCTION.md, study v3 of 2026-11-28:
# `make reproduce`, 5 seeds per row, tiny models, 600 steps × batch 16 on the coupled synthetic corpus, 180 eval
# clips): the sample std over seeds of CAV-MAE Sync and of TG-DP, the larger of the two (the study's own rule for
# "seed noise"). Keys are the study's metric names (results.json); `seed_noise_from_study` reads a newer run instead.
STUDY_SEED_SD: dict[str, float] = {
    "v2a R@1": 0.5,
    "v2a R@5": 1.8,
    "v2a R@10": 2.4,
    "a2v R@1": 0.6,
    "a2v R@5": 2.1,
    "a2v R@10": 3.2,
    "attn probe": 8.3,
    "linear a": 5.1,
    "linear v": 2.3,
    "linear av": 3.7,
    "nce v2a": 0.111,
}
_STUDY_ROWS = ("cavmae_sync", "tgdp")


def seed_noise_from_study(path: str | Path) -> dict[str, float]:
    """Per-metric seed SD from a reproduction study's results.json (`make reproduce`): for every metric both the
    CAV-MAE Sync and the TG-DP rows report, the larger of their sample stds over seeds."""
    rows = json.loads(Path(path).read_text(encoding="utf-8")).get("configs", {})
    if not all(r in rows for r in _STUDY_ROWS):
        raise ValueError(f"{path}: no {' / '.join(_STUDY_ROWS)} rows (not a reproduction study's results.json)")
    out = {}
    for key in STUDY_SEED_SD:
        sds = [rows[r][key].get("std") for r in _STUDY_ROWS if isinstance(rows[r].get(key), dict)]
        if len(sds) == len(_STUDY_ROWS) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in sds):
            out[key] = float(max(sds))
    return out


def compare(
    what: str,
    values: dict[str, float],
    *,
    higher_is_better: bool = True,
    chance: float | None = None,
    noise: float | None = None,
    unit: str = "",
    digits: int = 1,
) -> str:
    """One sentence: which model did better on one figure and by how much, against chance and the seed noise.

    `values`: model → figure (two or more models; the best is compared with the runner-up). `noise`: the seed SD
    of the figure; a difference no larger than it is "inside the seed noise" (one seed per model cannot tell them
    apart)."""
    f = f"{{:.{digits}f}}"
    pts = " points" if unit.strip() == "%" else unit  # a difference of percentages is in points
    ranked = sorted(values.items(), key=lambda kv: kv[1], reverse=higher_is_better)
    if len(ranked) < 2:
        return ""
    (best, b), (second, s2) = ranked[0], ranked[1]
    gap = abs(b - s2)
    if gap == 0:
        text = f"{what}: {best} and {second} tie at {f.format(b)}{unit}"
    else:
        text = f"{what}: {best} did better, {f.format(b)} vs {f.format(s2)}{unit} ({second}), by {f.format(gap)}{pts}"
    if chance is not None and math.isfinite(chance):
        text += f"; chance {f.format(chance)}{unit}"
    if noise is not None:
        inside = gap <= noise
        text += f"; the study's seed SD is {f.format(noise)}{pts}, so the difference is " + (
            "inside the seed noise" if inside else "larger than the seed noise"
        )
    if higher_is_better and b >= 99.5 and s2 >= 99.5:
        text += " (both at the ceiling: this figure cannot rank them)"
    elif chance is not None and (b <= chance if higher_is_better else b >= chance):
        text += " (both at or below chance: neither model learnt what this figure measures)"
    return text + "."


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _md(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def recall_chance(k: int, n: int) -> float:
    """R@k (percent) of a random ranking of `n` candidates with one match: k/N."""
    return 100.0 * min(k, n) / n if n > 0 else float("nan")


def _retrieval_summary(cell: dict[tuple[str, str], dict[str, Any]], ds: str, noise: dict[str, float]) -> list[str]:
    """Sentences for one dataset: the model ahead on most recall figures, then each figure's comparison."""
    models = [m for (m, d) in cell if d == ds]
    if len(models) < 2:
        return []
    n = min(cell[(m, ds)]["n_used"] for m in models)
    keys = [(d, k) for d in ("v2a", "a2v") for k in (1, 5, 10)]
    wins = {m: 0 for m in models}
    for d, k in keys:
        vals = {m: cell[(m, ds)]["metrics"][d][f"R@{k}"] for m in models}
        top = max(vals.values())
        if list(vals.values()).count(top) == 1:
            wins[max(vals, key=vals.get)] += 1
    ranked = sorted(models, key=lambda m: wins[m], reverse=True)
    lead = ranked[0]
    chance = f"{n} candidates per query: R@1/5/10 chance {recall_chance(1, n):.1f} / {recall_chance(5, n):.1f} / "
    chance += f"{recall_chance(10, n):.1f} %"
    if wins[lead] == wins[ranked[1]]:
        counts = ", ".join(f"{m} {wins[m]}" for m in ranked)
        ties = len(keys) - sum(wins.values())
        head = f"**{ds}: no model did better on most recall figures** (ahead on: {counts}; {ties} tied) ({chance})."
        return [head] + _figure_lines(cell, ds, models, keys, n, noise)
    others = [m for m in models if m != lead]
    mean_gap = sum(
        cell[(lead, ds)]["metrics"][d][f"R@{k}"] - max(cell[(o, ds)]["metrics"][d][f"R@{k}"] for o in others)
        for d, k in keys
    ) / len(keys)
    head = (
        f"**{ds}: {lead} did better on {wins[lead]} of {len(keys)} recall figures**, by {mean_gap:+.1f} points on "
        f"average over the runner-up ({chance})."
    )
    return [head] + _figure_lines(cell, ds, models, keys, n, noise)


def _figure_lines(
    cell: dict[tuple[str, str], dict[str, Any]], ds: str, models: list[str], keys: list, n: int, noise: dict
) -> list[str]:
    """One comparison sentence per recall figure of dataset `ds`."""
    lines = []
    for d, k in keys:
        vals = {m: cell[(m, ds)]["metrics"][d][f"R@{k}"] for m in models}
        name = f"{d} R@{k}"
        lines.append(
            "- " + compare(f"{_DIR_NAMES[d]} R@{k}", vals, chance=recall_chance(k, n), noise=noise.get(name), unit=" %")
        )
    return lines


def retrieval_table(
    results: Sequence[dict[str, Any]], noise: dict[str, float] | None = None
) -> tuple[str, dict[str, Any]]:
    """(Markdown, JSON-able dict) of retrieval results: rows = models, then the chance row (k/N) and the seed-noise
    row; columns = dataset × direction × R@K; then one sentence per dataset (and per figure) saying who did better."""
    md, table, _, _ = _retrieval_parts(results, noise)
    return md, table


def _retrieval_parts(results: Sequence[dict[str, Any]], noise: dict[str, float] | None) -> tuple[str, dict, dict, list]:
    """(Markdown, per-model table, chance per dataset, summary sentences) of the retrieval results."""
    noise = STUDY_SEED_SD if noise is None else noise
    res = [r for r in results if r.get("kind") == "retrieval"]
    models = list(dict.fromkeys(r["model"] or "?" for r in res))
    datasets = list(dict.fromkeys(r["dataset"] or "?" for r in res))
    cell = {(r["model"] or "?", r["dataset"] or "?"): r for r in res}
    header = ["Model"] + [f"{ds} {_DIR_NAMES[d]} R@{k}" for ds in datasets for d in ("v2a", "a2v") for k in (1, 5, 10)]
    rows, table = [], {}
    for m in models:
        row, table[m] = [m], {}
        for ds in datasets:
            r = cell.get((m, ds))
            table[m][ds] = None if r is None else {d: r["metrics"][d] for d in ("v2a", "a2v")}
            for d in ("v2a", "a2v"):
                row += [_fmt(None if r is None else r["metrics"][d][f"R@{k}"]) for k in (1, 5, 10)]
        rows.append(row)
    n_by_ds = {ds: min((r["n_used"] for (_, d), r in cell.items() if d == ds), default=0) for ds in datasets}
    chance = {ds: {f"R@{k}": recall_chance(k, n) for k in (1, 5, 10)} for ds, n in n_by_ds.items()}
    if rows:
        rows.append(
            ["chance (k/N)"] + [_fmt(chance[ds][f"R@{k}"]) for ds in datasets for _ in "va" for k in (1, 5, 10)]
        )
        rows.append(
            ["seed SD (study)"]
            + [_fmt(noise.get(f"{d} R@{k}")) for _ in datasets for d in ("v2a", "a2v") for k in (1, 5, 10)]
        )
    notes = [
        f"- {m} / {ds}: {r['n_used']} clips used of {r['n_list']} listed ({r['n_missing']} missing), "
        f"strategy {r['strategy']}, ties {r['ties']}, MedR V→A {r['metrics']['v2a']['MedR']:g} / "
        f"A→V {r['metrics']['a2v']['MedR']:g}"
        for (m, ds), r in cell.items()
    ]
    summary = [line for ds in datasets for line in _retrieval_summary(cell, ds, noise)]
    md = _md(header, rows) + ("\n\n" + "\n".join(notes) if notes else "")
    md += "\n\n" + "\n".join(summary) if summary else ""
    return md, table, chance, summary


def _probe_column(r: dict[str, Any]) -> str:
    col = f"{r['dataset'] or '?'} {r['metric_name']}"
    variant = [
        x
        for x in (r["modality"] if r["modality"] != "av" else "", r["probe"] if r["probe"] != "attention" else "")
        if x
    ]
    return col + (f" [{', '.join(variant)}]" if variant else "")


def _probe_chance(r: dict[str, Any]) -> float | None:
    """The result's recorded chance level, else 100/C for top-1 when the class count is known."""
    if r.get("chance") is not None:
        return float(r["chance"])
    if r.get("metric_name") == "top1" and r.get("n_classes"):
        return 100.0 / r["n_classes"]
    return None


def _probe_noise(r: dict[str, Any], noise: dict[str, float]) -> float | None:
    """The study measured the attention probe on both modalities and the linear probe on each (top-1)."""
    modality = r.get("modality", "av")
    if r.get("metric_name") != "top1" or (r.get("probe") != "linear" and modality != "av"):
        return None
    return noise.get(f"linear {modality}" if r.get("probe") == "linear" else "attn probe")


def probe_table(results: Sequence[dict[str, Any]], noise: dict[str, float] | None = None) -> tuple[str, dict[str, Any]]:
    """(Markdown, JSON-able dict) of probe results: rows = models, then the chance row and the seed-noise row;
    columns = dataset metric [modality, probe]; then one sentence per column saying who did better."""
    md, table, _, _ = _probe_parts(results, noise)
    return md, table


def _probe_parts(results: Sequence[dict[str, Any]], noise: dict[str, float] | None) -> tuple[str, dict, dict, list]:
    """(Markdown, per-model table, chance per column, summary sentences) of the probe results."""
    noise = STUDY_SEED_SD if noise is None else noise
    res = [r for r in results if r.get("kind") == "probe"]
    models = list(dict.fromkeys(r["model"] or "?" for r in res))
    cols = list(dict.fromkeys(_probe_column(r) for r in res))
    cell = {(r["model"] or "?", _probe_column(r)): r for r in res}
    rows = [[m] + [_fmt(cell[(m, c)]["metric"] if (m, c) in cell else None) for c in cols] for m in models]
    table = {m: {c: cell[(m, c)]["metric"] if (m, c) in cell else None for c in cols} for m in models}
    first = {c: next(r for r in res if _probe_column(r) == c) for c in cols}
    chance = {c: max((_probe_chance(r) or 0.0 for r in res if _probe_column(r) == c), default=0.0) for c in cols}
    chance = {c: v or None for c, v in chance.items()}
    if rows:
        rows.append(["chance"] + [_fmt(chance[c]) for c in cols])
        rows.append(["seed SD (study)"] + [_fmt(_probe_noise(first[c], noise)) for c in cols])
    summary = []
    for c in cols:
        vals = {m: cell[(m, c)]["metric"] for m in models if (m, c) in cell}
        line = compare(c, vals, chance=chance[c], noise=_probe_noise(first[c], noise), unit=" %")
        if line:
            summary.append("- " + line)
    md = _md(["Model", *cols], rows)
    if any(r.get("chance") is not None for r in res):
        md += (
            "\n\nChance: the test share of the most frequent class (top-1; at least 100/C), or the mean positive rate "
            "per class (mAP: what a random ranking scores)."
        )
    md += "\n\n" + "\n".join(summary) if summary else ""
    return md, table, chance, summary


def write_report(
    results: Sequence[dict[str, Any]], out_dir: str | Path, noise: dict[str, float] | None = None
) -> tuple[Path, Path]:
    """Write report.md and report.json (both tables, chance levels, seed noise, who did better) into out_dir.

    `noise`: per-figure seed SD (default `STUDY_SEED_SD`)."""
    noise = STUDY_SEED_SD if noise is None else noise
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    r_md, r_json, r_chance, r_summary = _retrieval_parts(results, noise)
    p_md, p_json, p_chance, p_summary = _probe_parts(results, noise)
    md = ["# Evaluation report", ""]
    md += [
        "Each figure is one training run (one seed). Beside the figures: chance, and the seed-to-seed SD the "
        "reproduction study measured for the same figure (REPRODUCTION.md); a difference no larger than that SD "
        "is inside the seed noise: one seed per model cannot tell the models apart on it. The study measured the SD "
        "with 180 held-out clips after 600 steps; on another set-up it is a guide, not a measurement.",
        "",
    ]
    md += ["## Zero-shot retrieval (R@K, %)", "", r_md, ""] if r_json else []
    md += ["## Probing (mAP / top-1, %)", "", p_md, ""] if p_json else []
    md_path, json_path = out_dir / "report.md", out_dir / "report.json"
    md_path.write_text("\n".join(md), encoding="utf-8")
    doc = {
        "retrieval": r_json,
        "probe": p_json,
        "chance": {"retrieval": r_chance, "probe": p_chance},
        "summary": {"retrieval": r_summary, "probe": p_summary},
        "seed_sd": noise,
    }
    json_path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return md_path, json_path


def plot_recall_curves(ranks: dict[str, np.ndarray], path: str | Path, title: str = "", max_k: int = 100) -> Path:
    """R@K (percent) against K for each direction ("v2a", "a2v" → [N] 1-based ranks); log-scaled K axis."""
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for name, r in ranks.items():
        k = min(max_k, len(r))
        ax.plot(np.arange(1, k + 1), recall_curve(r, k), label=_DIR_NAMES.get(name, name))
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title or "Retrieval recall@K")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_similarity(sim: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Heat map of a [n, n] similarity block (rows: audio queries, columns: visual candidates)."""
    fig, ax = plt.subplots(figsize=(4.6, 4), dpi=120)
    im = ax.imshow(sim, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xlabel("visual clip j")
    ax.set_ylabel("audio clip i")
    ax.set_title(title or "sim(a_i, v_j)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
