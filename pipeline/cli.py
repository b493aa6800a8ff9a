"""`tgdp-data`: the ingestion CLI. Each command builds a config and calls one stage function; no logic here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="tgdp-data",
    help="TG-DP data pipeline: manifest → fetch → validate → export → shard → verify.",
    no_args_is_help=True,
    add_completion=False,
)

# --- section: manifest + synth (owner: manifest/synth) ---
from pathlib import Path as _MPath  # noqa: E402 - section-local imports keep the sections independent


@app.command("manifest")
def manifest_cmd(
    root: _MPath = typer.Argument(..., help="pipeline ROOT (writes ROOT/manifest/source.parquet)"),
    dataset: str = typer.Option(..., help="audioset | vggsound"),
    csv: list[str] = typer.Option([], help="segment list PATH or PATH:split (repeatable); none = download"),
    labels: _MPath | None = typer.Option(None, help="label index csv (index,mid,display_name): checks labels"),
    retrieval: list[_MPath] = typer.Option([], help="retrieval/eval list (CAV-MAE json or csv) for leak flags"),
    skip_bad: bool = typer.Option(False, help="write malformed rows to rejected.parquet instead of failing"),
) -> None:
    """Build the source manifest from the official clip lists (hash and row-count checked)."""
    from rich.console import Console
    from rich.table import Table

    from tgdp.pipeline.config import ConfigError, validate_config
    from tgdp.pipeline.manifest import ManifestConfig, ManifestError, build_manifest

    console = Console(stderr=True)
    try:
        cfg = validate_config(
            ManifestConfig,
            dict(
                dataset=dataset,
                csv=csv,
                labels=str(labels) if labels else None,
                retrieval=[str(r) for r in retrieval],
                skip_bad=skip_bad,
            ),
        )
        result = build_manifest(root, cfg)
    except (ConfigError, ManifestError) as exc:
        console.print(f"[red]manifest failed:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None
    table = Table(title=f"{result.manifest} ({result.rows} clips)")
    table.add_column("split")
    table.add_column("clips", justify="right")
    for split, n in result.split_counts.items():
        table.add_row(split, str(n))
    Console().print(table)
    typer.echo(f"leak_eval_overlap={result.leak_count} rejected={len(result.issues)} meta={result.meta}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


@app.command("synth")
def synth_cmd(
    out: _MPath = typer.Argument(..., help="output directory for the corpus"),
    config: _MPath | None = typer.Option(None, help="SynthConfig YAML"),
    num_clips: int | None = typer.Option(None, help="clips (default 200)"),
    seed: int | None = typer.Option(None, help="random seed (default 0)"),
    difficulty: float | None = typer.Option(None, help="0 (clean) .. 1 (hard): silences, distractors, clutter"),
    overrides: list[str] = typer.Option([], "--set", help="config override key=value (repeatable)"),
) -> None:
    """Write a synthetic audio-visual corpus (real media files) with ground truth and AudioSet-format CSVs."""
    from rich.console import Console

    from tgdp.pipeline.config import ConfigError, load_config
    from tgdp.pipeline.synth import SynthConfig, generate

    extra = [
        f"{k}={v}" for k, v in (("num_clips", num_clips), ("seed", seed), ("difficulty", difficulty)) if v is not None
    ]
    try:
        cfg = load_config(SynthConfig, config, [*overrides, *extra])
        result = generate(cfg, out)
    except (ConfigError, FileExistsError, FileNotFoundError) as exc:
        Console(stderr=True).print(f"[red]synth failed:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    Console().print(
        f"wrote {result.num_clips} clips to {result.out} in {result.elapsed_s:.1f} s; splits {result.split_counts}; "
        f"faults {result.fault_counts}; ground truth {result.ground_truth}",
        highlight=False,
    )


# --- end section: manifest + synth ---

# --- section: serve + fetch + import + status (owner: fetch) ---
import json as _json  # noqa: E402 - section-local imports keep the sections independent
import pathlib  # noqa: E402


@app.command("serve")
def serve_cmd(
    directory: pathlib.Path = typer.Argument(..., help="corpus dir holding videos/<ytid>.<ext>"),
    port: int = typer.Option(8765, help="port on 127.0.0.1 (0 = any free port)"),
    faults: pathlib.Path | None = typer.Option(None, help="JSON file {ytid: {kind, status, delay_s, times, ...}}"),
) -> None:
    """Serve a local media corpus over HTTP (127.0.0.1 only) with optional fault injection."""
    from tgdp.pipeline.serve import serve_forever

    serve_forever(directory, port=port, faults=faults)


@app.command("fetch")
def fetch_cmd(
    root: pathlib.Path = typer.Argument(..., help="pipeline ROOT (with manifest/source.parquet)"),
    url_template: str = typer.Option(
        "https://www.youtube.com/watch?v={ytid}", help="download URL; {ytid} is URL-quoted in"
    ),
    sessions: int = typer.Option(1, help="download sessions (Ray actors; one per egress IP/account)"),
    in_flight: int = typer.Option(2, help="clips in flight per session"),
    rate_per_hour: float = typer.Option(
        300.0, help="clip starts per hour per session (0 = unlimited: use it for a local `serve`)"
    ),
    max_attempts: int = typer.Option(5, help="transient failures before a clip is parked as gave_up"),
    backoff_s: float = typer.Option(900.0, help="first retry delay after a transient failure (doubles)"),
    retry_now: bool = typer.Option(False, help="ignore next_attempt_after backoff"),
    limit: int | None = typer.Option(None, help="attempt at most this many clips"),
    split: list[str] = typer.Option([], help="only these manifest splits (repeatable)"),
    cookies: pathlib.Path | None = typer.Option(None, help="Netscape cookies file for yt-dlp (never logged)"),
    socket_timeout: float = typer.Option(30.0),
    retries: int = typer.Option(3, help="yt-dlp retries per attempt"),
    backend: str = typer.Option("ray", help="ray | serial"),
    address: str | None = typer.Option(None, help="Ray cluster address (default: a local Ray)"),
    num_cpus: int = typer.Option(2, help="CPUs for a local Ray"),
    progress: bool = typer.Option(True, help="progress bar with rate/ETA"),
    as_json: bool = typer.Option(False, "--json", help="print the run summary as JSON"),
) -> None:
    """Download every pending clip's padded segment with yt-dlp (resumable; every attempt is an event)."""
    from tgdp.pipeline.config import validate_config
    from tgdp.pipeline.fetch import FetchConfig, FetchInterrupted, fetch

    cfg = validate_config(
        FetchConfig,
        dict(
            url_template=url_template,
            sessions=sessions,
            in_flight=in_flight,
            rate_per_hour=rate_per_hour,
            max_attempts=max_attempts,
            backoff_s=backoff_s,
            retry_now=retry_now,
            limit=limit,
            splits=split,
            cookies=cookies,
            socket_timeout=socket_timeout,
            retries=retries,
            backend=backend,
            address=address,
            num_cpus=num_cpus,
            progress=progress,
        ),
    )
    try:
        summary = fetch(root, cfg)
    except FetchInterrupted as exc:  # Ctrl-C: say what was kept, exit as a shell does after SIGINT
        typer.echo(str(exc), err=True)
        raise typer.Exit(130) from None
    typer.echo(_json.dumps(summary.as_dict(), indent=None if as_json else 2))


