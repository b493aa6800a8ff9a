"""tgdp.eval: embeddings, zero-shot retrieval and attention probing (see docs/EVAL.md).

Modules: `table` (cached embedding table I/O), `embed` (store → per-frame global tokens), `retrieval`,
`probe`, `metrics`, `report` (tables and plots), `cli` (`tgdp-eval`).
"""

from __future__ import annotations

__all__: list[str] = []
