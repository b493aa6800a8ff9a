"""`python -m tgdp.experiments`: the demo and the reproduction study. Each command parses options and calls one
library function (`tgdp.experiments.demo.run_demo`, `tgdp.experiments.reproduce.study.run_study`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from tgdp.pipeline.cli import group_app

__all__ = ["app"]

app = group_app(
    "tgdp-experiments", "Experiments over the whole toolkit: the demo chain and the controlled reproduction study."
)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="output directory (a rerun reuses its finished stages)"),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help="DemoConfig YAML"),
    overrides: list[str] = typer.Option([], "--set", help="DemoConfig key=value (repeatable), e.g. num_clips=400"),
) -> None:
    """The whole chain on the synthetic corpus through the real CLIs (synth → fetch → … → train ×2 → eval → report)."""
    from tgdp.config import load_config
    from tgdp.experiments.demo import DemoConfig, run_demo

    run_demo(out, load_config(DemoConfig, config, overrides))


@app.command("demo-s3")
def demo_s3(
    out: Path = typer.Option(Path("runs/demo-s3"), help="output directory (the local SeaweedFS data goes to OUT/s3)"),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help="DemoConfig YAML"),
    overrides: list[str] = typer.Option([], "--set", help="DemoConfig key=value (repeatable), e.g. train_steps=40"),
) -> None:
    """The demo chain with the store in a local S3 bucket (SeaweedFS): shard to s3://, train and embed from it."""
    from tgdp.config import load_config
    from tgdp.experiments.demo import DemoConfig
    from tgdp.experiments.demo_s3 import run_demo_s3

    run_demo_s3(out, load_config(DemoConfig, config, overrides))


@app.command()
def reproduce(
    out: Path = typer.Option(Path("runs/reproduce"), help="output directory: cached runs, results.json/.md"),
    short: bool = typer.Option(False, "--short", help="CI mode: 1 seed, a few steps, 3 configs, a tiny corpus"),
    store: Optional[Path] = typer.Option(None, help="a prebuilt store (STORE/train, STORE/eval): no synth"),
    seeds: Optional[str] = typer.Option(None, help="comma-separated training seeds (default 0..4; short: 0)"),
    steps: Optional[int] = typer.Option(None, help="optimiser steps per run (same for every config)"),
    batch_size: Optional[int] = typer.Option(None, help="global training batch (default: the budget's)"),
    lr: Optional[float] = typer.Option(None, help="peak learning rate (default: the budget's)"),
    lambda_contra: Optional[float] = typer.Option(None, help="λ_contra for every row (default: the budget's)"),
    configs: Optional[str] = typer.Option(None, help="comma-separated rows (default all; see REPRODUCTION.md)"),
    num_clips: Optional[int] = typer.Option(None, help="clips of the synthetic corpus"),
    num_classes: Optional[int] = typer.Option(None, help="classes of the synthetic corpus"),
    difficulty: Optional[float] = typer.Option(None, help="corpus difficulty 0-1 (synth.difficulty)"),
    probe_epochs: Optional[int] = typer.Option(None, help="probe training epochs"),
    scale: Literal["tiny", "base"] = typer.Option("tiny", help="tiny presets or the ViT-B ones"),
    sets: list[str] = typer.Option([], "--set", help="extra run-config override, repeatable"),
    jobs: int = typer.Option(2, min=1, help="runs in parallel (processes)"),
    threads: int = typer.Option(1, min=1, help="torch threads per run"),
    report: bool = typer.Option(False, "--report", help="only aggregate the cached results (of a study cut short)"),
) -> None:
    """Controlled reproduction of the TG-DP claims (REPRODUCTION.md): every row, same budget, 5 seeds, the gate."""
    from tgdp.experiments.reproduce.configs import make_study
    from tgdp.experiments.reproduce.report import render_tables
    from tgdp.experiments.reproduce.study import run_study

    study = make_study(
        out=out, short=short, store=store, seeds=seeds, steps=steps, batch_size=batch_size, lr=lr,
        lambda_contra=lambda_contra, configs=configs, num_clips=num_clips, num_classes=num_classes,
        difficulty=difficulty, probe_epochs=probe_epochs, scale=scale, sets=sets, jobs=jobs, threads=threads,
        report=report,
    )  # fmt: skip
    typer.echo(render_tables(run_study(study)))


@app.command()
def prereg(
    design: Path = typer.Option(..., "--design", exists=True, dir_okay=False, help="the committed design YAML"),
    out: Path = typer.Option(..., help="output directory: cached runs, prereg.json/.md, results.json/.md"),
    jobs: int = typer.Option(2, min=1, help="runs in parallel (processes)"),
    threads: int = typer.Option(1, min=1, help="torch threads per run"),
    report: bool = typer.Option(False, "--report", help="train nothing: report the cached runs (prereg-partial.md)"),
) -> None:
    """A pre-registered study (REPRODUCTION.md): everything it runs and decides comes from the design file."""
    from tgdp.experiments.reproduce.prereg import render_prereg, run_design

    typer.echo(render_prereg(run_design(design, out, jobs=jobs, threads=threads, report=report)))