@app.command("import")
def import_cmd(
    root: pathlib.Path = typer.Argument(..., help="pipeline ROOT"),
    from_dir: pathlib.Path = typer.Option(..., "--from", help="directory of already-downloaded media"),
    copy: bool = typer.Option(False, help="copy instead of hard-linking"),
) -> None:
    """Register already-downloaded files (named by ytid, video id or clip id) as fetched clips."""
    from tgdp.pipeline.importer import import_clips

    report = import_clips(root, from_dir, copy=copy)
    typer.echo(_json.dumps(report.as_dict(), indent=2))


@app.command("status")
def status_cmd(
    root: pathlib.Path = typer.Argument(..., help="pipeline ROOT"),
    max_attempts: int = typer.Option(5, help="the cap the fetch runs used (decides gave_up)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable funnel"),
) -> None:
    """Print the funnel: source → fetched / gone by reason / pending transient / never tried (→ validate, shard)."""
    from tgdp.pipeline.status import format_funnel, funnel

    f = funnel(root, max_attempts=max_attempts)
    typer.echo(_json.dumps(f, indent=2) if as_json else format_funnel(f))
    if not f["check"]:
        raise typer.Exit(1)


# --- end section: serve + fetch + import + status ---

# --- section: validate + export + shard + verify (owner: validate/shard) ---

