"""`tgdp-data`: the ingestion CLI. Each command builds a config and calls one stage function; no logic here.

Every command reads one typed config, `tgdp.pipeline.config.PipelineConfig`: `--config FILE` (YAML, `base:` chains),
then `--set section.key=value` (repeatable), then the command's flags, which are only run-level choices (paths,
backend/address, workers, --force, --json). `tgdp-data validate ROOT --config pipeline.yaml` and `tgdp-data shard
ROOT --store S --config pipeline.yaml` therefore agree on `features.*`, and status/export on `fetch.max_attempts`.

The shared part of every tgdp CLI (`--version`, `--debug`, one-line expected errors with exit 2, `dumps_json`) is
`tgdp.core.cli`; the config view is `tgdp.config.cli.print_config`.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path
from typing import Any

import typer

from tgdp.config.cli import print_config
from tgdp.core.cli import EXIT_EXPECTED, dumps_json, group_app


def require_root(root: Path) -> None:
    """A pipeline ROOT must exist and hold the source manifest before any stage reads or creates anything in it."""
    from tgdp.pipeline.layout import manifest_path

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"pipeline ROOT {root} does not exist: pass the ROOT that `tgdp-data manifest` wrote, or create it with "
            f"`tgdp-data manifest {root} --dataset audioset|vggsound`"
        )
    if not manifest_path(root).is_file():
        raise FileNotFoundError(
            f"{root} has no source manifest ({manifest_path(root)}): run "
            f"`tgdp-data manifest {root} --dataset audioset|vggsound` first"
        )


# --- tgdp-data ---

app = group_app("tgdp-data", "TG-DP data pipeline: manifest → fetch → validate → export → shard → verify.")

# The options every command with settings takes (module docstring): one config, `--set` over it.
CONFIG = typer.Option(None, "--config", help="PipelineConfig YAML (`base:` chains); sections features, fetch, ...")


def set_option(example: str) -> Any:
    """`--set` with an example from the command's own section (`tgdp-data config` lists every key)."""
    return typer.Option(
        [], "--set", help=f"config override section.key=value (repeatable), e.g. {example}; keys: `tgdp-data config`"
    )


AS_JSON = typer.Option(False, "--json", help="print the result as JSON")
BACKEND = typer.Option("ray", help="ray | serial")
WORKERS = typer.Option(2, help="parallel workers (CPUs of a local Ray)")
ADDRESS = typer.Option(None, help="Ray cluster address (default: start a local one)")
PROGRESS = typer.Option(True, help="progress bar with rate/ETA on stderr (off with --json)")


def pipeline_config(config: Path | None, overrides: list[str], **sections: dict[str, Any]) -> Any:
    """The command's `PipelineConfig`: file ← `--set` ← its run-level flags (`sections`, None = not given)."""
    from tgdp.pipeline.config import load_pipeline_config

    return load_pipeline_config(config, overrides, sections)


@app.command("manifest")
def manifest_cmd(
    root: Path = typer.Argument(..., help="pipeline ROOT (writes ROOT/manifest/source.parquet)"),
    dataset: str | None = typer.Option(
        None, help="audioset | vggsound | files (your own media: --from DIR) (or manifest.dataset in --config)"
    ),
    csv: list[str] = typer.Option(
        [], help="segment list PATH or PATH:split (repeatable); none = download. files: one CSV file,id,start_s,..."
    ),
    from_dir: Path | None = typer.Option(None, "--from", help="files: the folder of media (each file is a clip)"),
    labels: Path | None = typer.Option(None, help="label index csv (index,mid,display_name): checks labels"),
    retrieval: list[Path] = typer.Option([], help="retrieval/eval list (CAV-MAE json or csv) for leak flags"),
    force: bool = typer.Option(False, help="replace ROOT's manifest even if it drops clips that have events"),
    config: Path | None = CONFIG,
    set_: list[str] = set_option("manifest.skip_bad=true"),
    as_json: bool = AS_JSON,
) -> None:
    """Build the source manifest from the official clip lists (hash and row-count checked), or with `--dataset files
    --from DIR` from a folder of your own media (docs/WORKFLOW.md); malformed rows fail the build unless `--set
    manifest.skip_bad=true` (then they go to rejected.parquet; no clip left is still an error). A list without data
    rows is an error; a manifest that drops clips which already have events needs `--force`."""
    from rich.console import Console
    from rich.table import Table

    from tgdp.config import ConfigError
    from tgdp.pipeline.manifest import build_manifest

    flags = dict(
        dataset=dataset,
        csv=csv or None,
        labels=str(labels) if labels else None,
        retrieval=[str(r) for r in retrieval] or None,
        from_dir=str(from_dir) if from_dir else None,
    )
    cfg = pipeline_config(config, set_, manifest=flags)
    if cfg.manifest is None:
        raise ConfigError("manifest.dataset is not set: pass --dataset audioset|vggsound|files")
    result = build_manifest(root, cfg.manifest, force=force)
    if as_json:
        typer.echo(
            dumps_json(
                {
                    "manifest": str(result.manifest),
                    "meta": str(result.meta),
                    "rejected_file": str(result.rejected) if result.rejected else None,
                    "rows": result.rows,
                    "split_counts": result.split_counts,
                    "leak_eval_overlap": result.leak_count,
                    "rejected": len(result.issues),
                    "warnings": list(result.warnings),
                }
            )
        )
        return
    # Paths are printed as plain lines, never inside a table (a table folds them mid-word at its own width).
    typer.echo(f"{result.manifest}: {result.rows} clips")
    table = Table()
    table.add_column("split", no_wrap=True)
    table.add_column("clips", justify="right")
    for split, n in result.split_counts.items():
        table.add_row(split, str(n))
    Console().print(table)
    typer.echo(f"leak_eval_overlap={result.leak_count} rejected={len(result.issues)} meta={result.meta}")
    for warning in result.warnings:
        Console(stderr=True).print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)


