"""`tgdp-data`: the ingestion CLI. Each command builds a config and calls one stage function; no logic here.

The first section is shared by the three CLIs (`tgdp-data`, `tgdp-train`, `tgdp-eval`): `--version`, `--debug`, and
the one way expected errors end a command (docs/RELIABILITY.md, "CLI errors"): an exception of a class in
`expected_errors()` prints one line `error: <culprit and fix>` on stderr and exits 2; anything else is a bug and keeps
its traceback. `--debug` (or TGDP_DEBUG=1) shows the traceback of expected errors too.
"""

from __future__ import annotations

import errno as _errno
import json as _json
import os as _os
import sys as _sys
from typing import Any

import click as _click
import typer
from typer.core import TyperCommand as _TyperCommand
from typer.core import TyperGroup as _TyperGroup

# --- section: shared by the three CLIs (errors, --version, --debug) ---

EXIT_EXPECTED = 2  # bad input or environment: one line, no traceback
# The expected-error classes, by module: a module that was never imported cannot have raised its error, so the
# lookup imports nothing (the CLIs stay fast to start and `tgdp.model` keeps its light imports).
_EXPECTED = {
    "tgdp.config": ("ConfigError",),
    "tgdp.pipeline.store": ("StoreError", "StoreMismatchError"),
    "tgdp.pipeline.manifest": ("ManifestError",),
    "tgdp.pipeline.shard": ("ShardError",),
    "tgdp.model.checkpoint": ("CheckpointError",),
}
# Environment errors that are the user's to fix (a path, a permission, a full or read-only disk), with the fix.
_OS_FIX = {
    _errno.ENOENT: "check the path",
    _errno.ENOTDIR: "check the path",
    _errno.EISDIR: "give a file, not a directory",
    _errno.EEXIST: "remove it or choose another path",
    _errno.EACCES: "permission denied: fix its permissions or choose a writable location",
    _errno.EPERM: "permission denied: fix its permissions or choose a writable location",
    _errno.EROFS: "read-only file system: choose a writable location",
    _errno.ENOSPC: "no space left on the device: free space or choose another disk",
    _errno.EDQUOT: "disk quota exceeded: free space or choose another disk",
}


def tgdp_version() -> str:
    from tgdp.config import __version__

    return __version__


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception classes a command reports as one line (documented in docs/RELIABILITY.md)."""
    found: list[type[BaseException]] = []
    for module, names in _EXPECTED.items():
        mod = _sys.modules.get(module)
        if mod is not None:
            found += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return tuple(found)


def error_line(exc: BaseException) -> str | None:
    """One line naming the culprit and the fix for an expected error; None for anything else (a bug)."""
    if isinstance(exc, OSError) and exc.errno in _OS_FIX:
        what = exc.filename if exc.filename is not None else ""
        detail = exc.strerror or str(exc)
        return f"{what}: {detail}; {_OS_FIX[exc.errno]}" if what else f"{detail}; {_OS_FIX[exc.errno]}"
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, FileExistsError, PermissionError)) or isinstance(
        exc, expected_errors()
    ):
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def _debug(ctx: _click.Context) -> bool:
    return bool(ctx.meta.get("tgdp.debug")) or _os.environ.get("TGDP_DEBUG", "") not in ("", "0")


def _report(ctx: _click.Context, exc: Exception) -> None:
    line = None if _debug(ctx) else error_line(exc)
    if line is None:
        raise exc
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(EXIT_EXPECTED) from None


def _invoke_reporting(invoke: Any, ctx: _click.Context) -> Any:
    """Run a click `invoke`; click's own exits pass through, any other exception goes to `_report`."""
    try:
        return invoke(ctx)
    except (_click.exceptions.Exit, _click.ClickException, _click.Abort):
        raise
    except Exception as exc:
        _report(ctx, exc)


class ErrorsGroup(_TyperGroup):
    """A command group whose commands end expected errors with one line (see the module docstring)."""

    def invoke(self, ctx: _click.Context):
        return _invoke_reporting(super().invoke, ctx)


class ErrorsCommand(_TyperCommand):
    """A single-command app (`tgdp-train`) with the same error handling; its `--debug` option sets the flag."""

    def invoke(self, ctx: _click.Context):
        ctx.meta["tgdp.debug"] = bool(ctx.params.get("debug"))
        return _invoke_reporting(super().invoke, ctx)


def version_callback(name: str):
    """Eager `--version` option callback printing `<name> <version>`."""

    def show(value: bool) -> None:
        if value:
            typer.echo(f"{name} {tgdp_version()}")
            raise typer.Exit()

    return show


