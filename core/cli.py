"""The CLI section every tgdp command line shares (`tgdp-data`, `tgdp-train`, `tgdp-eval`, `python -m
tgdp.experiments`): `--version`, `--debug`, the `--json` format, and the one way expected errors end a command
(docs/RELIABILITY.md, "CLI errors"): a `TgdpError` (or a path/permission/full-disk OSError) prints one line
`error: <culprit and fix>` on stderr and exits 2; anything else is a bug and keeps its traceback. `--debug` (or
TGDP_DEBUG=1) shows the traceback of expected errors too.

It imports typer and click only: a CLI module that imports it still loads no torch, pyarrow or Ray for `--help`.
"""

from __future__ import annotations

import errno as _errno
import json as _json
import os as _os
from typing import Any

import click as _click
import typer
from typer.core import TyperCommand as _TyperCommand
from typer.core import TyperGroup as _TyperGroup

from tgdp.core import __version__
from tgdp.core.errors import TgdpError

__all__ = [
    "EXIT_EXPECTED",
    "ErrorsCommand",
    "ErrorsGroup",
    "app_callback",
    "dumps_json",
    "error_line",
    "group_app",
    "version_callback",
    "wide_console",
]

EXIT_EXPECTED = 2  # bad input or environment: one line, no traceback
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
_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, FileExistsError, PermissionError)


def error_line(exc: BaseException) -> str | None:
    """One line naming the culprit and the fix for an expected error (then one line per bad row for an error that
    lists them, capped); None for anything else (a bug)."""
    if isinstance(exc, OSError) and exc.errno in _OS_FIX:
        what = exc.filename if exc.filename is not None else ""
        detail = exc.strerror or str(exc)
        return f"{what}: {detail}; {_OS_FIX[exc.errno]}" if what else f"{detail}; {_OS_FIX[exc.errno]}"
    if isinstance(exc, (TgdpError, *_PATH_ERRORS)):
        if getattr(exc, "issues", None):  # a list of bad rows (ManifestError): one per line, as the error has them
            head, *rest = str(exc).split("\n")
            return "\n".join([" ".join(head.split()), *(f"  {' '.join(ln.split())}" for ln in rest if ln.strip())])
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
            typer.echo(f"{name} {__version__}")
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


def group_app(name: str, help: str) -> typer.Typer:
    """A multi-command CLI with the shared behaviour: `--version`, `--debug`, one-line expected errors (exit 2)."""
    app = typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False, cls=ErrorsGroup)
    app.callback()(app_callback(name))
    return app


def wide_console() -> Any:
    """A rich Console that does not fold tables at 80 columns when stdout is a pipe or a file."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 200))


def dumps_json(obj: Any) -> str:
    """The one `--json` format of every command: indented 2, keys sorted, non-ASCII kept (docs/WORKFLOW.md)."""
    return _json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str)
