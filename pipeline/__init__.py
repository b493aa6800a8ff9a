"""tgdp.pipeline: ingestion (manifest, synth, serve, fetch, validate, shard) and the Arrow store reader.

Ray is imported in one module only (`tgdp.pipeline.parallel`); typer only in `tgdp.pipeline.cli`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tgdp")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# `tgdp` is a PEP 420 namespace package (no tgdp/__init__.py), so nothing else can give it attributes: every
# subpackage imports this one, which sets `tgdp.__version__` on the namespace module.
import tgdp  # noqa: E402

tgdp.__version__ = __version__
