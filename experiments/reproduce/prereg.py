"""Running a pre-registered design (`design.load_design`) once, and deciding by its rule.

The runner takes nothing from the command line that changes the experiment: corpus, budget, arms, seeds, contrasts,
α and rule all come from the design file, whose sha256 (and the git commit) the report records. The runs go
through the reproduction study's machinery (`study.run_study`: cached per (arm, seed), deterministic on CPU), then:
- every family of contrasts is Holm-corrected at the design's α (`multiplicity.holm`), raw and adjusted intervals;
- the rule decides: `confirm` (confirmed / refuted / inconclusive) or `select_default` (which arm is the default).
OUT/prereg.json and OUT/prereg.md hold the design's hash, the CPU time, the families and the decision.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tgdp.experiments.reproduce.configs import Study
from tgdp.experiments.reproduce.design import Design, load_design, specs
from tgdp.experiments.reproduce.multiplicity import holm
from tgdp.experiments.reproduce.report import gate, holm_cells, paired, per_seed_metrics
from tgdp.experiments.reproduce.study import git_rev, plan_jobs, run_study

__all__ = ["decide", "design_study", "families", "render_prereg", "run_design"]


def design_study(design: Design, out: Path, jobs: int = 2, threads: int = 1) -> Study:
    """The design as a reproduction Study (synthetic corpus built under OUT/data; no v3 pins, no v3 claims)."""
    return Study(out=Path(out), store=None, configs=list(design.arms), seeds=list(design.seeds),
                 corpus=design.corpus_obj(), budget=design.budget_obj(), specs=specs(design), jobs=jobs,
                 threads=threads, claims=False)  # fmt: skip


def families(design: Design, per_seed: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per family: each contrast's paired difference (better − worse, same seed), its Holm figures within the family
    and its label: "supports" / "against" (Holm-resolved, in / against the hypothesis's direction) or "unresolved"."""
    out: dict[str, list[dict[str, Any]]] = {}
    for fam, contrasts in design.families.items():
        rows = []
        for c in contrasts:
            a, b = per_seed.get(c.better, {}).get(c.metric), per_seed.get(c.worse, {}).get(c.metric)
            rows.append({**c.model_dump(), "delta": paired(a, b) if a and b else None})
        for row, adj in zip(rows, holm([r["delta"] for r in rows], design.alpha), strict=True):
            sign = 1.0 if row["direction"] == "higher" else -1.0
            row["holm"] = adj
            row["label"] = "unresolved"
            if adj and adj["resolved"]:
                row["label"] = "supports" if sign * row["delta"]["mean"] > 0 else "against"
        out[fam] = rows
    return out


def _gate(design: Design, per_seed: dict[str, Any]) -> dict[str, Any] | None:
    if design.gate is None or design.gate["baseline"] not in per_seed or design.gate["control"] not in per_seed:
        return None
    base, ctrl = per_seed[design.gate["baseline"]], per_seed[design.gate["control"]]
    inst = "latent av" if "latent av" in base and "latent av" in ctrl else "R@1 mean"
    return gate(base["nce ratio"], (inst, base[inst], ctrl[inst]), ("linear av", base["linear av"], ctrl["linear av"]))


def decide(design: Design, fams: dict[str, list[dict[str, Any]]], g: dict[str, Any] | None) -> dict[str, Any]:
    """The design's rule applied to its families (and the gate, for `confirm`)."""
    rule = design.rule
    short = [c for c in fams[rule.family] if c["delta"] is None or c["delta"]["n"] < len(design.seeds)]
    if g is not None and g["nce_ratio"]["n"] < len(design.seeds):
        short.append({"better": design.gate["baseline"] if design.gate else "", "worse": "gate"})
    if short:  # the rule is stated for every seed of the design: no decision on part of them
        missing = ", ".join(f"{c['better']} − {c['worse']}" for c in short)
        return {"outcome": "pending", "why": f"not every seed has finished for: {missing}"}
    if rule.kind == "confirm":
        c = fams[rule.family][0]
        d = c["delta"]
        if g is None or not g["families"]["retrieval"]["passed"]:
            return {"outcome": "inconclusive", "why": "the retrieval gate did not pass (or could not be computed)"}
        if d is None or d["n"] < 2:
            return {"outcome": "inconclusive", "why": "fewer than 2 paired seeds"}
        sign = 1.0 if c["direction"] == "higher" else -1.0
        lo, hi = sorted((sign * d["lo"], sign * d["hi"]))
        if lo > 0:
            return {"outcome": "confirmed", "why": f"directed 95 % interval [{lo:+.2f}, {hi:+.2f}] lies above 0"}
        if hi < rule.margin:
            why = f"directed 95 % interval [{lo:+.2f}, {hi:+.2f}] lies below the margin {rule.margin:+.2f}"
            return {"outcome": "refuted", "why": why}
        why = f"directed 95 % interval [{lo:+.2f}, {hi:+.2f}] contains 0 and reaches the margin {rule.margin:+.2f}"
        return {"outcome": "inconclusive", "why": why}
    winners = [c for c in fams[rule.family] if c["label"] == "supports" and c["worse"] == rule.current_default]
    best = max(winners, key=lambda c: c["delta"]["mean"], default=None)
    benefit = [c["better"] for c in fams.get(rule.benefit_family or "", []) if c["label"] == "supports"]
    return {
        "outcome": best["better"] if best else rule.current_default,
        "why": f"{best['better']} beats {rule.current_default} (Holm)"
        if best
        else f"no arm beats {rule.current_default} after Holm: the default stays",
        "winners": [c["better"] for c in winners],
        "benefit": benefit,
    }


