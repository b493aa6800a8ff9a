"""`python -m tgdp.experiments demo|reproduce ...` (the `make demo` / `make reproduce` entry point)."""

from __future__ import annotations

from tgdp.experiments.cli import app

app(prog_name="python -m tgdp.experiments")
