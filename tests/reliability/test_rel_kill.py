"""SIGKILL a real `tgdp-data fetch` and `tgdp-data shard` at random points (fixed seed), rerun, and compare with the
clean run: nothing partial is ever visible, every clip stays accounted for, and the result is the same. A kill point
is an event, never a delay: the k-th request to the media server (fetch), the k-th new path under the store (shard)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.reliability.rel_support import FEATURES, SHARD, assert_funnel_sums, corpus_root, fetch_cfg, snapshot
from tests.waiting import new_paths, wait_for
from tgdp.pipeline import ledger
from tgdp.pipeline.fetch import fetch, file_sha256
from tgdp.pipeline.serve import FaultSpec, MediaServer
from tgdp.pipeline.shard import run_shard
from tgdp.pipeline.synth import read_ground_truth
from tgdp.pipeline.validate import run_validate
from tgdp.store.verify import verify_store

pytestmark = pytest.mark.reliability

KILL_SEED = 20240917


def _kill_when(cmd: list[str], event: Callable[[], bool], what: str, timeout_s: float = 60.0) -> int | None:
    """Run `cmd`; once `event()` holds, SIGKILL its whole process group. Returns the exit code (None when it was
    killed, an int when it finished before the kill point)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        if not wait_for(event, what, timeout_s=timeout_s, proc=proc) or proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            return proc.returncode
        os.killpg(proc.pid, signal.SIGKILL)  # our own session: the CLI and its ffmpeg children
        proc.wait(timeout=10)
        return None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def test_fetch_killed_at_random_points_converges(tmp_path: Path, tiny_corpus: Path, clean_run: dict[str, Any]) -> None:
    root = corpus_root(tmp_path / "root", tiny_corpus)
    clean = clean_run["snapshot"]
    ytids = [r["ytid"] for r in read_ground_truth(tiny_corpus)]
    # Every request stalls a little so a run lasts a few seconds and the kills land inside downloads.
    slow = {y: FaultSpec(kind="slow", delay_s=0.1) for y in ytids}
    rng = np.random.default_rng(KILL_SEED)
    kills = 0
    server = MediaServer(tiny_corpus, faults=slow)
    with server as base:
        cmd = [
            sys.executable, "-m", "tgdp.pipeline.cli", "fetch", str(root),
            "--set", "fetch.url_template=" + base + "/v/{ytid}",
            "--backend", "serial", "--set", "fetch.rate_per_hour=0", "--set", "fetch.retries=0",
            "--set", "fetch.socket_timeout=5", "--set", "fetch.backoff_s=0", "--no-progress",
        ]  # fmt: skip
        # The kill points: the server has received the k-th request of this run (probes and downloads alike).
        for k in rng.integers(1, 10, size=3):
            served = sum(server.hits.values())

            def kth_request(k: int = int(k), served: int = served) -> bool:
                return sum(server.hits.values()) - served >= k

            kills += _kill_when(cmd, kth_request, f"request {k} to the media server") is None
            # After the kill: every clip in one bucket; raw/ holds only complete files (identical to the clean run's).
            assert_funnel_sums(root)
            visible = [p for p in (root / "raw").rglob("*") if p.is_file()] if (root / "raw").exists() else []
            latest = ledger.latest(root, "fetch")
            by_path = {root / e["raw_path"]: c for c, e in latest.items() if e.get("raw_path")}
            for p in visible:
                assert not p.name.startswith((".", "-")) and p.suffix in (".mp4", ".webm", ".mkv"), p
                cid = by_path.get(p)
                if cid is not None:  # an unrecorded file (killed between rename and event) is redone next run
                    assert file_sha256(p) == clean["fetched"][cid], p
        assert kills >= 2  # the seed's kill points land mid-run
        fetch(root, fetch_cfg(base, retry_now=True, socket_timeout=5))
    assert_funnel_sums(root)
    run_validate(root, backend="serial")
    assert_funnel_sums(root)
    snap = snapshot(root)
    assert snap["fetched"] == clean["fetched"] and snap["validate"] == clean["validate"]
    assert len([p for p in (root / "raw").rglob("*") if p.is_file()]) == len(clean["fetched"])


def _tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_shard_killed_at_random_points_converges(tmp_path: Path, clean_run: dict[str, Any]) -> None:
    root = tmp_path / "root"
    shutil.copytree(clean_run["root"], root)
    store = tmp_path / "store"
    sets = [f"--set=features.{k}={v}" for k, v in FEATURES.model_dump().items()]
    sets += [f"--set=shard.{k}={v}" for k, v in SHARD.model_dump().items()]
    cmd = [sys.executable, "-m", "tgdp.pipeline.cli", "shard", str(root), "--store", str(store), "--backend", "serial"]
    cmd += sets
    rng = np.random.default_rng(KILL_SEED + 1)
    kills = 0
    # The kill points: the k-th new path under the store (staging folders, shard temporaries, shards, sidecars,
    # index files, published splits), so that kills land before, inside and between shard writes.
    for k in rng.integers(1, 12, size=3):
        written = new_paths([store])

        def kth_path(k: int = int(k), written: Callable[[], int] = written) -> bool:
            return written() >= k

        kills += _kill_when(cmd, kth_path, f"new path {k} under the store") is None
        # Readers see no split, or a complete one: never a partial shard or a half-written index.
        for split in ("train", "eval"):
            d = store / split
            if d.exists():
                assert (d / "index.json").is_file() and not [p for p in d.iterdir() if p.name.startswith(".")]
                assert verify_store(d).ok
        staging = store / ".staging"
        if staging.is_dir():  # staged shards are complete too (the .tmp file of the one being written is not)
            for side in staging.rglob("shard-*.json"):
                arrow = side.with_suffix(".arrow")
                assert not arrow.exists() or arrow.stat().st_size > 0
    assert kills >= 1
    run_shard(root, store, SHARD, features=FEATURES, backend="serial")
    assert snapshot(root, store) == clean_run["snapshot"]
    assert _tree(store) == _tree(clean_run["store"])
    assert verify_store(store).ok