def _cpu_s() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_design(path: Path, out: Path, jobs: int = 2, threads: int = 1, report: bool = False) -> dict[str, Any]:
    """Load and check the design, run every (arm, seed) not yet cached, decide; write OUT/prereg.{json,md}.
    `report`: train nothing, only read the cached runs (of a study still running or cut short) and write
    OUT/prereg-partial.{json,md}; a contrast or gate short of any seed leaves the decision "pending"."""
    design, sha = load_design(path)
    rev = git_rev()  # the code the runs start from (the tree may move on while they run)
    study = replace(design_study(design, out, jobs, threads), report_only=report)
    t0, cpu0 = time.perf_counter(), _cpu_s()
    agg = run_study(study)
    store = study.out / "data" / "store"
    paths = [Path(j["run_dir"]) / "result.json" for j in plan_jobs(study, store)]
    results = [json.loads(p.read_text()) for p in paths if p.exists()]
    per_seed, _ = per_seed_metrics(results, study)
    fams = families(design, per_seed)
    g = _gate(design, per_seed)
    out_report = {
        "design": str(path),
        "design_sha256": sha,
        "git_rev": rev,
        "study": design.study,
        "question": design.question,
        "seeds": design.seeds,
        "corpus": asdict(study.corpus),
        "budget": asdict(study.budget),
        "runs": len(results),
        "runs_planned": len(paths),
        "partial": report,
        "gate": g,
        "families": fams,
        "decision": decide(design, fams, g),
        "wall_s": time.perf_counter() - t0,
        "cpu_s": _cpu_s() - cpu0,
        "jobs": jobs,
        "threads": threads,
        "rows": agg["configs"],
    }
    name = "prereg-partial" if report else "prereg"
    (study.out / f"{name}.json").write_text(json.dumps(out_report, indent=1))
    (study.out / f"{name}.md").write_text(render_prereg(out_report))
    return out_report


def render_prereg(rep: dict[str, Any]) -> str:
    """Markdown: the design's identity, the gate, each family's Holm table, the decision."""
    out = [f"# Pre-registered study `{rep['study']}`", "", rep["question"], "",
           f"- design: `{rep['design']}`, sha256 `{rep['design_sha256']}`; code at commit `{rep['git_rev']}`",
           f"- seeds {rep['seeds']}; {rep['runs']} of {rep['runs_planned']} runs finished; {rep['jobs']} jobs × "
           f"{rep['threads']} thread" + (" (**partial report** of the cached runs)" if rep["partial"] else ""),
           ""]  # fmt: skip
    if not rep["partial"]:
        out.insert(-1, f"- wall {rep['wall_s']:.0f} s, CPU (user + sys, this process and its children) "
                       f"{rep['cpu_s']:.0f} s")  # fmt: skip
    g = rep.get("gate")
    if g:
        ret = g["families"]["retrieval"]
        out += [f"Retrieval gate: **{'pass' if ret['passed'] else 'FAIL'}** (held-out NCE/lnB upper bound "
                f"{g['nce_ratio']['hi']:.3f} ≤ {g['threshold_nce_ratio']}: {ret['nce_ok']}; "
                f"`{ret['instance']['metric']}` gain {ret['instance']['gain']['mean']:+.3f} "
                f"[{ret['instance']['gain']['lo']:+.3f}, {ret['instance']['gain']['hi']:+.3f}] vs noise "
                f"{ret['instance']['seed_noise']:.3f}: {ret['instance']['ok']})", ""]  # fmt: skip
    for fam, rows in rep["families"].items():
        out += [f"### Family `{fam}` (Holm over {len(rows)}, family-wise α 0.05)", ""]
        out += ["| contrast | metric | hypothesis | Δ [raw 95 %] | p | Holm p | Δ Holm interval | label |",
                "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            digits = 3 if "nce" in r["metric"] or "latent" in r["metric"] else 2
            hyp = "> 0" if r["direction"] == "higher" else "< 0"
            cells = [f"`{r['better']}` − `{r['worse']}`", r["metric"], hyp, *holm_cells(r["delta"], r["holm"], digits)]
            out.append("| " + " | ".join([*cells, r["label"]]) + " |")
        out.append("")
    d = rep["decision"]
    out += [f"**Decision: {d['outcome']}** ({d['why']}).", ""]
    return "\n".join(out)
