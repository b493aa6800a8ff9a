"""fetch under every server fault: after each run every clip is in one funnel bucket, and reruns converge to the
clean run (same fetched ids and sha256, same validate states, same store) except where a fault is permanent."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.rel_support import FEATURES, SHARD, assert_funnel_sums, corpus_root, fetch_cfg, snapshot
from tgdp.pipeline import ledger
from tgdp.pipeline.fetch import fetch
from tgdp.pipeline.serve import FaultSpec, MediaServer
from tgdp.pipeline.shard import run_shard
from tgdp.pipeline.synth import read_ground_truth
from tgdp.pipeline.validate import run_validate

pytestmark = pytest.mark.reliability

# One fault per clip; `gone` is permanent (404 → never retried), `recovers` fails its first requests only.
TRANSIENT = {
    "e403": FaultSpec(kind="http", status=403),
    "e429": FaultSpec(kind="http", status=429),
    "e503": FaultSpec(kind="http", status=503),
    "reset": FaultSpec(kind="reset"),
    "truncated_body": FaultSpec(kind="truncate", keep_fraction=0.3),
    "stall": FaultSpec(kind="slow", delay_s=2.5),  # past socket_timeout=1 → timeout
}
SLOW_OK = FaultSpec(kind="slow", delay_s=0.2)  # slower than usual but inside the timeout: must succeed
RECOVERS = FaultSpec(kind="http", status=500, times=2)


def _assign(corpus: Path) -> tuple[dict[str, FaultSpec], str, str, str]:
    gt = read_ground_truth(corpus)
    garbage = next(r["ytid"] for r in gt if r["fault"] == "garbage")  # dropped by validate anyway: store unchanged
    others = sorted(r["ytid"] for r in gt if r["ytid"] != garbage and r["fault"] != "empty")
    slow_ok, recovers, rest = others[0], others[1], others[2:]
    faults: dict[str, FaultSpec] = {garbage: FaultSpec(kind="http", status=404), slow_ok: SLOW_OK, recovers: RECOVERS}
    faults.update({y: spec for y, spec in zip(rest, TRANSIENT.values(), strict=False)})
    return faults, garbage, slow_ok, recovers


def _cid(ytid: str) -> str:
    return f"audioset:{ytid}:1000"


def test_fetch_faults_accounted_and_rerun_converges(
    tmp_path: Path, tiny_corpus: Path, clean_run: dict[str, Any]
) -> None:
    faults, gone, slow_ok, recovers = _assign(tiny_corpus)
    root, store = corpus_root(tmp_path / "root", tiny_corpus), tmp_path / "store"
    server = MediaServer(tiny_corpus, faults=faults)
    with server as base:
        fetch(root, fetch_cfg(base))
        f = assert_funnel_sums(root)
        latest = ledger.latest(root, "fetch")
        assert latest[_cid(gone)]["reason"] == "unavailable" and not latest[_cid(gone)]["transient"]
        assert latest[_cid(slow_ok)]["status"] == "ok"
        for y, spec in faults.items():
            if spec in TRANSIENT.values():
                ev = latest[_cid(y)]
                assert ev["status"] == "failed" and ev["transient"] and ev["raw_path"] is None, (y, ev)
        assert f["fetch"]["gone"] == 1
        # Nothing partial was published: every file under raw/ is a complete copy of what the clean run fetched.
        clean = clean_run["snapshot"]["fetched"]
        for cid, ev in latest.items():
            if ev["status"] == "ok":
                assert ev["sha256"] == clean[cid], cid
        assert len([p for p in (root / "raw").rglob("*") if p.is_file()]) == sum(
            ev["status"] == "ok" for ev in latest.values()
        )

        # The server heals except for the permanent 404 and the clip that fails a fixed number of requests.
        server.set_faults({gone: faults[gone]}, replace=True)
        server.set_faults({recovers: server.faults.get(recovers, RECOVERS)})
        for _ in range(4):
            fetch(root, fetch_cfg(base, retry_now=True))
            assert_funnel_sums(root)
            if ledger.latest(root, "fetch")[_cid(recovers)]["status"] == "ok":
                break
        assert ledger.latest(root, "fetch")[_cid(recovers)]["status"] == "ok"
        assert fetch(root, fetch_cfg(base, retry_now=True)).ok == 0  # settled: nothing left that can succeed
    run_validate(root, backend="serial")
    assert_funnel_sums(root)
    run_shard(root, store, SHARD, features=FEATURES, backend="serial")

    got, want = snapshot(root, store), dict(clean_run["snapshot"])
    want["fetched"] = {c: s for c, s in want["fetched"].items() if c != _cid(gone)}
    want["validate"] = {c: s for c, s in want["validate"].items() if c != _cid(gone)}
    assert got == want
    f = assert_funnel_sums(root)
    assert f["fetch"]["gone_by_reason"] == {"unavailable": 1}


def test_fetch_lost_file_and_stale_tmp_are_recovered(tmp_path: Path, tiny_corpus: Path, clean_run: dict) -> None:
    """A fetched file deleted or truncated before validate, and temp debris of a dead run: a rerun restores the clean
    state. (After a verdict the file is no longer needed: tests/pipeline/test_funnel_agreement.py.)"""
    root = tmp_path / "root"
    shutil.copytree(clean_run["root"], root)
    for stage in ("validate", "shard"):  # back to "fetched, not validated": the raw files are still needed
        shutil.rmtree(root / "events" / stage, ignore_errors=True)
    latest = ledger.latest(root, "fetch")
    ok = sorted(c for c, e in latest.items() if e["status"] == "ok")
    (root / latest[ok[0]]["raw_path"]).unlink()
    damaged = root / latest[ok[1]]["raw_path"]
    damaged.write_bytes(damaged.read_bytes()[:100])
    debris = root / "tmp" / "fetch" / "deadbeef" / "s0" / "dl.mp4.part"
    debris.parent.mkdir(parents=True)
    debris.write_bytes(b"x" * 10)
    f = assert_funnel_sums(root)
    assert f["fetch"]["pending_by_reason"]["file_missing"] == 2
    with MediaServer(tiny_corpus) as base:
        assert fetch(root, fetch_cfg(base, retry_now=True)).ok == 2
    assert not debris.exists()
    run_validate(root, backend="serial")  # the restored files have the same sha256: the same verdicts
    snap = snapshot(root)
    assert snap["fetched"] == clean_run["snapshot"]["fetched"]
    assert snap["validate"] == clean_run["snapshot"]["validate"]
