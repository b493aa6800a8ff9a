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

# --- end section: manifest + synth ---

# --- section: serve + fetch + import + status (owner: fetch) ---

# --- end section: serve + fetch + import + status ---

# --- section: validate + export + shard + verify (owner: validate/shard) ---

# --- end section: validate + export + shard + verify ---


if __name__ == "__main__":
    app()
