"""tgdp.core: what every tgdp package may use, and which imports nothing of tgdp (the bottom of the import graph,
docs/ARCHITECTURE.md): the package version, the base class of the expected errors (`errors`), the shared CLI
section (`cli`), atomic files (`atomic`), the full-disk probe (`disk`), the run lock (`lock`) and the device choice
(`device`). Its modules import only the standard library at module level (typer in `cli`, torch inside
`device.pick_device`), so any package, `tgdp.model` and `tgdp.config` included, stays light.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import tgdp

try:
    __version__ = version("tgdp")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# `tgdp` is a PEP 420 namespace package (no tgdp/__init__.py), so nothing else can give it attributes: every
# subpackage imports this one (through tgdp.config or directly), which sets `tgdp.__version__` on the namespace.
tgdp.__version__ = __version__

__all__ = ["__version__"]
