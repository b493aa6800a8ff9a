"""A pre-registered study's design: one committed YAML file (`experiments/reproduce/confirm.yaml`, `sweep.yaml`)
holds everything the runner (`tgdp.experiments.reproduce.prereg`) does and decides: the corpus, the budget, the
arms, the seeds, the families of contrasts (metric, direction), α, and the decision rule. `load_design` validates it
strictly (unknown keys, unknown metrics or arms are errors), returns its sha256 for the report, and refuses seeds
that earlier studies used (`SEED_REGISTRY`): a confirmatory test runs on seeds nobody has looked at.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from tgdp.config import ConfigError, StrictConfig, validate_config
from tgdp.experiments.reproduce.configs import Budget, ConfigSpec
from tgdp.experiments.reproduce.store import Corpus

__all__ = ["SEED_REGISTRY", "Arm", "Contrast", "Design", "Rule", "check_seeds", "load_design", "specs"]

# Training seeds each study used or reserved (REPRODUCTION.md). A design may not use another study's seeds.
SEED_REGISTRY: dict[str, tuple[int, ...]] = {
    "v1": (0, 1, 2),
    "v2": (0, 1, 2, 3, 4),
    "v3": (0, 1, 2, 3, 4),
    "v3-budget-search": (0,),
    "v3-exploratory-3x-budget": (0, 1, 2),
    "confirm-pilot": (99,),
    "confirm": tuple(range(100, 110)),
    "sweep-distill": (200, 201, 202),
}


class Arm(StrictConfig):
    """One arm: a tiny train preset plus run-config overrides; `trained: false` is the untrained control."""

    label: str
    preset: str
    overrides: list[str] = []
    trained: bool = True


class Contrast(StrictConfig):
    """better − worse on `metric` (a per-run metric of the study's report, e.g. "v2a R@10"), paired over seeds.
    `direction`: "higher" when the hypothesis is better − worse > 0, "lower" when it is < 0 (e.g. InfoNCE)."""

    better: str
    worse: str
    metric: str
    direction: Literal["higher", "lower"] = "higher"


class Rule(StrictConfig):
    """The decision rule.

    confirm: on `family` (one contrast), if the gate's retrieval family passed: "confirmed" iff the raw 95 %
    t-interval of the directed difference lies above 0, "refuted" iff its upper end is below `margin`, else
    "inconclusive"; a failed gate is "inconclusive".
    select_default: on `family` (every other arm − `current_default`), the arms Holm resolves in the hypothesis's
    direction win; the default becomes the winner with the largest mean difference, else `current_default` stays.
    `benefit_family` (e.g. each λ_dis > 0 − λ_dis 0) is reported beside it."""

    kind: Literal["confirm", "select_default"]
    family: str
    margin: float | None = None
    current_default: str | None = None
    benefit_family: str | None = None


class Design(StrictConfig):
    """A pre-registered study. `study` names its entry in SEED_REGISTRY."""

    study: str
    question: str
    corpus: dict[str, float | int | str] = Field(description="tgdp.experiments.reproduce.store.Corpus fields")
    budget: dict[str, float | int | None] = Field(description="tgdp.experiments.reproduce.configs.Budget fields")
    seeds: list[int] = Field(min_length=2)
    arms: dict[str, Arm]
    gate: dict[str, str] | None = Field(None, description="{baseline: arm, control: arm}: v3's gate on these arms")
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    families: dict[str, list[Contrast]]
    rule: Rule

    @model_validator(mode="after")
    def _check(self) -> Design:
        from tgdp.experiments.reproduce.report import metric_names  # the report's metric keys

        errors = []
        for fam, contrasts in self.families.items():
            for c in contrasts:
                errors += [f"families.{fam}: unknown arm {a!r}" for a in (c.better, c.worse) if a not in self.arms]
                if c.metric not in metric_names():
                    errors.append(f"families.{fam}: unknown metric {c.metric!r}")
        for key in ("family", "benefit_family"):
            name = getattr(self.rule, key)
            if name is not None and name not in self.families:
                errors.append(f"rule.{key}: no family {name!r}")
        if self.rule.kind == "confirm" and (self.rule.margin is None or len(self.families[self.rule.family]) != 1):
            errors.append("rule: confirm needs a margin and a family of exactly one contrast")
        if self.rule.kind == "select_default" and self.rule.current_default not in self.arms:
            errors.append("rule: select_default needs current_default, one of the arms")
        if self.gate is not None and set(self.gate) != {"baseline", "control"}:
            errors.append("gate: needs exactly baseline and control")
        errors += [f"gate: unknown arm {a!r}" for a in (self.gate or {}).values() if a not in self.arms]
        if len(set(self.seeds)) != len(self.seeds):
            errors.append("seeds: duplicates")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def corpus_obj(self) -> Corpus:
        return _build(Corpus, self.corpus, "corpus")

    def budget_obj(self) -> Budget:
        return _build(Budget, self.budget, "budget")


def _build(cls, values: dict, where: str):
    try:
        return cls(**values)
    except TypeError as exc:  # an unknown field name
        raise ConfigError(f"{where}: {exc}") from None


def check_seeds(design: Design) -> None:
    """ConfigError when a seed of the design was used by another study in SEED_REGISTRY."""
    clash = {name: sorted(set(design.seeds) & set(seeds)) for name, seeds in SEED_REGISTRY.items()}
    clash = {name: s for name, s in clash.items() if s and name != design.study}
    if clash:
        raise ConfigError(f"seeds already used by earlier studies: {clash}; a pre-registered study needs fresh seeds")


def load_design(path: Path) -> tuple[Design, str]:
    """(the validated design, the sha256 of the file's bytes). ConfigError for a bad file or reused seeds."""
    raw = Path(path).read_bytes()
    data = yaml.safe_load(raw)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a design is a YAML mapping")
    design = validate_config(Design, data)
    design.corpus_obj(), design.budget_obj()  # unknown corpus / budget keys fail here, before any run
    check_seeds(design)
    return design, hashlib.sha256(raw).hexdigest()


def specs(design: Design) -> dict[str, ConfigSpec]:
    """The arms as study rows (tiny presets named directly)."""
    return {
        name: ConfigSpec(arm.preset, arm.label, (), tuple(arm.overrides), tiny_preset=arm.preset, trained=arm.trained)
        for name, arm in design.arms.items()
    }