@app.command("synth")
def synth_cmd(
    out: Path = typer.Argument(..., help="output directory for the corpus"),
    workers: int | None = typer.Option(None, help="parallel ffmpeg encoders (default synth.workers)"),
    config: Path | None = CONFIG,
    set_: list[str] = set_option("synth.num_clips=50"),
) -> None:
    """Write a synthetic audio-visual corpus (real media files) with ground truth and AudioSet-format CSVs
    (`--set synth.num_clips=50 --set synth.seed=1 --set synth.difficulty=0.5`)."""
    from tgdp.pipeline.synth import generate

    cfg = pipeline_config(config, set_, synth=dict(workers=workers))
    result = generate(cfg.synth, out)
    typer.echo(
        f"wrote {result.num_clips} clips to {result.out} in {result.elapsed_s:.1f} s; splits {result.split_counts}; "
        f"faults {result.fault_counts}; ground truth {result.ground_truth}"
    )


@app.command("truth")
def truth_cmd(
    store: Path = typer.Argument(..., help="STORE directory built from a synth corpus"),
    split: list[str] = typer.Option(["train", "eval"], help="store split(s) to cover"),
    config: Path | None = CONFIG,
    set_: list[str] = set_option("synth.seed=1"),
) -> None:
    """Write the per-patch ground truth of a store built from `tgdp-data synth` (STORE/truth/<split>.npz: object /
    decoy / background per frame cell, note / distractor / quiet per fbank frame), recomputed from the synth
    section of the same config; training logs the teacher's selection precision when it is there."""
    from tgdp.pipeline.truth import write_truth
    from tgdp.store import Store

    cfg = pipeline_config(config, set_)
    for name in split:
        path = write_truth(Store.open(store, split=name), name, cfg.synth, store)
        typer.echo(f"wrote {path}")


@app.command("serve")
def serve_cmd(
    directory: Path = typer.Argument(..., help="corpus dir holding videos/<ytid>.<ext>"),
    port: int = typer.Option(8765, help="port on 127.0.0.1 (0 = any free port)"),
    faults: Path | None = typer.Option(None, help="JSON file {ytid: {kind, status, delay_s, times, ...}}"),
) -> None:
    """Serve a local media corpus over HTTP (127.0.0.1 only) with optional fault injection."""
    from tgdp.pipeline.serve import serve_forever

    serve_forever(directory, port=port, faults=faults)


