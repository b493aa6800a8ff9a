"""Controlled reproduction of the TG-DP claims: CAV-MAE Sync vs TG-DP and the ablations of Tables 5–8.

Every row trains with the same budget (steps × batch, lr, λ_contra), over 5 seeds, then is evaluated on the
held-out `eval` split:
- held-out InfoNCE (V→A, Eq. 4, and A→V) over chunks of B clips, against ln(B);
- zero-shot retrieval R@1/5/10 both directions, instance level (`diagonal_mean`, the clip's own pair) and class
  level (any clip of the query's class);
- standardised linear probes (mean token → BatchNorm without affine → Linear) on audio only, vision only and both;
- the paper's attention probe on `[g_v, g_a]`;
- the health figures of the global tokens (`tgdp.model.health`).
An untrained TG-DP model is the control. A gate (`report.gate`) decides whether the baseline learnt anything before any
comparison is read; paired (same seed) deltas against TG-DP carry 95 % t-intervals, and each of the paper's claims
(`report.CLAIMS`, oriented by the paper's number for the same metric) gets a verdict, Holm-corrected within its
family (`multiplicity`).

Pre-registered studies (`make confirm`, `make sweep`) read their whole design from one committed YAML file
(`design.load_design`: corpus, budget, arms, fresh seeds, families of contrasts, α, rule) and decide by its rule
(`prereg.run_design`), recording the file's sha256.

Without `--store`, a synthetic benchmark is built first (`tgdp.pipeline.synth`, profile `coupled`: an instance latent
shared by the object's hue and the note pitch, silent decoys, off-screen notes, silences, clutter) and taken through
manifest → fetch events → validate → shard. With `--store STORE` (a prebuilt store holding `train/` and `eval/`)
nothing is synthesised and the same protocol runs.

Results are cached per run in OUT/runs/<config>-<fingerprint>/seed<k>/result.json (a row whose resolved run config
equals another's, e.g. `ratio_0.5` and `tgdp`, shares its runs), so a rerun resumes; a run killed during training
resumes from its last checkpoint. Runs go seed-major, and OUT/results.json and OUT/results.md are rewritten after
every run, so a study cut short leaves whole seeds of every row.

    python -m tgdp.experiments reproduce --out runs/reproduce             # `make reproduce`
    python -m tgdp.experiments reproduce --out runs/reproduce-short --short
    python -m tgdp.experiments reproduce --out runs/real --store STORE --set "overrides=[model.num_mel_bins=128]"
    python -m tgdp.experiments prereg --design experiments/reproduce/confirm.yaml --out runs/confirm  # `make confirm`

Modules: `configs` (the rows, budget, `fingerprint`), `store` (the synthetic store), `evaluate` (one run's metrics),
`study` (jobs, `run_one`, `run_study`), `report` (statistics, gate, verdicts, tables), `multiplicity` (t p-values,
Holm), `design` (a pre-registered design file), `prereg` (running one and deciding).
"""

from __future__ import annotations

from tgdp.experiments.reproduce.configs import (
    CONFIGS,
    PAPER_TABLES,
    Budget,
    ReproduceConfig,
    Study,
    fingerprint,
    make_study,
    run_overrides,
)
from tgdp.experiments.reproduce.design import SEED_REGISTRY, load_design
from tgdp.experiments.reproduce.evaluate import class_recall, heldout_infonce, latent_r2, read_latents
from tgdp.experiments.reproduce.multiplicity import holm, holm_adjust
from tgdp.experiments.reproduce.prereg import run_design
from tgdp.experiments.reproduce.report import aggregate, gate, paired, render_tables, stats, t975, verdict, verdicts
from tgdp.experiments.reproduce.store import Corpus, build_synth_store
from tgdp.experiments.reproduce.study import run_one, run_reproduce, run_study

__all__ = [
    "CONFIGS",
    "PAPER_TABLES",
    "SEED_REGISTRY",
    "Budget",
    "Corpus",
    "ReproduceConfig",
    "Study",
    "aggregate",
    "build_synth_store",
    "class_recall",
    "fingerprint",
    "gate",
    "heldout_infonce",
    "holm",
    "holm_adjust",
    "latent_r2",
    "load_design",
    "make_study",
    "paired",
    "read_latents",
    "render_tables",
    "run_design",
    "run_one",
    "run_overrides",
    "run_reproduce",
    "run_study",
    "stats",
    "t975",
    "verdict",
    "verdicts",
]
