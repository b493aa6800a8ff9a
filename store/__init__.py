"""tgdp.store: the clip store format and its one owner (docs/STORE.md).

Modules: `format` (index.json, row schema, constants, errors), `fs` (the filesystem layer: local atomic files and
object-store URIs through `pyarrow.fs`), `reader` (`Store`), `writer` (`StoreWriter`, split assembly and commit),
`remote` (upload with resume, the writer lease), `cache` (the node-local shard cache), `sampling` (shuffle orders),
`verify` (`verify_store`). It imports nothing of tgdp but `tgdp.config`; the pipeline, train and eval use it.
The names below are re-exported for the readers' convenience.
"""

from tgdp.config import __version__ as __version__  # also sets tgdp.__version__ (see tgdp/config/__init__.py)
from tgdp.store.format import (
    FBANK_MEAN,
    FBANK_STD,
    STORE_FORMAT,
    ShardEntry,
    ShardError,
    StoreError,
    StoreFormatError,
    StoreIndex,
    StoreMismatchError,
    segment_start,
)
from tgdp.store.fs import RemoteError, is_remote, location
from tgdp.store.reader import Store

__all__ = [
    "FBANK_MEAN",
    "FBANK_STD",
    "STORE_FORMAT",
    "RemoteError",
    "ShardEntry",
    "ShardError",
    "Store",
    "StoreError",
    "StoreFormatError",
    "StoreIndex",
    "StoreMismatchError",
    "__version__",
    "is_remote",
    "location",
    "segment_start",
]
