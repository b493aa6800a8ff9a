"""Expected errors: every package's error is a `TgdpError` (and still the ValueError/RuntimeError it was), and the
CLI reports any `TgdpError` as one line, whatever module defines it."""

from __future__ import annotations

import errno
import importlib

import pytest
import typer
from typer.testing import CliRunner

from tgdp.core.cli import EXIT_EXPECTED, error_line, group_app
from tgdp.core.errors import TgdpError

EXPECTED = [  # module, class, the base an existing `except` clause catches it by
    ("tgdp.config", "ConfigError", ValueError),
    ("tgdp.store.format", "StoreError", RuntimeError),
    ("tgdp.store.format", "StoreFormatError", RuntimeError),
    ("tgdp.store.format", "StoreMismatchError", ValueError),
    ("tgdp.store.format", "ShardError", RuntimeError),
    ("tgdp.store.fs", "RemoteError", RuntimeError),
    ("tgdp.pipeline.manifest", "ManifestError", ValueError),
    ("tgdp.pipeline.validate", "ValidateError", RuntimeError),
    ("tgdp.pipeline.truth", "TruthError", ValueError),
    ("tgdp.model.checkpoint", "CheckpointError", RuntimeError),
    ("tgdp.core.lock", "LockedError", RuntimeError),
    ("tgdp.core.device", "DeviceError", RuntimeError),
]


@pytest.mark.parametrize(("module", "name", "base"), EXPECTED, ids=[e[1] for e in EXPECTED])
def test_every_expected_error_derives_from_tgdp_error_and_keeps_its_base(module: str, name: str, base: type) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, TgdpError) and issubclass(cls, base)


def test_a_tgdp_error_of_any_module_is_one_line_and_a_bug_keeps_its_traceback() -> None:
    class NewStageError(TgdpError, ValueError):  # defined here, listed in no table
        pass

    assert error_line(NewStageError("ROOT/x:  bad\n  thing")) == "ROOT/x: bad thing"
    assert error_line(ValueError("a bug")) is None and error_line(RuntimeError("a bug")) is None
    assert error_line(OSError(errno.ENOSPC, "No space left on device", "/d/f")) == (
        "/d/f: No space left on device; no space left on the device: free space or choose another disk"
    )

    app = group_app("tgdp-x", "test app")

    @app.command()
    def fail(kind: str) -> None:
        raise NewStageError("ROOT/x: bad input; fix it") if kind == "expected" else ValueError("a bug")

    @app.command()
    def other() -> None:
        typer.echo("unused")

    runner = CliRunner()
    res = runner.invoke(app, ["fail", "expected"])
    assert res.exit_code == EXIT_EXPECTED and res.output.strip() == "error: ROOT/x: bad input; fix it"
    bug = runner.invoke(app, ["fail", "bug"])
    assert bug.exit_code == 1 and isinstance(bug.exception, ValueError)
    debug = runner.invoke(app, ["--debug", "fail", "expected"])
    assert isinstance(debug.exception, NewStageError)
