"""tgdp.pipeline: ingestion (manifest, synth, serve, fetch, validate, shard) and the Arrow store reader.

Ray is imported in one module only (`tgdp.pipeline.parallel`); typer only in `tgdp.pipeline.cli`.
"""
