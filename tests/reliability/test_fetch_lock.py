"""A second fetch (or import) on a ROOT another run holds is refused at once with one line naming the holder (the
shared `tgdp.core.lock.RunLock`; before it was a plain RuntimeError and the CLI printed a traceback)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from typer.testing import CliRunner

from tgdp.core.lock import LockedError, RunLock
from tgdp.pipeline.cli import app
from tgdp.pipeline.fetch import fetch
from tgdp.pipeline.layout import manifest_path


def test_a_second_fetch_on_one_root_is_one_line_naming_the_holder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    manifest_path(root).parent.mkdir(parents=True)
    manifest_path(root).write_bytes(b"")  # the lock is taken before the manifest is read
    lock_file = root / "tmp" / "fetch.lock"
    with RunLock(lock_file, what="fetch/import"):  # flock: a second open file is refused in this process too
        res = CliRunner().invoke(app, ["fetch", str(root)])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.output, res.output
        assert lines[0].startswith(f"error: another fetch/import run holds {lock_file} (pid {os.getpid()} on ")
        assert socket.gethostname() in lines[0] and lines[0].endswith("wait for it or stop it")
        try:
            fetch(root)
        except LockedError as exc:
            assert isinstance(exc, RuntimeError)  # callers that caught RuntimeError still do
        else:
            raise AssertionError("the held lock was not refused")
    assert not lock_file.exists()
