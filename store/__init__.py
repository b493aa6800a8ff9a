"""tgdp.store: the clip store format and its one owner (docs/STORE.md).

Modules: `format` (index.json, row schema, constants, errors), `fs` (the filesystem layer: local paths and
object-store URIs through `pyarrow.fs`; local files are written with `tgdp.core.atomic`), `reader` (`Store`),
`writer` (`StoreWriter`, split assembly and commit), `remote` (upload with resume, the writer lease), `cache` (the
node-local shard cache), `sampling` (shuffle orders), `verify` (`verify_store`), `config` (`StoreConfig`), `seaweed`
(a local S3 server for tests and demos). It imports nothing of tgdp but `tgdp.core` and `tgdp.config`; the pipeline,
train and eval use it. The names below are re-exported
(lazily) for the readers' convenience.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from tgdp.config import __version__ as __version__  # also sets tgdp.__version__ (see tgdp/core/__init__.py)

# Re-exported lazily, so that importing `tgdp.store.config` (the run configs do) loads neither numpy nor pyarrow:
# `tgdp-train --help` stays light.
_EXPORTS = {
    "STORE_FORMAT": "format",
    "ShardEntry": "format",
    "ShardError": "format",
    "StoreError": "format",
    "StoreFormatError": "format",
    "StoreIndex": "format",
    "StoreMismatchError": "format",
    "segment_start": "format",
    "RemoteError": "fs",
    "is_remote": "fs",
    "location": "fs",
    "Store": "reader",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"tgdp.store.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'tgdp.store' has no attribute {name!r}")
