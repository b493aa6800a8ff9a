"""tgdp.pipeline: ingestion (manifest, synth, serve, fetch, validate, shard) and the Arrow store reader.

Ray is imported in one module only (`tgdp.pipeline.parallel`); typer only in `tgdp.pipeline.cli`.
"""

from tgdp.config import __version__ as __version__  # also sets tgdp.__version__ (see tgdp/core/__init__.py)
