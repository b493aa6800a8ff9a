"""`tgdp-eval`: command-line entry point."""

from __future__ import annotations

import typer

app = typer.Typer(name="tgdp-eval", no_args_is_help=True, add_completion=False)


if __name__ == "__main__":
    app()