@app.command("fetch")
def fetch_cmd(
    root: Path = typer.Argument(..., help="pipeline ROOT (with manifest/source.parquet)"),
    backend: str | None = typer.Option(None, help="ray | serial (default fetch.backend: ray)"),
    workers: int | None = typer.Option(None, help="CPUs of a local Ray (default fetch.workers: 2)"),
    address: str | None = ADDRESS,
    cookies: Path | None = typer.Option(None, help="Netscape cookies file for yt-dlp (never logged)"),
    retry_now: bool = typer.Option(False, help="ignore the next_attempt_after backoff of transient failures"),
    config: Path | None = CONFIG,
    set_: list[str] = set_option("fetch.rate_per_hour=0"),
    progress: bool = PROGRESS,
    as_json: bool = typer.Option(False, "--json", help="print the run summary as JSON"),
) -> None:
    """Download every pending clip's padded segment with yt-dlp (resumable; every attempt is an event). Settings
    are `fetch.*` keys: `--set fetch.sessions=4 --set fetch.rate_per_hour=0 --set fetch.limit=100`."""
    from tgdp.pipeline.fetch import FetchInterrupted, fetch

    run = dict(backend=backend, workers=workers, address=address, retry_now=retry_now or None)
    cfg = pipeline_config(config, set_, fetch=run)
    # The cookies path is a secret's location: never in a config file, a dump or a log (FetchConfig excludes it).
    fetch_cfg = cfg.fetch.model_copy(update={"cookies": cookies, "progress": progress and not as_json})
    require_root(root)
    try:
        summary = fetch(root, fetch_cfg)
    except FetchInterrupted as exc:  # Ctrl-C: say what was kept, exit as a shell does after SIGINT
        typer.echo(str(exc), err=True)
        raise typer.Exit(130) from None
    d = summary.as_dict()
    if as_json:
        typer.echo(dumps_json(d))
        return
    typer.echo(f"selected {d['selected']}, attempted {d['attempted']}, ok {d['ok']} in {d['seconds']:.1f} s")
    for kind in ("failed", "skipped"):
        for reason, n in sorted(d[kind].items()):
            typer.echo(f"  {kind} {reason}: {n}")


@app.command("import")
def import_cmd(
    root: Path = typer.Argument(..., help="pipeline ROOT"),
    from_dir: Path = typer.Option(..., "--from", help="directory of already-downloaded media"),
    copy: bool = typer.Option(False, help="copy instead of hard-linking"),
    as_json: bool = typer.Option(False, "--json", help="print the report (every file not imported) as JSON"),
) -> None:
    """Register already-downloaded files (named by ytid, video id or clip id) as fetched clips. Exits 2 when files
    were found but none was imported (nor was already)."""
    from tgdp.pipeline.importer import import_clips

    require_root(root)
    report = import_clips(root, from_dir, copy=copy)
    typer.echo(dumps_json(report.as_dict()) if as_json else "\n".join(report.lines()))
    if report.imported == 0 and report.already_fetched == 0:
        reasons = ", ".join(f"{r} {n}" for r, n in report.as_dict()["not_imported_by_reason"].items()) or "no files"
        typer.echo(
            f"error: 0 of {report.files} files under {from_dir} imported ({reasons}): name each file by its clip "
            f"id, video id or ytid, or build the manifest from the folder (`tgdp-data manifest {root} --dataset "
            f"files --from {from_dir}`)",
            err=True,
        )
        raise typer.Exit(EXIT_EXPECTED)


@app.command("config")
def config_cmd(
    section: str | None = typer.Argument(None, help="only this section or key, e.g. validate or fetch.max_attempts"),
    config: Path | None = CONFIG,
    set_: list[str] = set_option("validate.min_frames=8"),
    show: bool = typer.Option(False, "--show", help="print the resolved config as YAML that --config loads back"),
    as_json: bool = AS_JSON,
) -> None:
    """List every PipelineConfig key with its type, resolved value (after --config and --set), default and help."""
    print_config(pipeline_config(config, set_), section, show, as_json)


def _lean_arrow_memory() -> None:
    """jemalloc hands freed Arrow memory back to the OS sooner than the default mimalloc pool: 5-10% less peak RSS
    and less system time for status/export at 2 M clips (measured for BENCHMARKS.md, scale)."""
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except (NotImplementedError, pa.ArrowNotImplementedError):  # a pyarrow built without jemalloc
        pass


