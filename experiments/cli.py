"""`python -m tgdp.experiments`: the demo and the reproduction study. Each command parses options and calls one
library function (`tgdp.experiments.demo.run_demo`, `tgdp.experiments.reproduce.study.run_reproduce`, ...). Settings
are typed configs (`DemoConfig`, `ReproduceConfig`) read from `--config FILE` and `--set key=value`; options are the
run-level choices only (paths, `--short`, `--report`, jobs and threads)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tgdp.core.cli import group_app

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
    jobs: int = typer.Option(2, min=1, help="runs in parallel (processes)"),
    threads: int = typer.Option(1, min=1, help="torch threads per run"),
    report: bool = typer.Option(False, "--report", help="only aggregate the cached results (of a study cut short)"),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help="ReproduceConfig YAML"),
    overrides: list[str] = typer.Option(
        [], "--set", help="ReproduceConfig key=value (repeatable), e.g. seeds=0,1 or overrides=[model.lambda_dis=0]"
    ),
) -> None:
    """Controlled reproduction of the TG-DP claims (REPRODUCTION.md): every row, same budget, 5 seeds, the gate."""
    from tgdp.config import load_config
    from tgdp.experiments.reproduce.configs import ReproduceConfig, make_study
    from tgdp.experiments.reproduce.study import run_reproduce

    cfg = load_config(ReproduceConfig, config, overrides)
    typer.echo(run_reproduce(make_study(out, cfg, short, store, jobs, threads, report)))


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
