"""`tgdp-train`: pretrain CAV-MAE Sync / TG-DP from an Arrow store (one process, or under torchrun for DDP).

    tgdp-train --config tiny_tgdp --store STORE --run-dir runs/tiny [--set train.steps=50] [--resume] [--dry-run]
    tgdp-train ... --resume --allow-config-change --set train.batch_size=8   # continue under a changed config
    torchrun --nproc_per_node=8 -m tgdp.train.cli --config tgdp_base --store STORE --run-dir runs/tgdp

All logic lives in `tgdp.train.loop.fit`, which checks the store before any work starts; this module parses options,
checks the store itself only for `--dry-run`, and turns known errors into one-line messages with a non-zero exit
code (the shared handling of `tgdp.core.cli`).

Exit status: 0 done; 2 bad input (config, store, checkpoint, path or permission: one line, `--debug` for the
traceback); 3 non-finite loss (the last good state is checkpointed); 128 + N when stopped by signal N (130 SIGINT,
143 SIGTERM) after checkpointing, so `--resume` continues.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import typer

from tgdp.config import ConfigError, dump_config
from tgdp.config.cli import print_config
from tgdp.core.cli import ErrorsCommand, version_callback
from tgdp.train.config import list_presets, load_run_config

# torch and the training loop are imported inside `main`, so `--help`, `--version` and `--show-config` start fast.

__all__ = ["app", "main"]

app = typer.Typer(name="tgdp-train", no_args_is_help=True, add_completion=False)


@app.command(cls=ErrorsCommand)
def main(
    config: str = typer.Option(..., "--config", "-c", help=f"preset name ({', '.join(list_presets())}) or YAML"),
    store: str = typer.Option(None, "--store", help="store root (with train/), a split directory, or an s3:// URI"),
    run_dir: Path = typer.Option(None, "--run-dir", help="where config.yaml, metrics and checkpoints go"),
    set_: list[str] = typer.Option(
        [], "--set", help="config override section.key=value (repeatable), e.g. optim.lr=1e-4; keys: --show-config"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest good checkpoint in --run-dir"),
    allow_config_change: bool = typer.Option(
        False,
        "--allow-config-change",
        help="with --resume: continue under changed settings (recorded in RUN_DIR/config-history.json)",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the resolved config and parameter count, then exit"),
    show_config: bool = typer.Option(
        False, "--show-config", help="list every config key with its type, resolved value, default and help; exit"
    ),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks of expected errors too (or TGDP_DEBUG=1)"),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=version_callback("tgdp-train"), help="print the version and exit"
    ),
) -> None:
    """Train a model; `--dry-run` only resolves and checks the config (and the store when given)."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from tgdp.train import loop

    try:
        cfg = load_run_config(config, list(set_))
        if show_config:
            print_config(cfg)
            return
        if dry_run:
            from tgdp.model import build_model

            geo = loop.check_store(store, cfg)[1] if store is not None else None
            typer.echo(dump_config(cfg).rstrip())  # the model section is the resolved ModelConfig
            model = build_model(cfg.model_cfg())
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in model.parameters())
            typer.echo(f"# parameters: {trainable:,} trainable, {total:,} total (incl. EMA teacher)")
            if store is not None:
                typer.echo(f"# store: {store} ok ({geo})")
            return
        if store is None or run_dir is None:
            raise ConfigError("--store and --run-dir are required (unless --dry-run)")
        summary = loop.fit(cfg, store, run_dir, resume=resume, allow_config_change=allow_config_change)
    except loop.NonFiniteLossError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from None
    if summary.status == "interrupted":
        sig = signal.Signals(summary.signal or signal.SIGTERM)
        if rank == 0:
            typer.echo(
                f"interrupted by {sig.name} after step {summary.step}/{summary.total_steps}: checkpoint "
                f"{summary.checkpoint}; continue with the same command plus --resume",
                err=True,
            )
        raise typer.Exit(128 + int(sig))
    if rank == 0:
        typer.echo(
            f"done: step {summary.step}/{summary.total_steps}, {summary.samples_per_s:.1f} samples/s, "
            f"checkpoint {summary.checkpoint}"
        )


if __name__ == "__main__":
    app()
