"""`make demo` (`python -m tgdp.experiments demo`): the whole chain on the built-in synthetic corpus, through the
real command-line tools.

synth (the `coupled` profile: the corpus on which the reproduction study found a signal to compare methods) → serve
(127.0.0.1) → fetch (yt-dlp, Ray sessions) → status → validate → shard → verify → export → train tiny TG-DP and
tiny CAV-MAE Sync → embed → retrieval (both directions) → probing (attention probe on both modalities, linear probe
on vision only) → `OUT/report.md` (funnel, retrieval and probe tables for both models with chance levels, the
study's seed noise and a sentence per table saying which model did better; PNG plots of the loss curves and
recall@K).

Every stage runs its CLI in a subprocess (so the demo exercises exactly what a user types) and shows that tool's
own progress; every stage is resumable, so a second run reuses what is done: synth keeps a corpus made from the
same config, fetch skips fetched clips, validate and shard skip up-to-date clips and shards, training resumes (and
returns at once when finished), and evaluation outputs newer than their checkpoint are kept.

The tiny presets use 96-px frames and 64 mel bins, so the store is sharded with those parameters (the full-size
recipe uses 224 px and 128 bins: see docs/STORE.md); fbank keeps its 1024-frame (10 s) length.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tgdp.config import StrictConfig

__all__ = ["DemoConfig", "run_demo"]

# the stages' command-line tools, each run as `python -m <module>` in a subprocess
DATA, TRAIN, EVAL = "tgdp.pipeline.cli", "tgdp.train.cli", "tgdp.eval.cli"


class DemoConfig(StrictConfig):
    """Sizes of the demo; the defaults ran in 449 s on 2 idle CPU cores (BENCHMARKS.md, `demo`)."""

    num_clips: int = Field(200, ge=8, description="synthetic clips")
    seed: int = Field(0, description="corpus and training seed")
    profile: Literal["default", "coupled"] = Field(
        "coupled", description="synthetic corpus profile (coupled: where the study found a signal to compare methods)"
    )
    sessions: int = Field(2, ge=1, description="fetch download sessions (Ray actors)")
    backend: str = Field("ray", description="fetch/validate/shard parallelism: ray | serial")
    workers: int = Field(2, ge=1, description="parallel workers of each stage")
    train_steps: int = Field(
        1500, ge=1, description="training steps per model (the same budget for TG-DP and the baseline)"
    )
    batch_size: int = Field(16, ge=2, description="training batch")
    frame_size: int = Field(96, description="stored frame side in pixels")
    num_mel_bins: int = Field(64, description="fbank mel bins")
    probe_epochs: int = Field(30, ge=1, description="probe training epochs")
    vision_probe: bool = Field(
        True, description="also a linear probe of the class on vision alone (further from its ceiling)"
    )
    models: tuple[str, ...] = Field(("tiny_tgdp", "tiny_cavmae_sync"), description="model presets trained and compared")


def _run(cmd: list[str], log: Path | None = None) -> str:
    """Run one stage's CLI; its progress goes to the terminal, its stdout is also returned."""
    print(f"\n$ {shlex.join(cmd[2:] if cmd[:2] == [sys.executable, '-m'] else cmd)}", flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(proc.stdout)
    if log is not None:
        log.write_text(proc.stdout, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"stage failed (exit {proc.returncode}): {shlex.join(cmd)}")
    return proc.stdout


def _cli(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _stage(title: str) -> float:
    print(f"\n{'=' * 100}\n== {title}\n{'=' * 100}", flush=True)
    return time.perf_counter()


def _fresh(output: Path, *inputs: Path) -> bool:
    """True when `output` exists and is newer than every existing input."""
    if not output.exists():
        return False
    mtime = output.stat().st_mtime
    return all(not p.exists() or p.stat().st_mtime <= mtime for p in inputs)


def _latest_checkpoint(run_dir: Path) -> Path | None:
    from tgdp.train.checkpoint import list_checkpoints

    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def _panels(n: int, width: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, n, figsize=(width * n, 3.5))


def _finish(fig: Any, axes: Any, titles: list[str], xlabel: str, path: Path, ylabel: str = "") -> Path:
    import matplotlib.pyplot as plt

    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _loss_plot(runs: dict[str, Path], path: Path) -> Path:
    terms = ["loss", "rec_loss", "contrastive_loss", "dis_loss"]
    fig, axes = _panels(len(terms), 4.2)
    for name, run_dir in runs.items():
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        for ax, term in zip(axes, terms, strict=True):
            pts = [(r["step"], r[term]) for r in rows if r.get(term) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=name)
    return _finish(fig, axes, terms, "step", path)


def _recall_plot(results: dict[str, Path], path: Path) -> Path:
    import numpy as np

    from tgdp.eval.metrics import recall_curve

    fig, axes = _panels(2, 4.5)
    for name, out_dir in results.items():
        ranks = np.load(out_dir / "ranks.npz")
        for ax, direction in zip(axes, ("a2v", "v2a"), strict=True):
            curve = recall_curve(ranks[direction])
            ax.plot(np.arange(1, len(curve) + 1), curve, label=name)  # already in percent
    return _finish(fig, axes, ["recall@K, A→V", "recall@K, V→A"], "K", path, ylabel="%")


@dataclass(frozen=True)
class _Dirs:
    """Where each stage of one demo run writes, under OUT."""

    out: Path
    corpus: Path
    root: Path
    store: Path
    runs: Path
    evals: Path

    @classmethod
    def under(cls, out: Path) -> _Dirs:
        out = out.resolve()
        return cls(out, out / "corpus", out / "root", out / "store", out / "train", out / "eval")


def _synth(d: _Dirs, cfg: DemoConfig) -> None:
    from tgdp.pipeline.synth import LABELS_FILE

    stamp = d.corpus / "demo-config.json"
    want = json.dumps({"num_clips": cfg.num_clips, "seed": cfg.seed, "profile": cfg.profile})
    if stamp.exists() and stamp.read_text() == want and (d.corpus / LABELS_FILE).exists():
        print(f"reusing {d.corpus}")
        return
    sets = ["--set", f"synth.num_clips={cfg.num_clips}", "--set", f"synth.seed={cfg.seed}"]
    sets += ["--set", f"synth.profile={cfg.profile}"]
    _run(_cli(DATA, "synth", str(d.corpus), *sets))
    stamp.write_text(want)


def _manifest(d: _Dirs, cfg: DemoConfig) -> None:
    from tgdp.pipeline.layout import manifest_path
    from tgdp.pipeline.synth import LABELS_FILE, SEGMENT_FILES

    if _fresh(manifest_path(d.root), d.corpus / "demo-config.json"):
        print("reusing the source manifest")
        return
    _run(
        _cli(
            DATA, "manifest", str(d.root), "--dataset", "audioset",
            "--csv", f"{d.corpus / SEGMENT_FILES['as_bal_train']}:as_bal_train",
            "--csv", f"{d.corpus / SEGMENT_FILES['as_eval']}:as_eval",
            "--labels", str(d.corpus / LABELS_FILE),
        )
    )  # fmt: skip


def _fetch(d: _Dirs, cfg: DemoConfig) -> None:
    from tgdp.pipeline.serve import MediaServer

    with MediaServer(d.corpus) as base_url:
        print(f"media server on {base_url} (loopback only)")
        _run(
            _cli(
                DATA, "fetch", str(d.root), "--set", "fetch.url_template=" + base_url + "/v/{ytid}",
                "--set", f"fetch.sessions={cfg.sessions}", "--set", "fetch.rate_per_hour=0", "--backend", cfg.backend,
                "--workers", str(cfg.workers),
            )
        )  # fmt: skip
    _run(_cli(DATA, "status", str(d.root)), d.out / "funnel-fetch.txt")


def _feature_sets(cfg: DemoConfig) -> list[str]:
    feats = [f"features.frame_size={cfg.frame_size}", f"features.num_mel_bins={cfg.num_mel_bins}"]
    return [a for f in feats for a in ("--set", f)]


def _validate(d: _Dirs, cfg: DemoConfig) -> None:
    workers = ["--backend", cfg.backend, "--workers", str(cfg.workers)]
    _run(_cli(DATA, "validate", str(d.root), *workers, *_feature_sets(cfg)))


def _shard(d: _Dirs, cfg: DemoConfig) -> None:
    workers = ["--backend", cfg.backend, "--workers", str(cfg.workers)]
    _run(_cli(DATA, "shard", str(d.root), "--store", str(d.store), *workers, *_feature_sets(cfg)))
    _run(_cli(DATA, "verify", str(d.store)))
    # after shard, so the funnel counts the sharded clips
    _run(_cli(DATA, "export", str(d.root), "--out", str(d.out / "export")))


def _train(d: _Dirs, cfg: DemoConfig, preset: str) -> None:
    """Train one preset to `cfg.train_steps` (resuming a cut run; a finished one is reused)."""
    run_dir = d.runs / preset
    args = [
        "--config", preset, "--store", str(d.store), "--run-dir", str(run_dir),
        "--set", f"train.steps={cfg.train_steps}", "--set", f"train.batch_size={cfg.batch_size}",
        "--set", f"train.ckpt_every={max(cfg.train_steps // 3, 1)}", "--set", f"train.seed={cfg.seed}",
    ]  # fmt: skip
    last = _latest_checkpoint(run_dir)
    if last is not None and int(last.stem.split("_")[-1]) >= cfg.train_steps:
        print(f"reusing {last} (training finished)")
        return
    _run(_cli(TRAIN, *args, *(["--resume"] if last is not None else [])))


def _evaluate(d: _Dirs, cfg: DemoConfig, preset: str) -> list[Path]:
    """Embed both splits, then retrieval, probe and health of one trained preset; outputs newer than the
    checkpoint are kept. Returns the result files the report reads."""
    ckpt = _latest_checkpoint(d.runs / preset)
    if ckpt is None:
        raise RuntimeError(f"no checkpoint in {d.runs / preset}")
    ev = d.evals / preset
    ev.mkdir(parents=True, exist_ok=True)
    emb = {split: ev / f"emb_{split}.arrow" for split in ("train", "eval")}
    for split, path in emb.items():
        if not _fresh(path, ckpt):
            _run(
                _cli(
                    EVAL, "embed", "--checkpoint", str(ckpt), "--store", str(d.store), "--split", split,
                    "--out", str(path), "--set", "num_workers=0", "--device", "cpu",
                )
            )  # fmt: skip
    named = ["--name", preset, "--dataset", "synth"]
    if not _fresh(ev / "retrieval" / "retrieval.json", emb["eval"]):
        _run(_cli(EVAL, "retrieval", "--emb", str(emb["eval"]), "--out", str(ev / "retrieval"), *named))
    if not _fresh(ev / "probe" / "probe.json", emb["eval"], emb["train"]):
        probe_sets = [f"epochs={cfg.probe_epochs}", "num_heads=2", "lr=1e-3", "batch_size=32"]
        _run(
            _cli(
                EVAL, "probe", "--train-emb", str(emb["train"]), "--test-emb", str(emb["eval"]),
                "--set", "task=multiclass", "--out", str(ev / "probe"), *named, "--device", "cpu",
                *[a for s in probe_sets for a in ("--set", s)],
            )
        )  # fmt: skip
    if not _fresh(ev / "health.json", ckpt):
        _run(
            _cli(
                EVAL, "health", "--checkpoint", str(ckpt), "--store", str(d.store), "--split", "eval",
                "--out", str(ev / "health.json"), "--device", "cpu",
            )
        )  # fmt: skip
    files = [ev / "retrieval" / "retrieval.json", ev / "probe" / "probe.json"]
    if cfg.vision_probe and not _fresh(ev / "probe_v" / "probe.json", emb["eval"], emb["train"]):
        # a harder task than the class from both modalities (often at its ceiling here): the class from vision alone
        _run(
            _cli(
                EVAL, "probe", "--train-emb", str(emb["train"]), "--test-emb", str(emb["eval"]),
                "--set", "task=multiclass", "--out", str(ev / "probe_v"), *named, "--device", "cpu",
                "--set", "modality=v", "--set", "linear=true", "--set", "epochs=50", "--set", "lr=1e-2",
            )
        )  # fmt: skip
    return files + ([ev / "probe_v" / "probe.json"] if cfg.vision_probe else [])


def _require_splits(d: _Dirs, cfg: DemoConfig) -> None:
    for split in ("train", "eval"):
        if not (d.store / split / "index.json").is_file():
            raise RuntimeError(
                f"no valid {split} clips reached {d.store / split}; raise num_clips (got {cfg.num_clips})"
            )


def run_demo(out: Path, cfg: DemoConfig) -> Path:
    """Run (or resume) the demo chain under `out`; returns the path of the report."""
    t_start = time.perf_counter()
    d = _Dirs.under(out)
    d.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def timed(key: str, title: str, stage: Callable[..., Any], *args: Any) -> Any:
        t = _stage(title)
        got = stage(d, cfg, *args)
        timings[key] = time.perf_counter() - t
        return got

    timed("synth", "1. synth: the synthetic audio-visual corpus (real media, fault cases, ground truth)", _synth)
    timed("manifest", "2. manifest: AudioSet-format segment CSVs → source manifest", _manifest)
    timed("fetch", "3. serve + fetch: yt-dlp downloads the padded segments from the local media server", _fetch)
    timed("validate", "4. validate: drops with a recorded reason, flags silence and still video", _validate)
    timed("shard", "5. shard + verify + export: 16 JPEG frames + log-Mel fbank per clip into Arrow shards", _shard)
    for preset in cfg.models:
        title = f"6. train {preset} ({cfg.train_steps} steps × batch {cfg.batch_size})"
        timed(f"train {preset}", title, _train, preset)
    _require_splits(d, cfg)
    result_files: list[Path] = []
    for preset in cfg.models:
        title = f"7. evaluate {preset}: embeddings → retrieval (both directions) → probe"
        result_files += timed(f"eval {preset}", title, _evaluate, preset)

    t = _stage("8. report")
    study = d.out.parent / "reproduce" / "results.json"  # a `make reproduce` run beside the demo: its seed noise
    study_args = ["--study", str(study)] if study.is_file() else []
    _run(_cli(EVAL, "report", *map(str, result_files), "--out", str(d.evals), *study_args))
    loss_png = _loss_plot({p: d.runs / p for p in cfg.models}, d.out / "loss_curves.png")
    recall_png = _recall_plot({p: d.evals / p / "retrieval" for p in cfg.models}, d.out / "recall_at_k.png")
    timings["report"] = time.perf_counter() - t
    total_s = time.perf_counter() - t_start
    (d.out / "timings.json").write_text(json.dumps({**timings, "total": total_s}, indent=2), encoding="utf-8")
    report = _write_report(d.out, cfg, timings, total_s, loss_png, recall_png)
    print(f"\nreport: {report}")
    return report


def _fault_table(out: Path) -> str:
    """Where each synthetic fault case ended, beside what the corpus says it should be (nothing lost)."""
    import csv
    from collections import Counter

    from tgdp.pipeline import ledger

    fetched, validated = ledger.latest(out / "root", "fetch"), ledger.latest(out / "root", "validate")
    outcome: Counter[tuple[str, str, str]] = Counter()
    with (out / "corpus" / "ground_truth.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            f, v = fetched.get(row["clip_id"]), validated.get(row["clip_id"])
            if f is None or f["status"] != "ok":
                state = "fetch pending (transient)" if f is None or f["transient"] else f"gone: {f['reason']}"
            elif v is None:
                state = "validate pending"
            else:
                state = "valid" if v["valid"] else f"dropped: {v['reason']}"
                flags = [k for k in ("is_silent", "is_still") if v.get(k)]
                state += f" (flagged {', '.join(flags)})" if flags else ""
            outcome[(row["fault"], row["expected_reason"], state)] += 1
    rows = "\n".join(f"| {f} | {e} | {s} | {n} |" for (f, e, s), n in sorted(outcome.items()))
    return "| fault case | reason for the file as made | final state after fetch + validate | clips |\n" + (
        "|---|---|---|---|\n" + rows
    )


def _health_table(out: Path, cfg: DemoConfig) -> str:
    """Training-time and held-out representation health of each trained model (docs/MODEL.md), and a sentence on
    which model reached the lower held-out InfoNCE."""
    import math

    from tgdp.eval.report import STUDY_SEED_SD, compare

    rows, nce, chance = [], {}, None
    for preset in cfg.models:
        h = json.loads((out / "eval" / preset / "health.json").read_text(encoding="utf-8"))
        nce[preset], chance = h["heldout_nce"], h["heldout_nce_chance"]
        logged = [
            json.loads(line)
            for line in (out / "train" / preset / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        tail = [r["contrastive_loss"] for r in logged[int(len(logged) * 0.8) :] if r.get("contrastive_loss")]
        train_nce = f"{sum(tail) / len(tail):.3f}" if tail else "–"
        warn = "; ".join(h["collapse_warnings"]) or "none"
        rows.append(
            f"| {preset} | {train_nce} / {math.log(cfg.batch_size):.3f} | {h['heldout_nce']:.3f} / "
            f"{h['heldout_nce_chance']:.3f} | {h['a_cos']:.3f} / {h['v_cos']:.3f} | "
            f"{h['a_std_iso']:.3f} / {h['v_std_iso']:.3f} | {h['a_erank']:.2f} / {h['v_erank']:.2f} | {warn} |"
        )
    head = (
        "| model | train InfoNCE, last 20% / ln B | held-out InfoNCE / ln N | pairwise cos a / v | std·√D a / v "
        "| effective rank a / v | collapse rules fired |\n|---|---|---|---|---|---|---|\n"
    )
    # the seed noise the report used (the study's results.json when the demo found one, else the built-in figures)
    report_json = out / "eval" / "report.json"
    sds = json.loads(report_json.read_text(encoding="utf-8")).get("seed_sd", {}) if report_json.is_file() else {}
    noise = sds.get("nce v2a", STUDY_SEED_SD["nce v2a"])
    line = compare(
        "Held-out InfoNCE (lower is better)", nce, higher_is_better=False, chance=chance, noise=noise, digits=3
    )
    return head + "\n".join(rows) + ("\n\n" + line if line else "")


def _demote(md: str, top: int) -> str:
    """Shift the Markdown headings of `md` so that its highest one sits at level `top` (an inserted document's H1
    must not sit inside the report's H2)."""
    import re

    levels = [len(m) for m in re.findall(r"^(#+) ", md, flags=re.M)]
    if not levels:
        return md
    shift = top - min(levels)
    return re.sub(r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + shift) + " ", md, flags=re.M)


def _write_report(
    out: Path, cfg: DemoConfig, timings: dict[str, float], total_s: float, loss_png: Path, recall_png: Path
) -> Path:
    funnel_md = _demote((out / "export" / "funnel.md").read_text(encoding="utf-8").strip(), 3)
    tables = (out / "eval" / "report.md").read_text(encoding="utf-8").strip()
    tables = _demote(tables.replace("# Evaluation report", "", 1).strip(), 3)
    stage_rows = "\n".join(f"| {k} | {v:.1f} |" for k, v in timings.items())
    text = f"""# tgdp demo report

Synthetic corpus: {cfg.num_clips} clips (`{cfg.profile}` profile, seed {cfg.seed}, with fault cases), fetched
through yt-dlp from the local media server, validated, sharded ({cfg.frame_size}-px frames, {cfg.num_mel_bins} mel
bins), then tiny TG-DP and tiny CAV-MAE Sync trained for the same budget ({cfg.train_steps} steps × batch
{cfg.batch_size}) and evaluated on the held-out split.

What this can show: that the whole chain runs and accounts for every clip, and whether each model learnt the
audio-visual correspondence (figures well above chance). What it cannot show: which method is better. Each model
is one seed on a few dozen held-out clips; the reproduction study (REPRODUCTION.md, `make reproduce`) needed 5 seeds
per row on a larger corpus to tell TG-DP and CAV-MAE Sync apart, and beside each difference below stands the
seed-to-seed SD it measured for that figure.

## Representation health

Held-out figures from `tgdp-eval health` on the eval split (one frame/segment pair per clip, unmasked encoder);
an InfoNCE at its chance level ln(N) means the model has not learnt the audio-visual correspondence, and a pairwise
cosine near 1 with a small std·√D means the global token no longer depends on the input (rules in docs/MODEL.md).

{_health_table(out, cfg)}

## Funnel

{funnel_md}

Fetch-stage funnel as printed by `tgdp-data status`:

```
{(out / "funnel-fetch.txt").read_text(encoding="utf-8").strip()}
```

Every synthetic fault case, traced (fetch re-muxes the padded section, so a truncated source file arrives as a
shorter, decodable file; a 0-byte response is a transient fetch failure that is retried on later runs):

{_fault_table(out)}

## Results

{tables}

## Plots

![loss curves]({loss_png.name})

![recall@K]({recall_png.name})

## Time per stage (this run; stages reused from an earlier run take seconds)

| stage | seconds |
|---|---|
{stage_rows}
| total | {total_s:.1f} |
"""
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    return path
