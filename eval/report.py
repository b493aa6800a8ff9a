"""Result tables laid out like the papers' Tables 1–3 (Markdown + JSON) and PNG plots (matplotlib, Agg backend).

- Retrieval: rows = models, per dataset the columns V→A R@1/5/10 then A→V R@1/5/10 (percent).
- Probing: rows = models, one column per (dataset, metric, modality, probe kind), e.g. "AS20K mAP".
Inputs are the JSON files written by `tgdp-eval retrieval` / `tgdp-eval probe` (`"kind": "retrieval" | "probe"`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - after selecting the backend
import numpy as np  # noqa: E402

from tgdp.eval.metrics import recall_curve  # noqa: E402

__all__ = [
    "load_results",
    "plot_recall_curves",
    "plot_similarity",
    "probe_table",
    "retrieval_table",
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


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _md(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def retrieval_table(results: Sequence[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """(Markdown, JSON-able dict) of retrieval results: rows = models, columns = dataset × direction × R@K."""
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
    notes = [
        f"- {m} / {ds}: {r['n_used']} clips used of {r['n_list']} listed ({r['n_missing']} missing), "
        f"strategy {r['strategy']}, ties {r['ties']}, MedR V→A {r['metrics']['v2a']['MedR']:g} / "
        f"A→V {r['metrics']['a2v']['MedR']:g}"
        for (m, ds), r in cell.items()
    ]
    md = _md(header, rows) + ("\n\n" + "\n".join(notes) if notes else "")
    return md, table


def _probe_column(r: dict[str, Any]) -> str:
    col = f"{r['dataset'] or '?'} {r['metric_name']}"
    variant = [
        x
        for x in (r["modality"] if r["modality"] != "av" else "", r["probe"] if r["probe"] != "attention" else "")
        if x
    ]
    return col + (f" [{', '.join(variant)}]" if variant else "")


def probe_table(results: Sequence[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """(Markdown, JSON-able dict) of probe results: rows = models, columns = dataset metric [modality, probe]."""
    res = [r for r in results if r.get("kind") == "probe"]
    models = list(dict.fromkeys(r["model"] or "?" for r in res))
    cols = list(dict.fromkeys(_probe_column(r) for r in res))
    cell = {(r["model"] or "?", _probe_column(r)): r["metric"] for r in res}
    rows = [[m] + [_fmt(cell.get((m, c))) for c in cols] for m in models]
    table = {m: {c: cell.get((m, c)) for c in cols} for m in models}
    return _md(["Model", *cols], rows), table


def write_report(results: Sequence[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """Write report.md and report.json (both tables) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    r_md, r_json = retrieval_table(results)
    p_md, p_json = probe_table(results)
    md = ["# Evaluation report", ""]
    md += ["## Zero-shot retrieval (R@K, %)", "", r_md, ""] if r_json else []
    md += ["## Probing (mAP / top-1, %)", "", p_md, ""] if p_json else []
    md_path, json_path = out_dir / "report.md", out_dir / "report.json"
    md_path.write_text("\n".join(md), encoding="utf-8")
    json_path.write_text(json.dumps({"retrieval": r_json, "probe": p_json}, indent=2), encoding="utf-8")
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