from pathlib import Path as _VPath  # noqa: E402 - section-local imports keep the sections independent


def _stage_config(cls, overrides: list[str]):
    from tgdp.pipeline.config import ConfigError, load_config

    try:
        return load_config(cls, None, overrides)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("validate")
def validate_cmd(
    root: _VPath = typer.Argument(..., help="pipeline ROOT"),
    backend: str = typer.Option("ray", help="ray | serial"),
    workers: int = typer.Option(2, help="parallel workers"),
    address: str | None = typer.Option(None, help="Ray cluster address (default: start a local one)"),
    force: bool = typer.Option(False, help="re-validate clips already validated under the current rule"),
    set_: list[str] = typer.Option([], "--set", help="ValidateConfig override key=value (repeatable)"),
) -> None:
    """Probe and decode every fetched clip; record metrics and the versioned verdict as validate events."""
    from tgdp.pipeline.validate import ValidateConfig, run_validate

    cfg = _stage_config(ValidateConfig, set_)
    s = run_validate(root, cfg, backend=backend, num_workers=workers, address=address, force=force, progress=True)
    typer.echo(f"rule: {s.valid_rule}")
    typer.echo(f"fetched {s.fetched}, up to date {s.skipped_up_to_date}, validated {s.validated}: valid {s.valid}")
    for reason, n in sorted(s.dropped.items()):
        typer.echo(f"  dropped {reason}: {n}")


@app.command("export")
def export_cmd(
    root: _VPath = typer.Argument(..., help="pipeline ROOT"),
    out: _VPath = typer.Option(..., help="output directory (manifest.parquet, clip_ids.txt, funnel.json/.md)"),
) -> None:
    """Write the valid clips (filtered manifest + id list) and the funnel that accounts for every source clip."""
    from tgdp.pipeline.export import funnel_markdown, run_export

    result = run_export(root, out)
    typer.echo(funnel_markdown(result.funnel, result.paper_line))


@app.command("shard")
def shard_cmd(
    root: _VPath = typer.Argument(..., help="pipeline ROOT"),
    store: _VPath = typer.Option(..., help="store directory (writes STORE/train and STORE/eval)"),
    backend: str = typer.Option("ray", help="ray | serial"),
    workers: int = typer.Option(2, help="parallel workers"),
    address: str | None = typer.Option(None, help="Ray cluster address"),
    force: bool = typer.Option(False, help="rebuild splits even when their inputs are unchanged"),
    set_: list[str] = typer.Option([], "--set", help="ShardConfig override key=value (repeatable)"),
) -> None:
    """Pack valid clips (validate's cached JPEG frames + fbank, else one decode) into memory-mappable Arrow shards."""
    from tgdp.pipeline.shard import ShardConfig, ShardError, run_shard

    cfg = _stage_config(ShardConfig, set_)
    try:
        s = run_shard(
            root, store, cfg, backend=backend, num_workers=workers, address=address, force=force, progress=True
        )
    except ShardError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for split in sorted(s.rows):
        note = " (up to date)" if split in s.up_to_date else ""
        typer.echo(f"{split}: {s.rows[split]} rows in {s.shards[split]} shards{note}")
    typer.echo(f"from validate's cache {s.from_cache}, decoded {s.decoded}, reused staged shards {s.reused_shards}")
    for clip_id, reason in sorted(s.failed.items()):
        typer.echo(f"  not sharded {clip_id}: {reason}")


@app.command("verify")
def verify_cmd(
    store: _VPath = typer.Argument(..., help="store directory or one split directory"),
) -> None:
    """Check shard checksums, row counts, that every JPEG decodes to size×size×3 and every fbank is finite."""
    from tgdp.pipeline.shard import verify_store

    report = verify_store(store)
    for split, n in sorted(report.splits.items()):
        typer.echo(f"{split}: {n} rows checked")
    for problem in report.problems:
        typer.echo(f"FAIL {problem}", err=True)
    if not report.ok:
        raise typer.Exit(1)
    typer.echo("ok")


# --- end section: validate + export + shard + verify ---


if __name__ == "__main__":
    app()
