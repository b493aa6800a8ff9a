"""tgdp.experiments: studies that use the whole toolkit; the only package that imports from all four.

Modules: `demo` (`make demo`: the whole chain on the synthetic corpus through the real CLIs), `reproduce`
(`make reproduce`: the controlled reproduction study of REPRODUCTION.md), `cli` (`python -m tgdp.experiments`).
pipeline, model, train and eval never import this package (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from tgdp.pipeline import __version__  # also sets tgdp.__version__ (see tgdp/pipeline/__init__.py)

__all__ = ["__version__"]
