"""A real 2-node Ray cluster on this machine (`ray start --head` + `ray start --address`, 1 CPU each): fetch,
validate and shard through `--address` give what the single-process run gives, and both nodes do work.

Each node is a `ray start --block` process in its own process group with its own temp dir, so the fixture stops
exactly the processes it started (never `ray stop`, which would stop every Ray on the machine)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures import make_root
from tgdp.pipeline import ledger
from tgdp.pipeline.features import FeatureParams
from tgdp.pipeline.fetch import FetchConfig, fetch
from tgdp.pipeline.serve import MediaServer
from tgdp.pipeline.shard import ShardConfig, run_shard
from tgdp.pipeline.validate import ValidateConfig, run_validate

pytestmark = [pytest.mark.ray, pytest.mark.slow]
YTIDS = ["n0", "n1", "n2", "n3"]
STAGES = ("fetch", "validate")
SHARD_SET = ["--set", "features.frame_size=64", "--set", "features.num_mel_bins=64"]
SHARD_SET += ["--set", "features.target_length=256", "--set", "shard.shard_bytes=60000"]


# Ray ≥ 2.5x turns token authentication on for `ray start` clusters; this throw-away local cluster runs without it.
ENV = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _start_node(args: list[str], temp: Path, log: Path) -> subprocess.Popen:
    cmd = [_ray_bin(), "start", "--block", "--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats"]
    cmd += [f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}", *args]
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=ENV)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the node's process group (what it started), then SIGKILL after a grace period."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive_nodes(address: str) -> int:
    code = "import ray; ray.init(address=%r, log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run([sys.executable, "-c", code % address], capture_output=True, text=True, timeout=60, env=ENV)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    base = Path(tempfile.mkdtemp(prefix="tgr", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes: list[subprocess.Popen] = []
    try:
        head = ["--head", f"--port={port}", "--include-dashboard=false", f"--ray-client-server-port={_free_port()}"]
        nodes.append(_start_node(head, base / "h", base / "head.log"))
        deadline = time.monotonic() + 90
        while _alive_nodes(address) < 1:
            assert time.monotonic() < deadline and nodes[0].poll() is None, (base / "head.log").read_text()
            time.sleep(1)
        nodes.append(_start_node([f"--address={address}"], base / "w", base / "worker.log"))
        while _alive_nodes(address) < 2:
            assert time.monotonic() < deadline + 30 and nodes[1].poll() is None, (base / "worker.log").read_text()
            time.sleep(1)
        yield address
    finally:
        for proc in reversed(nodes):
            _stop(proc)
        shutil.rmtree(base, ignore_errors=True)


def _root(root: Path) -> None:
    splits = ["synth", "synth", "synth", "vgg_test"]
    make_root(
        root, [{"ytid": y, "start_s": 1.0, "split": sp} for y, sp in zip(YTIDS, splits, strict=True)], dataset="synth"
    )


def _cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tgdp.pipeline.cli", *args], capture_output=True, text=True, timeout=300, env=ENV
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _chain_single(root: Path, store: Path, base: str) -> None:
    """The single-process reference, in this process (serial backends)."""
    fetch(root, FetchConfig(url_template=base + "/v/{ytid}", rate_per_hour=0, sessions=2, backend="serial"))
    run_validate(root, ValidateConfig(feature_cache=False), backend="serial")
    features = FeatureParams(frame_size=64, num_mel_bins=64, target_length=256)
    run_shard(root, store, ShardConfig(shard_bytes=60_000), features=features, backend="serial")


def _chain_cluster(root: Path, store: Path, base: str, address: str) -> None:
    """The same chain through the CLI, each command a driver joining the cluster with --address."""
    ray = ["--backend", "ray", "--address", address]
    fetch_args = ["fetch", str(root), "--set", "fetch.url_template=" + base + "/v/{ytid}", "--no-progress"]
    _cli(*fetch_args, "--set", "fetch.rate_per_hour=0", "--set", "fetch.sessions=2", "--set", "fetch.in_flight=1", *ray)
    # no feature cache: shard decodes every clip itself, so its tasks run on the cluster too
    _cli("validate", str(root), "--workers", "2", "--set", "validate.feature_cache=false", *ray)
    _cli("shard", str(root), "--store", str(store), "--workers", "2", *SHARD_SET, *ray)


def _snapshot(root: Path, store: Path) -> dict:
    fetched = {c: e["sha256"] for c, e in ledger.latest(root, "fetch").items() if e["status"] == "ok"}
    verdicts = {c: (e["status"], e["reason"], e["valid"]) for c, e in ledger.latest(root, "validate").items()}
    stores = {}
    for split in ("train", "eval"):
        index = json.loads((store / split / "index.json").read_text())
        stores[split] = [(s["file"], s["rows"], s["sha256"]) for s in index["shards"]]
    return {"fetched": fetched, "verdicts": verdicts, "store": stores}


def test_two_node_cluster_matches_single_process(cluster: str, tmp_path: Path, make_clip: Callable[..., Path]) -> None:
    master = make_clip(tmp_path / "m.mp4", duration=4.0, size="96x64", fps=12)
    (tmp_path / "c" / "videos").mkdir(parents=True)
    for y in YTIDS:
        shutil.copyfile(master, tmp_path / "c" / "videos" / f"{y}.mp4")
    one, many = tmp_path / "one", tmp_path / "many"
    _root(one / "root")
    _root(many / "root")
    with MediaServer(tmp_path / "c") as base:
        _chain_single(one / "root", one / "store", base)
        _chain_cluster(many / "root", many / "store", base, cluster)
    want, got = _snapshot(one / "root", one / "store"), _snapshot(many / "root", many / "store")
    assert got == want
    assert len(want["fetched"]) == len(YTIDS) and all(v[2] for v in want["verdicts"].values())
    # both nodes worked: validate ran 2 one-CPU tasks at a time on 2 one-CPU nodes; fetch events say where the
    # download sessions ran (Ray's SPREAD placement of zero-CPU actors is best-effort, so not asserted per stage)
    nodes = {stage: {e.get("ray_node") for e in ledger.latest(many / "root", stage).values()} for stage in STAGES}
    assert len(nodes["validate"] - {None}) == 2, nodes
    assert None not in nodes["fetch"] and nodes["fetch"] <= nodes["validate"], nodes
    funnel = json.loads(_cli("status", str(many / "root"), "--json"))
    assert funnel["shard"]["sharded"] == len(YTIDS) and funnel["check"]
