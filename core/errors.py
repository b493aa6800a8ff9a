"""The base class of the expected errors: bad input or environment that a CLI reports as one line and exit 2
(docs/RELIABILITY.md, "CLI errors"). Anything that does not derive from it (or is not a path/permission OSError) is
a bug and keeps its traceback.

Each package's error derives from `TgdpError` and keeps its historical second base (ValueError, RuntimeError), so
existing `except ValueError` clauses still catch it: `class ConfigError(TgdpError, ValueError)`.
"""

from __future__ import annotations

__all__ = ["TgdpError"]


class TgdpError(Exception):
    """An expected failure whose message names the culprit and the fix (one line in every CLI)."""