def app_callback(name: str):
    """Group callback adding `--version` and `--debug` to a multi-command app."""

    def callback(
        ctx: typer.Context,
        version: bool = typer.Option(
            False, "--version", is_eager=True, callback=version_callback(name), help="print the version and exit"
        ),
        debug: bool = typer.Option(False, "--debug", help="show tracebacks of expected errors too (or TGDP_DEBUG=1)"),
    ) -> None:
        ctx.meta["tgdp.debug"] = debug

    return callback


def require_root(root) -> None:
    """A pipeline ROOT must exist and hold the source manifest before any stage reads or creates anything in it."""
    from pathlib import Path

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


# --- end section: shared by the three CLIs ---

app = typer.Typer(
    name="tgdp-data",
    help="TG-DP data pipeline: manifest → fetch → validate → export → shard → verify.",
    no_args_is_help=True,
    add_completion=False,
    cls=ErrorsGroup,
)
app.callback()(app_callback("tgdp-data"))

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
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Build the source manifest from the official clip lists (hash and row-count checked)."""
    from rich.console import Console
    from rich.table import Table

    from tgdp.config import ConfigError, validate_config
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
    if as_json:
        typer.echo(
            _json.dumps(
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

    from tgdp.config import ConfigError, load_config
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
import pathlib  # noqa: E402 - section-local imports keep the sections independent


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
    from tgdp.config import validate_config
    from tgdp.pipeline.fetch import FetchConfig, FetchInterrupted, fetch

    require_root(root)
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
    d = summary.as_dict()
    if as_json:
        typer.echo(_json.dumps(d))
        return
    typer.echo(f"selected {d['selected']}, attempted {d['attempted']}, ok {d['ok']} in {d['seconds']:.1f} s")
    for kind in ("failed", "skipped"):
        for reason, n in sorted(d[kind].items()):
            typer.echo(f"  {kind} {reason}: {n}")


@app.command("import")
def import_cmd(
    root: pathlib.Path = typer.Argument(..., help="pipeline ROOT"),
    from_dir: pathlib.Path = typer.Option(..., "--from", help="directory of already-downloaded media"),
    copy: bool = typer.Option(False, help="copy instead of hard-linking"),
) -> None:
    """Register already-downloaded files (named by ytid, video id or clip id) as fetched clips."""
    from tgdp.pipeline.importer import import_clips

    require_root(root)
    report = import_clips(root, from_dir, copy=copy)
    typer.echo(_json.dumps(report.as_dict(), indent=2))


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
    root: pathlib.Path = typer.Argument(..., help="pipeline ROOT"),
    max_attempts: int = typer.Option(5, help="the cap the fetch runs used (decides gave_up)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable funnel"),
) -> None:
    """Print the funnel: source → fetched / gone by reason / pending transient / never tried → validate → shard."""
    from tgdp.pipeline.status import format_funnel, funnel

    require_root(root)
    _lean_arrow_memory()
    f = funnel(root, max_attempts=max_attempts, progress=not as_json)
    typer.echo(_json.dumps(f, indent=2) if as_json else format_funnel(f))
    if not f["check"]:
        raise typer.Exit(1)


# --- end section: serve + fetch + import + status ---

# --- section: validate + export + shard + verify (owner: validate/shard) ---

from pathlib import Path as _VPath  # noqa: E402 - section-local imports keep the sections independent


def _stage_config(cls, overrides: list[str]):
    """The store's feature parameters are `features.<key>` in validate and shard alike (shard's flat key is kept,
    with a deprecation note)."""
    from tgdp.config import ConfigError, load_config
    from tgdp.pipeline.features import FeatureParams

    try:
        nested = "features" in cls.model_fields  # validate nests them; shard inherits them flat
        for item in overrides:
            key = item.partition("=")[0].strip()
            if nested and key in FeatureParams.model_fields and key not in cls.model_fields:
                raise ConfigError(f"unknown key {key!r}: store feature parameters are set as features.{key}=VALUE")
            if not nested and key in FeatureParams.model_fields:
                typer.echo(
                    f"note: --set {item} is deprecated; use --set features.{item.strip()} (the key validate takes)",
                    err=True,
                )
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
    set_: list[str] = typer.Option(
        [], "--set", help="ValidateConfig override key=value (repeatable); store features as features.KEY=VALUE"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Probe and decode every fetched clip; record metrics and the versioned verdict as validate events."""
    from dataclasses import asdict

    from tgdp.pipeline.validate import ValidateConfig, run_validate

    cfg = _stage_config(ValidateConfig, set_)
    require_root(root)
    s = run_validate(
        root, cfg, backend=backend, num_workers=workers, address=address, force=force, progress=not as_json
    )
    if as_json:
        typer.echo(_json.dumps(asdict(s)))
        return
    typer.echo(f"rule: {s.valid_rule}")
    typer.echo(f"fetched {s.fetched}, up to date {s.skipped_up_to_date}, validated {s.validated}: valid {s.valid}")
    for reason, n in sorted(s.dropped.items()):
        typer.echo(f"  dropped {reason}: {n}")


