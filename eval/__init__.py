"""tgdp.eval: embeddings, zero-shot retrieval and attention probing (see docs/EVAL.md).

Modules: `table` (cached embedding table I/O), `embed` (store → per-frame global tokens), `retrieval`,
`probe`, `metrics`, `report` (tables and plots), `config` (each command's settings), `commands` (the library function
behind each command: checks, work, files), `cli` (`tgdp-eval`: parses and prints).
"""

from __future__ import annotations

from tgdp.config import __version__  # also sets tgdp.__version__ (see tgdp/core/__init__.py)

__all__ = ["__version__"]
