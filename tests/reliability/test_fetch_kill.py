"""SIGKILL a real `tgdp-data fetch` mid-run, rerun: no lost or duplicated clips, never a partial file under raw/."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures import make_corpus, make_root
from tests.waiting import wait_for
from tgdp.pipeline import ledger
from tgdp.pipeline.fetch import FetchConfig, fetch, file_sha256
from tgdp.pipeline.layout import clip_id_for, raw_path_for
from tgdp.pipeline.serve import FaultSpec, MediaServer
from tgdp.pipeline.status import funnel

pytestmark = pytest.mark.reliability


def _manifest(root: Path, ytids: list[str]) -> list[str]:
    make_root(root, [{"ytid": y, "start_s": 1.0, "end_s": 3.0} for y in ytids], dataset="synth", split="synth")
    return [clip_id_for("synth", y, 1.0) for y in ytids]


def _slow_corpus(tmp_path: Path, make_clip: Callable[..., Path], ytids: list[str]):
    """A served corpus of `ytids`, its ROOT with a manifest, and a fault plan that stalls every request 0.25 s."""
    master = make_clip(tmp_path / "master.mp4", duration=4.0)
    make_corpus(tmp_path / "corpus", master, ytids)
    root = tmp_path / "root"
    ids = _manifest(root, ytids)
    return root, ids, {y: FaultSpec(kind="slow", delay_s=0.25) for y in ytids}


def _third_download_started(root: Path, ids: list[str], ytids: list[str], server: MediaServer) -> Callable[[], bool]:
    """The kill point: two clips are complete in raw/ and the server has had a request for a clip not yet there (the
    slow fault stalls each body 0.25 s, so that download is still in flight)."""
    paths = {y: raw_path_for(root, cid, ".mp4") for y, cid in zip(ytids, ids, strict=True)}

    def check() -> bool:
        done = {y for y, p in paths.items() if p.is_file()}
        return len(done) >= 2 and any(server.hits.get(y) for y in paths.keys() - done)

    return check


def _fetch_cmd(root: Path, base: str) -> list[str]:
    """`tgdp-data fetch` of `root` from the media server at `base`, serial, no retries or rate limit."""
    return [
        sys.executable, "-m", "tgdp.pipeline.cli", "fetch", str(root),
        "--set", "fetch.url_template=" + base + "/v/{ytid}",
        "--backend", "serial", "--set", "fetch.rate_per_hour=0", "--set", "fetch.retries=0", "--no-progress",
    ]  # fmt: skip


def test_fetch_sigkill_midrun_then_rerun(tmp_path: Path, make_clip: Callable[..., Path]) -> None:
    ytids = [f"k{i}" for i in range(6)]
    # Every request stalls 0.25 s: a clip takes ~1 s, so the kill lands mid-run at a predictable point.
    root, ids, slow = _slow_corpus(tmp_path, make_clip, ytids)
    server = MediaServer(tmp_path / "corpus", faults=slow)
    with server as base:
        cmd = _fetch_cmd(root, base)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            in_third = _third_download_started(root, ids, ytids, server)
            started = wait_for(in_third, "two clips in raw/ and the server serving a third", proc=proc)
            assert started and proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            proc.send_signal(signal.SIGKILL)  # inside the third clip's download
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            try:  # ffmpeg children of the killed process: end them (same session we created)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert proc.returncode == -signal.SIGKILL
        # After the kill: raw/ holds only complete, final-named files (temp files live in tmp/ only).
        finals = {raw_path_for(root, cid, ".mp4") for cid in ids}
        visible = [p for p in (root / "raw").rglob("*") if p.is_file()]
        assert 2 <= len(visible) < len(ids)
        assert all(p in finals for p in visible)
        size = {p.stat().st_size for p in visible}
        assert len(size) == 1  # identical sources, identical sections: no short (partial) file

        server.set_faults({}, replace=True)
        fetch(root, FetchConfig(url_template=base + "/v/{ytid}", backend="serial", rate_per_hour=0, retries=0))
    latest = ledger.latest(root, "fetch")
    assert set(latest) == set(ids) and all(ev["status"] == "ok" for ev in latest.values())
    oks = Counter(ev["clip_id"] for ev in ledger.read_events(root, "fetch").to_pylist() if ev["status"] == "ok")
    assert set(oks.values()) == {1}  # one ok event per clip, no duplicates
    files = sorted(p for p in (root / "raw").rglob("*") if p.is_file())
    assert len(files) == len(ids) and set(files) == finals
    for cid in ids:
        ev = latest[cid]
        path = root / ev["raw_path"]
        assert path.stat().st_size == ev["file_bytes"] and file_sha256(path) == ev["sha256"]
    assert not list((root / "tmp" / "fetch").iterdir())
    f = funnel(root)
    assert f["fetch"]["fetched"] == len(ids) and f["check"]


def test_fetch_ctrl_c_says_what_was_kept(tmp_path: Path, make_clip: Callable[..., Path]) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it): exit 130 with a message naming what was kept, and
    the finished clips' events are flushed, not lost with the buffer."""
    ytids = [f"i{i}" for i in range(5)]
    root, ids, slow = _slow_corpus(tmp_path, make_clip, ytids)
    server = MediaServer(tmp_path / "corpus", faults=slow)
    with server as base:
        cmd = _fetch_cmd(root, base)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True)
        try:
            in_third = _third_download_started(root, ids, ytids, server)
            assert wait_for(in_third, "two clips in raw/ and the server serving a third", proc=proc)
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    kept = [e for e in ledger.read_events(root, "fetch").to_pylist() if e["status"] == "ok"]
    assert 2 <= len(kept) < len(ids)  # 16 events per flush: without the flush on interrupt these would be lost
    assert "interrupted" in err and f"kept {len(kept)} fetched clip" in err and "rerun" in err, err
    assert "Traceback" not in err
