"""`make demo`: the whole chain on the built-in synthetic corpus, through the real command-line tools.

synth → serve (127.0.0.1) → fetch (yt-dlp, Ray sessions) → status → validate → export → shard → verify →
train tiny TG-DP and tiny CAV-MAE Sync → embed → retrieval (both directions) → probing → `OUT/report.md`
(funnel, retrieval and probe tables for both models, PNG plots of the loss curves and recall@K).

Every stage runs its CLI in a subprocess (so the demo exercises exactly what a user types) and shows that tool's
own progress; every stage is resumable, so a second run reuses what is done: synth keeps a corpus made from the
same config, fetch skips fetched clips, validate and shard skip up-to-date clips and shards, training resumes (and
returns at once when finished), and evaluation outputs newer than their checkpoint are kept.

The tiny presets use 96-px frames and 64 mel bins, so the store is sharded with those parameters (the full-size
recipe uses 224 px and 128 bins: see docs/STORE.md); fbank keeps its 1024-frame (10 s) length.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["DemoConfig", "main", "run_demo"]

from pydantic import Field

from tgdp.config import StrictConfig


class DemoConfig(StrictConfig):
    """Sizes of the demo; the defaults ran in 449 s on 2 idle CPU cores (BENCHMARKS.md, `demo`)."""

    num_clips: int = Field(200, ge=8)
    seed: int = 0
    sessions: int = Field(2, ge=1)  # fetch download sessions (Ray actors)
    backend: str = "ray"  # fetch/validate/shard parallelism: ray | serial
    workers: int = Field(2, ge=1)
    train_steps: int = Field(1500, ge=1)  # per model, same budget for TG-DP and the baseline
    batch_size: int = Field(16, ge=2)
    frame_size: int = 96
    num_mel_bins: int = 64
    probe_epochs: int = Field(30, ge=1)
    models: tuple[str, ...] = ("tiny_tgdp", "tiny_cavmae_sync")


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


def run_demo(out: Path, cfg: DemoConfig) -> Path:
    """Run (or resume) the demo chain under `out`; returns the path of the report."""
    from tgdp.pipeline.serve import MediaServer
    from tgdp.pipeline.synth import LABELS_FILE, SEGMENT_FILES

    t_start = time.perf_counter()
    out = out.resolve()
    corpus, root, store, runs, evals = out / "corpus", out / "root", out / "store", out / "train", out / "eval"
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    data, train_cli, eval_cli = "tgdp.pipeline.cli", "tgdp.train.cli", "tgdp.eval.cli"

    t = _stage("1. synth: the synthetic audio-visual corpus (real media, fault cases, ground truth)")
    stamp = corpus / "demo-config.json"
    want = json.dumps({"num_clips": cfg.num_clips, "seed": cfg.seed})
    if stamp.exists() and stamp.read_text() == want and (corpus / LABELS_FILE).exists():
        print(f"reusing {corpus}")
    else:
        sets = ["--set", f"synth.num_clips={cfg.num_clips}", "--set", f"synth.seed={cfg.seed}"]
        _run(_cli(data, "synth", str(corpus), *sets))
        stamp.write_text(want)
    timings["synth"] = time.perf_counter() - t

    t = _stage("2. manifest: AudioSet-format segment CSVs → source manifest")
    if _fresh(root / "manifest" / "source.parquet", stamp):
        print("reusing the source manifest")
    else:
        _run(
            _cli(
                data, "manifest", str(root), "--dataset", "audioset",
                "--csv", f"{corpus / SEGMENT_FILES['as_bal_train']}:as_bal_train",
                "--csv", f"{corpus / SEGMENT_FILES['as_eval']}:as_eval",
                "--labels", str(corpus / LABELS_FILE),
            )
        )  # fmt: skip
    timings["manifest"] = time.perf_counter() - t

    t = _stage("3. serve + fetch: yt-dlp downloads the padded segments from the local media server")
    with MediaServer(corpus) as base_url:
        print(f"media server on {base_url} (loopback only)")
        _run(
            _cli(
                data, "fetch", str(root), "--set", "fetch.url_template=" + base_url + "/v/{ytid}",
                "--set", f"fetch.sessions={cfg.sessions}", "--set", "fetch.rate_per_hour=0", "--backend", cfg.backend,
                "--workers", str(cfg.workers),
            )
        )  # fmt: skip
    _run(_cli(data, "status", str(root)), out / "funnel-fetch.txt")
    timings["fetch"] = time.perf_counter() - t

    t = _stage("4. validate + export: drops with a recorded reason, flags silence and still video")
    feats = [f"features.frame_size={cfg.frame_size}", f"features.num_mel_bins={cfg.num_mel_bins}"]
    _run(
        _cli(
            data, "validate", str(root), "--backend", cfg.backend, "--workers", str(cfg.workers),
            *[a for f in feats for a in ("--set", f)],
        )
    )  # fmt: skip
    _run(_cli(data, "export", str(root), "--out", str(out / "export")))
    timings["validate"] = time.perf_counter() - t

    t = _stage("5. shard + verify: 16 JPEG frames + log-Mel fbank per clip into Arrow shards")
    _run(
        _cli(
            data, "shard", str(root), "--store", str(store), "--backend", cfg.backend, "--workers", str(cfg.workers),
            *[a for f in feats for a in ("--set", f)],
        )
    )  # fmt: skip
    _run(_cli(data, "verify", str(store)))
    timings["shard"] = time.perf_counter() - t

    run_dirs: dict[str, Path] = {}
    for preset in cfg.models:
        t = _stage(f"6. train {preset} ({cfg.train_steps} steps × batch {cfg.batch_size})")
        run_dir = runs / preset
        run_dirs[preset] = run_dir
        args = [
            "--config", preset, "--store", str(store), "--run-dir", str(run_dir),
            "--set", f"train.steps={cfg.train_steps}", "--set", f"train.batch_size={cfg.batch_size}",
            "--set", f"train.ckpt_every={max(cfg.train_steps // 3, 1)}", "--set", f"train.seed={cfg.seed}",
        ]  # fmt: skip
        last = _latest_checkpoint(run_dir)
        if last is not None and int(last.stem.split("_")[-1]) >= cfg.train_steps:
            print(f"reusing {last} (training finished)")
        else:
            _run(_cli(train_cli, *args, *(["--resume"] if last is not None else [])))
        timings[f"train {preset}"] = time.perf_counter() - t

    for split in ("train", "eval"):
        if not (store / split / "index.json").is_file():
            raise RuntimeError(f"no valid {split} clips reached {store / split}; raise num_clips (got {cfg.num_clips})")
    results: dict[str, Path] = {}
    result_files: list[str] = []
    for preset, run_dir in run_dirs.items():
        t = _stage(f"7. evaluate {preset}: embeddings → retrieval (both directions) → probe")
        ckpt = _latest_checkpoint(run_dir)
        if ckpt is None:
            raise RuntimeError(f"no checkpoint in {run_dir}")
        ev = evals / preset
        ev.mkdir(parents=True, exist_ok=True)
        for split in ("train", "eval"):
            emb = ev / f"emb_{split}.arrow"
            if not _fresh(emb, ckpt):
                _run(
                    _cli(
                        eval_cli, "embed", "--checkpoint", str(ckpt), "--store", str(store), "--split", split,
                        "--out", str(emb), "--num-workers", "0", "--device", "cpu",
                    )
                )  # fmt: skip
        if not _fresh(ev / "retrieval" / "retrieval.json", ev / "emb_eval.arrow"):
            _run(
                _cli(
                    eval_cli, "retrieval", "--emb", str(ev / "emb_eval.arrow"), "--out", str(ev / "retrieval"),
                    "--name", preset, "--dataset", "synth",
                )
            )  # fmt: skip
        if not _fresh(ev / "probe" / "probe.json", ev / "emb_eval.arrow", ev / "emb_train.arrow"):
            _run(
                _cli(
                    eval_cli, "probe", "--train-emb", str(ev / "emb_train.arrow"), "--test-emb",
                    str(ev / "emb_eval.arrow"), "--task", "multiclass", "--out", str(ev / "probe"),
                    "--name", preset, "--dataset", "synth", "--device", "cpu",
                    "--set", f"epochs={cfg.probe_epochs}", "--set", "num_heads=2", "--set", "lr=1e-3",
                    "--set", "batch_size=32",
                )
            )  # fmt: skip
        if not _fresh(ev / "health.json", ckpt):
            _run(
                _cli(
                    eval_cli, "health", "--checkpoint", str(ckpt), "--store", str(store), "--split", "eval",
                    "--out", str(ev / "health.json"), "--device", "cpu",
                )
            )  # fmt: skip
        results[preset] = ev / "retrieval"
        result_files += [str(ev / "retrieval" / "retrieval.json"), str(ev / "probe" / "probe.json")]
        timings[f"eval {preset}"] = time.perf_counter() - t

    t = _stage("8. report")
    _run(_cli(eval_cli, "report", *result_files, "--out", str(evals)))
    loss_png = _loss_plot(run_dirs, out / "loss_curves.png")
    recall_png = _recall_plot(results, out / "recall_at_k.png")
    timings["report"] = time.perf_counter() - t
    total_s = time.perf_counter() - t_start
    (out / "timings.json").write_text(json.dumps({**timings, "total": total_s}, indent=2), encoding="utf-8")
    report = _write_report(out, cfg, timings, total_s, loss_png, recall_png)
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
    """Training-time and held-out representation health of each trained model (docs/MODEL.md)."""
    import math

    rows = []
    for preset in cfg.models:
        h = json.loads((out / "eval" / preset / "health.json").read_text(encoding="utf-8"))
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
    return head + "\n".join(rows)


def _write_report(
    out: Path, cfg: DemoConfig, timings: dict[str, float], total_s: float, loss_png: Path, recall_png: Path
) -> Path:
    funnel_md = (out / "export" / "funnel.md").read_text(encoding="utf-8").strip()
    tables = (out / "eval" / "report.md").read_text(encoding="utf-8").strip()
    tables = tables.replace("# Evaluation report", "").strip().replace("\n## ", "\n### ")
    if tables.startswith("## "):
        tables = "#" + tables
    stage_rows = "\n".join(f"| {k} | {v:.1f} |" for k, v in timings.items())
    text = f"""# tgdp demo report

Synthetic corpus: {cfg.num_clips} clips (seed {cfg.seed}, with fault cases), fetched through yt-dlp from the local
media server, validated, sharded ({cfg.frame_size}-px frames, {cfg.num_mel_bins} mel bins), then tiny TG-DP and
tiny CAV-MAE Sync trained for the same budget ({cfg.train_steps} steps × batch {cfg.batch_size}) and evaluated
on the held-out split. These are smoke-scale numbers that show the chain works; REPRODUCTION.md has the
controlled comparison.

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="DemoConfig key=value")
    args = parser.parse_args(argv)
    from tgdp.config import load_config

    cfg = load_config(DemoConfig, None, args.overrides)
    run_demo(args.out, cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