@app.command("status")
def status_cmd(
    root: Path = typer.Argument(..., help="pipeline ROOT"),
    config: Path | None = CONFIG,
    set_: list[str] = set_option("fetch.max_attempts=3"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable funnel"),
) -> None:
    """Print the funnel: source → fetched / gone by reason / pending transient / never tried → validate → shard.
    `fetch.max_attempts` (the cap the fetch runs used) decides gave_up."""
    from tgdp.pipeline.status import format_funnel, funnel

    cfg = pipeline_config(config, set_)
    require_root(root)
    _lean_arrow_memory()
    f = funnel(root, max_attempts=cfg.fetch.max_attempts, progress=not as_json)
    typer.echo(dumps_json(f) if as_json else format_funnel(f))
    if not f["check"]:
        raise typer.Exit(1)


@app.command("clips")
def clips_cmd(
    root: Path = typer.Argument(..., help="pipeline ROOT"),
    state: list[str] = typer.Option([], help="only clips in this state (repeatable): dropped, gone, valid, ..."),
    reason: list[str] = typer.Option([], help="only clips with this reason (repeatable), e.g. no_audio_stream"),
    split: list[str] = typer.Option([], help="only clips of this manifest split (repeatable)"),
    config: Path | None = CONFIG,
    set_: list[str] = set_option("fetch.max_attempts=3"),
    as_json: bool = typer.Option(False, "--json", help="print {root, total, count, clips: [...]} as JSON"),
    as_csv: bool = typer.Option(False, "--csv", help="print CSV with a header"),
) -> None:
    """List clips with their state, the stage and reason behind it, its detail and their files (raw media, store
    shard); `--state dropped` finds every clip validate dropped. States are the funnel's (`tgdp-data status`)."""
    import csv as _csv

    from tgdp.config import ConfigError
    from tgdp.pipeline.clips import CLIP_SCHEMA, clip_rows, filter_clips

    cfg = pipeline_config(config, set_)
    require_root(root)
    if as_json and as_csv:
        raise ConfigError("choose one of --json and --csv")
    every = clip_rows(root, max_attempts=cfg.fetch.max_attempts)
    try:
        rows = filter_clips(every, state, reason, split).to_pylist()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if as_json:
        typer.echo(dumps_json({"root": str(root), "total": every.num_rows, "count": len(rows), "clips": rows}))
    elif as_csv:
        writer = _csv.DictWriter(_sys.stdout, fieldnames=CLIP_SCHEMA.names, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        for r in rows:
            typer.echo("  ".join(str(r[k] or "-") for k in ("clip_id", "split", "state", "stage", "reason")))
            for key in ("detail", "raw_path", "shard_file"):
                if r[key]:
                    typer.echo(f"    {key}: {r[key]}")
        typer.echo(f"{len(rows)} of {every.num_rows} clips", err=True)


@app.command("validate")
def validate_cmd(
    root: Path = typer.Argument(..., help="pipeline ROOT"),
    backend: str = BACKEND,
    workers: int = WORKERS,
    address: str | None = ADDRESS,
    force: bool = typer.Option(False, help="re-validate clips already validated under the current rule"),
    config: Path | None = CONFIG,
    set_: list[str] = set_option("validate.min_frames=8"),
    progress: bool = PROGRESS,
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Probe and decode every fetched clip; record metrics and the versioned verdict as validate events. Settings are
    `validate.*`, store features `features.*` (the same keys shard reads)."""
    from dataclasses import asdict

    from tgdp.pipeline.validate import run_validate

    pcfg = pipeline_config(config, set_)
    require_root(root)
    run = dict(backend=backend, num_workers=workers, address=address, force=force, progress=progress and not as_json)
    s = run_validate(root, pcfg.validation, features=pcfg.features, pad_s=pcfg.fetch.pad_s, **run)
    if as_json:
        typer.echo(dumps_json(asdict(s)))
        return
    typer.echo(f"rule: {s.valid_rule}")
    again = f" ({s.features_changed} again for other feature settings)" if s.features_changed else ""
    typer.echo(
        f"fetched {s.fetched}: up to date {s.skipped_up_to_date}, validated now {s.validated}{again}: valid {s.valid}"
    )
    if not s.validated:
        typer.echo(
            "nothing to validate: every fetched clip has a verdict under this rule (and valid ones a feature cache "
            "entry under these features.* settings); `tgdp-data status` counts them, --force validates again"
        )
    for reason, n in sorted(s.dropped.items()):
        typer.echo(f"  dropped {reason}: {n}")


@app.command("export")
def export_cmd(
    root: Path = typer.Argument(..., help="pipeline ROOT"),
    out: Path = typer.Option(..., help="output directory (manifest.parquet, clip_ids.txt, funnel.json/.md)"),
    config: Path | None = CONFIG,
    set_: list[str] = set_option("fetch.max_attempts=3"),
    as_json: bool = typer.Option(False, "--json", help="print {out, files, valid, funnel} as JSON"),
) -> None:
    """Write the valid clips (filtered manifest + id list), every other clip with its state and reason
    (dropped.parquet) and the funnel that accounts for every source clip (`fetch.max_attempts` decides gave_up, as in
    status)."""
    from tgdp.pipeline.export import funnel_markdown, run_export

    cfg = pipeline_config(config, set_)
    require_root(root)
    _lean_arrow_memory()
    result = run_export(root, out, max_attempts=cfg.fetch.max_attempts, progress=not as_json)
    names = ("manifest.parquet", "clip_ids.txt", "dropped.parquet", "funnel.json", "funnel.md")
    files = [str(out / name) for name in names]
    if as_json:
        typer.echo(dumps_json({"out": str(out), "files": files, "valid": result.valid, "funnel": result.funnel}))
        return
    typer.echo(funnel_markdown(result.funnel, result.paper_line))
    typer.echo(
        f"wrote {out}: manifest.parquet ({result.valid:,} valid clips), clip_ids.txt, dropped.parquet (every other "
        f"clip with its state and reason), funnel.json, funnel.md"
    )


@app.command("shard")
def shard_cmd(
    root: Path = typer.Argument(..., help="pipeline ROOT"),
    store: str = typer.Option(..., help="store directory or s3://, gs://, az:// URI (writes STORE/train, STORE/eval)"),
    backend: str = BACKEND,
    workers: int = WORKERS,
    address: str | None = ADDRESS,
    force: bool = typer.Option(False, help="rebuild splits even when their inputs are unchanged"),
    config: Path | None = CONFIG,
    set_: list[str] = set_option("shard.shard_bytes=500000000"),
    progress: bool = PROGRESS,
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Pack valid clips (validate's cached JPEG frames + fbank, else one decode) into memory-mappable Arrow shards.
    Settings are `shard.*`, store features `features.*` (the same keys validate reads)."""
    from dataclasses import asdict

    from tgdp.pipeline.shard import run_shard

    pcfg = pipeline_config(config, set_)
    require_root(root)  # before anything is created: no empty STORE for a wrong ROOT
    s = run_shard(
        root,
        store,
        pcfg.shard,
        features=pcfg.features,
        endpoint_url=pcfg.store.endpoint_url,
        backend=backend,
        num_workers=workers,
        address=address,
        force=force,
        progress=progress and not as_json,
    )
    if not s.rows:
        typer.echo(f"warning: no valid clips to shard in {root}: run validate first (`tgdp-data status`)", err=True)
    if as_json:
        typer.echo(dumps_json({"store": str(store), **asdict(s)}))
        return
    for split in sorted(s.rows):
        note = " (up to date)" if split in s.up_to_date else ""
        typer.echo(f"{split}: {s.rows[split]} rows in {s.shards[split]} shards{note}")
    typer.echo(f"from validate's cache {s.from_cache}, decoded {s.decoded}, reused staged shards {s.reused_shards}")
    for clip_id, reason in sorted(s.failed.items()):
        typer.echo(f"  not sharded {clip_id}: {reason}")


@app.command("verify")
def verify_cmd(
    store: str = typer.Argument(..., help="store directory or URI, or one split of it"),
    as_json: bool = typer.Option(False, "--json", help="print {store, ok, splits, problems} as JSON"),
    config: Path | None = CONFIG,
    set_: list[str] = set_option("store.endpoint_url=http://127.0.0.1:8333"),
) -> None:
    """Check shard checksums, row counts, that every JPEG decodes to size×size×3 and every fbank is finite."""
    from tgdp.store.fs import location
    from tgdp.store.verify import verify_store

    loc = location(store, pipeline_config(config, set_).store.endpoint_url)
    if not loc.remote and not loc.local.is_dir():
        raise FileNotFoundError(f"store {store} does not exist: pass the --store directory `tgdp-data shard` wrote")
    loc.check_bucket()
    report = verify_store(loc)
    if as_json:
        typer.echo(
            dumps_json({"store": str(store), "ok": report.ok, "splits": report.splits, "problems": report.problems})
        )
        if not report.ok:
            raise typer.Exit(1)
        return
    for split, n in sorted(report.splits.items()):
        typer.echo(f"{split}: {n} rows checked")
    for problem in report.problems:
        typer.echo(f"FAIL {problem}", err=True)
    if not report.ok:
        raise typer.Exit(1)
    typer.echo("ok")


if __name__ == "__main__":
    app()