@app.command("export")
def export_cmd(
    root: _VPath = typer.Argument(..., help="pipeline ROOT"),
    out: _VPath = typer.Option(..., help="output directory (manifest.parquet, clip_ids.txt, funnel.json/.md)"),
    max_attempts: int = typer.Option(5, help="the cap the fetch runs used (decides gave_up)"),
    as_json: bool = typer.Option(False, "--json", help="print {out, files, valid, funnel} as JSON"),
) -> None:
    """Write the valid clips (filtered manifest + id list) and the funnel that accounts for every source clip."""
    from tgdp.pipeline.export import funnel_markdown, run_export

    require_root(root)
    _lean_arrow_memory()
    result = run_export(root, out, max_attempts=max_attempts, progress=not as_json)
    files = [str(out / name) for name in ("manifest.parquet", "clip_ids.txt", "funnel.json", "funnel.md")]
    if as_json:
        typer.echo(_json.dumps({"out": str(out), "files": files, "valid": result.valid, "funnel": result.funnel}))
        return
    typer.echo(funnel_markdown(result.funnel, result.paper_line))
    typer.echo(f"wrote {out}: manifest.parquet ({result.valid:,} valid clips), clip_ids.txt, funnel.json, funnel.md")


@app.command("shard")
def shard_cmd(
    root: _VPath = typer.Argument(..., help="pipeline ROOT"),
    store: _VPath = typer.Option(..., help="store directory (writes STORE/train and STORE/eval)"),
    backend: str = typer.Option("ray", help="ray | serial"),
    workers: int = typer.Option(2, help="parallel workers"),
    address: str | None = typer.Option(None, help="Ray cluster address"),
    force: bool = typer.Option(False, help="rebuild splits even when their inputs are unchanged"),
    set_: list[str] = typer.Option(
        [], "--set", help="ShardConfig override key=value (repeatable); store features as features.KEY=VALUE"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Pack valid clips (validate's cached JPEG frames + fbank, else one decode) into memory-mappable Arrow shards."""
    from dataclasses import asdict

    from tgdp.pipeline.shard import ShardConfig, run_shard

    cfg = _stage_config(ShardConfig, set_)
    require_root(root)  # before anything is created: no empty STORE for a wrong ROOT
    s = run_shard(
        root, store, cfg, backend=backend, num_workers=workers, address=address, force=force, progress=not as_json
    )
    if not s.rows:
        typer.echo(f"warning: no valid clips to shard in {root}: run validate first (`tgdp-data status`)", err=True)
    if as_json:
        typer.echo(_json.dumps({"store": str(store), **asdict(s)}))
        return
    for split in sorted(s.rows):
        note = " (up to date)" if split in s.up_to_date else ""
        typer.echo(f"{split}: {s.rows[split]} rows in {s.shards[split]} shards{note}")
    typer.echo(f"from validate's cache {s.from_cache}, decoded {s.decoded}, reused staged shards {s.reused_shards}")
    for clip_id, reason in sorted(s.failed.items()):
        typer.echo(f"  not sharded {clip_id}: {reason}")


@app.command("verify")
def verify_cmd(
    store: _VPath = typer.Argument(..., help="store directory or one split directory"),
    as_json: bool = typer.Option(False, "--json", help="print {store, ok, splits, problems} as JSON"),
) -> None:
    """Check shard checksums, row counts, that every JPEG decodes to size×size×3 and every fbank is finite."""
    from tgdp.pipeline.shard import verify_store

    if not store.is_dir():
        raise FileNotFoundError(f"store {store} does not exist: pass the --store directory `tgdp-data shard` wrote")
    report = verify_store(store)
    if as_json:
        typer.echo(
            _json.dumps({"store": str(store), "ok": report.ok, "splits": report.splits, "problems": report.problems})
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


# --- end section: validate + export + shard + verify ---


if __name__ == "__main__":
    app()
