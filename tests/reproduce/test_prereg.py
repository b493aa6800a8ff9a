"""Multiplicity (Holm on a hand example, t p-values and intervals), verdicts oriented by the paper's own number, and the
pre-registered runner: its whole design comes from one file, whose hash it records, and it refuses used seeds."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from tgdp.config import ConfigError
from tgdp.experiments import reproduce as rep
from tgdp.experiments.reproduce import design as dz
from tgdp.experiments.reproduce import multiplicity as mt
from tgdp.experiments.reproduce import prereg
from tgdp.experiments.reproduce.report import CLAIMS, paper_numbers

REPO = Path(__file__).resolve().parents[2]
CONFIRM = REPO / "experiments" / "reproduce" / "confirm.yaml"
SWEEP = REPO / "experiments" / "reproduce" / "sweep.yaml"


def test_t_distribution_matches_tables_and_closed_forms() -> None:
    for df, q in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)):
        assert mt.t_cdf(q, df) == pytest.approx(0.975, abs=2e-5)
        assert mt.t_quantile(0.975, df) == pytest.approx(q, abs=1e-3)
    assert mt.t_cdf(0.0, 5) == 0.5 and mt.t_cdf(-2.776, 4) == pytest.approx(0.025, abs=2e-5)
    # df 2 has a closed form: two-sided p = 1 − t/√(t² + 2). [1, 2, 3]: mean 2, sd 1, t = 2√3
    d = rep.stats([1.0, 2.0, 3.0])
    t = 2 * math.sqrt(3)
    assert mt.t_pvalue(d) == pytest.approx(1 - t / math.sqrt(t * t + 2))
    lo, hi = mt.t_interval(d, 0.05)
    assert (lo, hi) == (pytest.approx(d["lo"], abs=1e-3), pytest.approx(d["hi"], abs=1e-3))


def test_holm_on_a_hand_example() -> None:
    # m = 4; sorted p: 0.005 (×4 = 0.02), 0.01 (×3 = 0.03), 0.03 (×2 = 0.06), 0.04 (×1, running max 0.06)
    got = mt.holm_adjust([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert [g["p_holm"] for g in got] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [g["resolved"] for g in got] == [True, False, False, True]
    assert [g["rank"] for g in got] == [2, 4, 3, 1]
    # interval levels: α/4, α/3 for the resolved ranks 1, 2; from the first kept rank (3) on, α/2
    assert [g["alpha_i"] for g in got] == pytest.approx([0.05 / 3, 0.05 / 2, 0.05 / 2, 0.05 / 4])
    # 0.04 alone is resolved at 0.05, but not after Holm over four
    assert mt.holm_adjust([0.04])[0]["resolved"]


def test_holm_intervals_exclude_zero_exactly_when_resolved() -> None:
    strong, weak, none = rep.stats([2.0, 2.2, 2.4, 2.1, 2.3]), rep.stats([0.2, 1.0, 0.6, 1.4, 0.3]), None
    assert weak["lo"] > 0  # resolved alone at 95 %...
    got = mt.holm([strong, weak, rep.stats([-1.0, 1.0, 0.5, -0.5, 0.2]), none])
    assert got[3] is None and got[0]["m"] == 3
    for d, g in zip((strong, weak), got[:2], strict=True):
        lo, hi = mt.t_interval(d, g["alpha_i"])
        assert (g["lo_holm"], g["hi_holm"]) == (lo, hi)
        assert (g["lo_holm"] > 0) == g["resolved"]
    p_weak = mt.t_pvalue(weak)
    assert got[1]["p_holm"] == pytest.approx(min(1, 2 * p_weak))  # rank 2 of 3
    assert got[1]["resolved"] == (2 * p_weak < 0.05)


def test_every_claim_is_oriented_by_the_papers_number_for_its_metric() -> None:
    for claim, better, worse, metric in CLAIMS:
        assert paper_numbers(better, worse, metric)["delta"] > 0, claim
    p = paper_numbers("ratio_0.5", "ratio_0", "R@1 mean")
    assert (p["better"], p["worse"]) == (pytest.approx(30.8), pytest.approx(30.1))
    # ρ_c 0 retrieving better than 0.5 on R@1 goes against the paper's R@1
    per_seed = {"tgdp": {"R@1 mean": {0: 3.0, 1: 3.1, 2: 2.9}}, "ratio_0": {"R@1 mean": {0: 8.0, 1: 8.5, 2: 8.2}}}
    g = {"families": {"retrieval": {"passed": True}, "classification": {"passed": True}}}
    v = {x["claim"]: x for x in rep.verdicts(per_seed, g)}["ρ_c 0.5 retrieves better than 0 (R@1)"]
    assert v["verdict"] == "opposite to the paper" and v["holm"]["m"] == 1


def _write_result(run_dir: Path, fp: str, seed: int, v2a10: float) -> None:
    r = {"config": run_dir.parent.name, "fingerprint": fp, "seed": seed,
         "retrieval": {"v2a": {"R@1": 1.0, "R@5": 5.0, "R@10": v2a10}, "a2v": {"R@1": 1.0, "R@5": 5.0, "R@10": 10.0}},
         "heldout": {"nce_v2a": 2.0, "nce_a2v": 2.0, "nce_ratio_v2a": 0.7, "nce_batch": 16},
         "linear": {"a": 50.0, "v": 20.0, "av": 50.0}, "latent": {"a": 0.5, "v": 0.5, "av": 0.9},
         "probe": {"metric": 50.0, "metric_name": "top1"}, "health": {}, "train_s": 1.0, "eval_s": 1.0}  # fmt: skip
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(r))


def _fake_study(gain: dict[str, float]):
    """A run_study that trains nothing: it writes result.json files whose V→A R@10 is 10 + gain[arm] + seed noise."""

    def run(study):
        if study.report_only:  # as run_study: read the cache, train nothing
            return {"configs": {}}
        for job in prereg.plan_jobs(study, study.out / "data" / "store"):
            noise = (job["seed"] % 3) * 0.3
            latent_gain = 0.0 if job["name"] == "random_init" else 0.05 * (1 + job["seed"] % 2)
            _write_result(Path(job["run_dir"]), job["fingerprint"], job["seed"], 10 + gain[job["name"]] + noise)
            if latent_gain:  # the gate needs the baseline to beat the control on the latent, above the noise
                p = Path(job["run_dir"]) / "result.json"
                r = json.loads(p.read_text())
                r["latent"]["av"] += latent_gain + 0.1
                p.write_text(json.dumps(r))
        return {"configs": {}}

    return run


def test_the_runner_reads_its_design_from_one_file_and_records_its_hash(tmp_path, monkeypatch) -> None:
    design, sha = dz.load_design(CONFIRM)
    assert sha == hashlib.sha256(CONFIRM.read_bytes()).hexdigest()
    assert len(design.seeds) >= 10 and len(design.families["primary"]) == 1
    assert {"random_init", "cavmae_sync", "tgdp", "cavmae_sync_sym", "tgdp_sym"} <= set(design.arms)
    study = prereg.design_study(design, tmp_path)
    assert study.seeds == design.seeds and study.configs == list(design.arms)
    assert study.corpus.seed == design.corpus["seed"] and study.budget.steps == design.budget["steps"]
    # an edited copy is another study: its seeds, budget and hash are what the runner uses
    text = CONFIRM.read_text().replace("steps: 600", "steps: 7").replace("109]", "109, 110]")
    edited = tmp_path / "edited.yaml"
    edited.write_text(text)
    d2, sha2 = dz.load_design(edited)
    assert sha2 != sha and d2.budget_obj().steps == 7 and d2.seeds[-1] == 110
    gain = {"random_init": 0.0, "cavmae_sync": 0.0, "tgdp": 3.0, "cavmae_sync_sym": 0.0, "tgdp_sym": 0.0}
    monkeypatch.setattr(prereg, "run_study", _fake_study(gain))
    report = prereg.run_design(edited, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "prereg.json").read_text())
    assert saved["design_sha256"] == sha2 and saved["seeds"] == d2.seeds and saved["budget"]["steps"] == 7
    assert saved["runs"] == 5 * 11 and report["gate"]["families"]["retrieval"]["passed"]
    assert report["decision"]["outcome"] == "confirmed"  # TG-DP − Sync = +3.0 on every seed
    assert sha2 in (tmp_path / "out" / "prereg.md").read_text()
    # --report reads the cached runs only; with one seed's results gone the decision is pending
    next((tmp_path / "out" / "runs").glob("tgdp-*/seed110/result.json")).unlink()
    part = prereg.run_design(edited, tmp_path / "out", report=True)
    assert part["partial"] and part["runs"] == 54 and part["decision"]["outcome"] == "pending"
    assert (tmp_path / "out" / "prereg-partial.md").exists() and saved == json.loads(
        (tmp_path / "out" / "prereg.json").read_text()
    )


def test_the_runner_refuses_seeds_earlier_studies_used(tmp_path) -> None:
    for seeds in ("[0, 100, 101]", "[4, 150]", "[99, 150]"):  # v1–v3 used 0–4; the pilot used 99
        bad = tmp_path / "bad.yaml"
        bad.write_text(CONFIRM.read_text().replace("[100, 101, 102, 103, 104, 105, 106, 107, 108, 109]", seeds))
        with pytest.raises(ConfigError, match="seeds already used"):
            dz.load_design(bad)
    # the sweep's design may not take the confirmatory study's seeds either
    bad.write_text(SWEEP.read_text().replace("[200, 201, 202]", "[105, 200, 201]"))
    with pytest.raises(ConfigError, match="confirm"):
        dz.load_design(bad)
    assert dz.load_design(SWEEP)[0].rule.current_default == "l0.01_rel"
    # and a design with an unknown key, metric or arm is an error before anything runs
    for old, new in (("alpha: 0.05", "alpha: 0.05\nextra: 1"), ("metric: v2a R@10,", "metric: v2a R@11,"),
                     ("worse: cavmae_sync, metric: v2a R@10", "worse: nope, metric: v2a R@10")):  # fmt: skip
        bad.write_text(CONFIRM.read_text().replace(old, new, 1))
        with pytest.raises(ConfigError):
            dz.load_design(bad)


def _fam(delta: list[float], direction: str = "higher", better: str = "a", worse: str = "b") -> dict:
    d = rep.stats(delta)
    adj = mt.holm([d])[0]
    sign = 1 if direction == "higher" else -1
    label = "supports" if adj["resolved"] and sign * d["mean"] > 0 else "against" if adj["resolved"] else "unresolved"
    return {"better": better, "worse": worse, "direction": direction, "delta": d, "holm": adj, "label": label}


def test_the_confirm_rule() -> None:
    design, _ = dz.load_design(CONFIRM)
    passed = {"families": {"retrieval": {"passed": True}}, "nce_ratio": {"n": 10}}
    cases = {  # 10 paired seeds, as the design has
        "confirmed": [2.0, 3.0, 2.5, 2.2, 2.8] * 2,  # interval above 0
        "refuted": [-0.2, 0.1, 0.0, -0.1, 0.2] * 2,  # interval below the +1.0 margin
        "inconclusive": [-2.0, 3.0, 1.0, 0.5, 2.5] * 2,  # contains 0, reaches the margin
    }
    for outcome, delta in cases.items():
        assert prereg.decide(design, {"primary": [_fam(delta)]}, passed)["outcome"] == outcome
    failed = {"families": {"retrieval": {"passed": False}}, "nce_ratio": {"n": 10}}
    assert prereg.decide(design, {"primary": [_fam(cases["confirmed"])]}, failed)["outcome"] == "inconclusive"
    # a "lower is better" primary is directed: a clearly negative difference confirms it
    lower = _fam([-2.0, -3.0, -2.5, -2.2, -2.8] * 2, "lower")
    assert prereg.decide(design, {"primary": [lower]}, passed)["outcome"] == "confirmed"
    # the rule is stated for all 10 seeds: on 5 of them (a study still running) there is no decision
    assert prereg.decide(design, {"primary": [_fam(cases["confirmed"][:5])]}, passed)["outcome"] == "pending"


def test_the_sweep_criterion_keeps_the_default_unless_an_arm_beats_it() -> None:
    design, _ = dz.load_design(SWEEP)
    flat = [_fam([-1.0, 1.0, 0.5], better=a, worse="l0.01_rel") for a in ("l0_rel", "l1_rel")]
    zero = [_fam([-1.0, 1.0, 0.5], better="l1_rel", worse="l0_rel")]
    got = prereg.decide(design, {"vs_default": flat, "vs_zero": zero}, None)
    assert got["outcome"] == "l0.01_rel" and got["winners"] == [] and got["benefit"] == []
    wins = [_fam([1.0, 1.2, 1.1], better="l0_rel", worse="l0.01_rel"),
            _fam([3.0, 3.2, 3.1], better="l1_rel", worse="l0.01_rel")]  # fmt: skip
    got = prereg.decide(design, {"vs_default": wins, "vs_zero": zero}, None)
    assert got["outcome"] == "l1_rel" and set(got["winners"]) == {"l0_rel", "l1_rel"}


def test_v3_keeps_its_teacher_reference_and_new_studies_get_the_papers() -> None:
    from tgdp.model.config import ModelConfig
    from tgdp.train.config import load_run_config

    # 35 epochs of 1,390,395 clips at batch 512 (the paper's Table 4: 7.1 h / 730 s ≈ 10.2 h / 1,045 s ≈ 35)
    assert ModelConfig().teacher_momentum_ref_steps == 35 * 1_390_395 // 512
    v3 = rep.make_study(out=Path("unused"))
    assert load_run_config(*rep.run_overrides(v3, "tgdp", 0)).model_cfg().teacher_momentum_ref_steps == 67_890
    confirm = prereg.design_study(dz.load_design(CONFIRM)[0], Path("unused"))
    assert load_run_config(*rep.run_overrides(confirm, "tgdp", 100)).model_cfg().teacher_momentum_ref_steps == 95_046


def test_the_cli_refuses_a_reused_seed_with_one_line_and_exit_2(tmp_path) -> None:
    from typer.testing import CliRunner

    from tgdp.experiments.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIRM.read_text().replace("[100, 101, 102, 103, 104, 105, 106, 107, 108, 109]", "[3, 150]"))
    result = CliRunner().invoke(app, ["prereg", "--design", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "seeds already used" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def _model_diff(study, a: str, b: str) -> dict:
    from tgdp.train.config import load_run_config

    ma = load_run_config(*rep.run_overrides(study, a, 100)).model_cfg().model_dump()
    mb = load_run_config(*rep.run_overrides(study, b, 100)).model_cfg().model_dump()
    return {k: (ma[k], mb[k]) for k in ma if ma[k] != mb[k]}


def test_the_arms_are_what_their_labels_say() -> None:
    confirm = prereg.design_study(dz.load_design(CONFIRM)[0], Path("unused"))
    assert _model_diff(confirm, "cavmae_sync_sym", "cavmae_sync") == {"contrastive_symmetric": (True, False)}
    assert _model_diff(confirm, "tgdp_sym", "tgdp") == {"contrastive_symmetric": (True, False)}
    sweep = prereg.design_study(dz.load_design(SWEEP)[0], Path("unused"))
    # λ_dis in the presets' units, scaled ×10 with λ_contra (0.01 → 0.1): 0.01 is the default TG-DP arm
    assert _model_diff(sweep, "l0.01_rel", "l0.01_rel") == {} and rep.fingerprint(sweep, "l0.01_rel") == (
        rep.fingerprint(confirm, "tgdp")
    )
    assert _model_diff(sweep, "l1_rel", "l0.01_rel") == {"lambda_dis": (10.0, 0.1)}
    assert _model_diff(sweep, "l0_cos", "l0.01_rel") == {
        "lambda_dis": (0.0, 0.1),
        "teacher_momentum_schedule": ("cosine", "relative_cosine"),
    }
